"""JSON Schemas of what edgeslm writes for other tools to read: a build's manifest.json (`edgeslm.manifest/1`), a
device's profile result (`edgeslm.profile/1`) and probe (`edgeslm.probe/1`). They are generated from the typed
records themselves (the manifest's pydantic model, the contract's result records) and shipped with the package
(edgeslm/data/schemas/<kind>.schema.json; `edgeslm schema KIND` prints one). A test holds the shipped files equal to
what the records generate, and real manifests and results valid against them.

    python -m edgeslm.artifacts.schemas --write     # refresh the shipped files after changing a record

The report's schema (report.schema.json, `edgeslm.report/1`) is written by hand beside them: a report is a dict
built by reports/model.py, not a record, so `--write` (which writes only what `generate()` returns) leaves it alone.
"""

from __future__ import annotations

import json
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from edgeslm.contract.results import Kind, ListOf, ProbeResult, ProfileResult

FOLDER = Path(__file__).resolve().parents[1] / "data" / "schemas"
DIALECT = "https://json-schema.org/draft/2020-12/schema"  # the dialect's name (an identifier; nothing is fetched)


def _kind_schema(kind) -> dict:
    if isinstance(kind, Kind):
        return dict(kind.json)
    if isinstance(kind, ListOf):
        return {"type": "array"} if kind.item is None else {"type": "array", "items": _kind_schema(kind.item)}
    return _part_schema(kind)


def _part_schema(cls) -> dict:
    """The JSON Schema of a contract.results part: its fields, their kinds, which are required; other keys are
    allowed (a newer minor version adds some)."""
    props: dict = {}
    required = []
    for f in fields(cls):
        if f.name == "extra":
            continue
        s = _kind_schema(f.metadata["kind"])
        if f.default is not MISSING:
            s = {"anyOf": [s, {"type": "null"}]}
        if f.metadata.get("doc"):
            s["description"] = f.metadata["doc"]
        props[f.name] = s
        if f.default is MISSING:
            required.append(f.name)
    out = {"type": "object", "properties": props, "required": required, "additionalProperties": True}
    if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):  # dataclasses make up a docstring
        out["description"] = " ".join(cls.__doc__.split())
    return out


def record_schema(cls) -> dict:
    """The JSON Schema of a contract.results record, nested parts included."""
    s = _part_schema(cls)
    s["properties"] = {"schema": {"const": cls.SCHEMA, "description": "the record's kind and major version"},
                       **s["properties"]}
    s["required"] = ["schema", *s["required"]]
    return {"$schema": DIALECT, "$id": f"edgeslm:{cls.SCHEMA}", "title": cls.__name__, **s}


def manifest_schema() -> dict:
    from edgeslm.artifacts.manifest import Manifest
    from edgeslm.contract import MANIFEST_SCHEMA

    s = Manifest.model_json_schema()
    return {"$schema": DIALECT, "$id": f"edgeslm:{MANIFEST_SCHEMA}", **s}


def generate() -> dict[str, dict]:
    """{kind: schema} for every record edgeslm publishes."""
    return {"manifest": manifest_schema(), "profile": record_schema(ProfileResult), "probe": record_schema(ProbeResult)}


def text(schema: dict) -> str:
    return json.dumps(schema, indent=1, sort_keys=True) + "\n"


def shipped(kind: str) -> str:
    """The shipped schema of `kind` (manifest, profile, probe, report) as text."""
    return (FOLDER / f"{kind}.schema.json").read_text(encoding="utf-8")


def main() -> None:
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m edgeslm.artifacts.schemas --write")
    FOLDER.mkdir(parents=True, exist_ok=True)
    for kind, schema in generate().items():
        (FOLDER / f"{kind}.schema.json").write_text(text(schema), encoding="utf-8")
        print(FOLDER / f"{kind}.schema.json")


if __name__ == "__main__":
    main()
