"""The runner's command line refuses malformed requests with one JSON error line and exit 1, before it
touches a model."""

from __future__ import annotations

import json

import pytest

from edgeslm.runner.main import main


@pytest.mark.parametrize("args, why", [
    (["--prompt-ids", "[1, 2"], "--prompt-ids must be a JSON list"),
    (["--prompt-ids", '["a"]'], "--prompt-ids must be a JSON list"),
    (["--prompt-ids", "[1]", "--sample", "{}"], "--sample must be JSON with temperature"),
    (["--prompt-ids", "[1]", "--sample", "not json"], "--sample must be JSON with temperature"),
    (["--prompt-ids", "[1]", "--sample", '{"temperature": 0, "top_k": 0, "top_p": 1, "seed": 1}'],
     "temperature > 0"),
    (["--prompt-ids", "[1]", "--sample", '{"temperature": 1, "top_k": 0, "top_p": 1.5, "seed": 1}'],
     "0 < top_p <= 1"),
    (["--prompt-ids", "[1]", "--sample", '{"temperature": 1, "top_k": -1, "top_p": 1, "seed": 1}'],
     "top_k >= 0"),
])
def test_generate_refuses_malformed_requests(tmp_path, capsys, args, why):
    assert main(["generate", str(tmp_path / "absent")] + args) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and why in json.loads(out[0])["error"]


def test_profile_refuses_a_build_of_a_task_it_does_not_know(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text(json.dumps({"task": "translation", "artifacts": [{"name": "onnx"}]}))
    assert main(["profile", str(tmp_path), "--artifact", "onnx"]) == 1
    assert "does not know task 'translation'" in json.loads(capsys.readouterr().out)["error"]
