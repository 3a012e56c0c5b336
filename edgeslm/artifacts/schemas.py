"""JSON Schemas of what edgeslm writes for other tools to read: a build's manifest.json (`edgeslm.manifest/1`), a
device's profile result (`edgeslm.profile/1`) and probe (`edgeslm.probe/1`). They are generated from the typed
records themselves (the manifest's pydantic model, the contract's result records) and shipped with the package
(edgeslm/data/schemas/<kind>.schema.json; `edgeslm schema KIND` prints one). A test holds the shipped files equal to
what the records generate, and real manifests and results valid against them.

    python -m edgeslm.artifacts.schemas --write     # refresh the shipped files after changing a record
"""

from __future__ import annotations

import json
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from edgeslm.contract.results import NUMBER, ProbeResult, ProfileResult

FOLDER = Path(__file__).resolve().parents[1] / "data" / "schemas"
DIALECT = "https://json-schema.org/draft/2020-12/schema"  # the dialect's name (an identifier; nothing is fetched)


def _json_type(kind) -> str:
    if kind is NUMBER:
        return "number"
    return {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "array"}[kind]


def record_schema(cls) -> dict:
    """The JSON Schema of a contract.results record: its parts, their JSON types, the keys each must hold."""
    props: dict = {"schema": {"const": cls.SCHEMA, "description": "the record's kind and major version"}}
    required = ["schema"]
    for f in fields(cls):
        if f.name == "extra":
            continue
        kind, keys = f.metadata["kind"], f.metadata["keys"]
        s: dict = {"type": _json_type(kind) if f.default is not None else [_json_type(kind), "null"]}
        if keys:
            s["required"] = [k[0] if isinstance(k, tuple) else k for k in keys]
            typed = {k[0]: {"type": _json_type(k[1])} for k in keys if isinstance(k, tuple)}
            if typed:
                s["properties"] = typed
        props[f.name] = s
        if f.default is MISSING:
            required.append(f.name)
    return {"$schema": DIALECT, "$id": f"edgeslm:{cls.SCHEMA}", "title": cls.__name__,
            "description": " ".join((cls.__doc__ or "").split()), "type": "object", "properties": props,
            "required": required, "additionalProperties": True}


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
    """The shipped schema of `kind` (manifest, profile, probe) as text."""
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
