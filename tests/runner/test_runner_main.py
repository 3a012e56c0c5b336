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
     "0 < temperature (finite)"),
    (["--prompt-ids", "[1]", "--sample", '{"temperature": 1, "top_k": 0, "top_p": 1.5, "seed": 1}'],
     "0 < top_p <= 1"),
    (["--prompt-ids", "[1]", "--sample", '{"temperature": 1, "top_k": -1, "top_p": 1, "seed": 1}'],
     "0 <= top_k"),
    (["--prompt-ids", "[1]", "--sample", '{"temperature": 1e999, "top_k": 0, "top_p": 1, "seed": 1}'],
     "0 < temperature (finite)"),
    (["--prompt-ids", "[1]", "--sample", '{"temperature": 1, "top_k": 0, "top_p": 1, "seed": -1}'],
     "0 <= seed"),
    (["--prompt-ids", "[1]", "--sample", '{"temperature": 1, "top_k": 1e30, "top_p": 1, "seed": 1}'],
     "0 <= top_k"),
])
def test_generate_refuses_malformed_requests(tmp_path, capsys, args, why):
    assert main(["generate", str(tmp_path / "absent")] + args) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and why in json.loads(out[0])["error"]


@pytest.mark.parametrize("command, args", [
    ("profile", ["--artifact", "onnx", "--threads", "100000"]),
    ("profile", ["--artifact", "onnx", "--iters", "0"]),
    ("profile", ["--artifact", "onnx", "--new-tokens", "99999999"]),
    ("generate", ["--prompt-ids", "[1]", "--threads", "-1"]),
    ("generate", ["--prompt-ids", "[1]", "--threads", "1e5"]),
])
def test_counts_out_of_bounds_are_refused_before_anything_runs(tmp_path, capsys, command, args):
    """The host bounds these before it asks; the runner refuses them again (exit 2, argparse's one line)."""
    with pytest.raises(SystemExit) as info:
        main([command, str(tmp_path / "absent"), *args])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "is outside" in err or "is not a whole number" in err, err


def test_profile_refuses_a_build_of_a_task_it_does_not_know(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text(json.dumps({"task": "translation", "artifacts": [{"name": "onnx"}]}))
    assert main(["profile", str(tmp_path), "--artifact", "onnx"]) == 1
    assert "does not know task 'translation'" in json.loads(capsys.readouterr().out)["error"]


def _long_profile(build, *extra):
    """The runner measuring a build for ten minutes, as a real process whose stdin the test holds."""
    import subprocess
    import sys

    from edgeslm.runner import RUNNER_PATH

    return subprocess.Popen([sys.executable, str(RUNNER_PATH), "profile", str(build), "--artifact", "onnx",
                             "--min-seconds", "600", *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def test_a_long_command_ends_when_its_session_does(tiny_builds):
    """--stop-on-eof: the host's session closing the runner's stdin ends a ten-minute profile within seconds
    (exit 124, an error line); without the flag a closed stdin changes nothing."""
    import subprocess
    import time

    watched, plain = _long_profile(tiny_builds["v1"], "--stop-on-eof"), _long_profile(tiny_builds["v1"])
    try:
        time.sleep(3)
        assert watched.poll() is None and plain.poll() is None  # both measuring
        watched.stdin.close()
        plain.stdin.close()
        watched.wait(timeout=15)
        out = watched.stdout.read()
        assert watched.returncode == 124 and "the host's session ended" in json.loads(out.splitlines()[-1])["error"]
        with pytest.raises(subprocess.TimeoutExpired):
            plain.wait(timeout=3)
    finally:
        for p in (watched, plain):
            p.kill()
            p.wait()


def test_a_long_command_ends_at_its_deadline(tiny_builds):
    p = _long_profile(tiny_builds["v1"], "--deadline", "4")
    try:
        out, _ = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 124 and "--deadline 4s passed" in json.loads(out.splitlines()[-1])["error"]
