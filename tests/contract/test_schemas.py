"""The JSON Schemas edgeslm publishes for other tools (manifest, profile result, probe) are generated from the typed
records, shipped as files, printed by `edgeslm schema`, and real outputs are valid against them while broken ones
are not."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from edgeslm.artifacts.schemas import generate, shipped, text
from edgeslm.cli import main

GOLDEN = Path(__file__).resolve().parents[1] / "reports" / "golden" / "tinydeploy" / "host"


@pytest.mark.parametrize("kind", ["manifest", "profile", "probe"])
def test_the_shipped_schemas_are_what_the_records_generate(kind):
    assert shipped(kind) == text(generate()[kind]), "run: python -m edgeslm.artifacts.schemas --write"
    r = CliRunner().invoke(main, ["schema", kind])
    assert r.exit_code == 0 and json.loads(r.output)["$id"].startswith("edgeslm:edgeslm.")


def test_real_outputs_are_valid_and_broken_ones_are_not():
    schemas = {k: json.loads(shipped(k)) for k in ("manifest", "profile")}
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    jsonschema.validate(manifest, schemas["manifest"])
    results = [json.loads(p.read_text()) for p in sorted((GOLDEN / "profiles").rglob("*.json"))]
    assert len(results) == 2
    for r in results:
        jsonschema.validate(r, schemas["profile"])
    broken = copy.deepcopy(results[0])
    del broken["latency_ms"]["p50"]
    with pytest.raises(jsonschema.ValidationError, match="'p50' is a required property"):
        jsonschema.validate(broken, schemas["profile"])
    broken = copy.deepcopy(results[0])
    broken["parity"]["passed"] = "yes"
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'boolean'"):
        jsonschema.validate(broken, schemas["profile"])
    broken = copy.deepcopy(manifest)
    broken["artifacts"][0]["verification"]["passed"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schemas["manifest"])
