"""manifest.json: what a build folder holds, how it was made, and how it was verified.

Schema-versioned and round-trippable. Deploy and profiling read it; the on-device runner reads it
with the standard library only, so everything it needs is plain JSON (no pickles, no torch types).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgeslm.hashing import sha256_file

MANIFEST_SCHEMA = "edgeslm.manifest/1"
MANIFEST_NAME = "manifest.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileEntry(_Model):
    path: str = Field(description="Relative to the build folder.")
    sha256: str
    size: int
    role: Literal["model", "tokenizer", "reference", "other"]


class TensorSpec(_Model):
    name: str
    dtype: str
    axes: list[str] = Field(description="Symbolic axes, e.g. ['batch', 'sequence'].")


class Metric(_Model):
    name: str = Field(description="cosine_min, cosine_mean, max_abs_error, top1_agreement")
    value: float
    threshold: float | None = None
    kind: Literal["min", "max", "info"] = "info"
    passed: bool | None = None


class Verification(_Model):
    passed: bool
    samples: int
    seq_lens: list[int]
    metrics: list[Metric]
    against: str = "eager-pytorch-fp32"
    runtime: str = ""


class Artifact(_Model):
    name: str = Field(description="Stable id, e.g. 'onnx' or 'executorch'.")
    format: Literal["onnx", "executorch"]
    file: str
    runtime: str = Field(description="onnxruntime | executorch/xnnpack")
    precision: str = Field(description="fp32, int8-dynamic, int8-static")
    quantization: dict[str, Any] | None = None
    export: dict[str, Any] = Field(default_factory=dict, description="Exporter facts: opset, "
                                   "optimization, delegated operators, dynamic shapes...")
    verification: Verification | None = None  # export fidelity: vs the eager model it was exported from
    compression: Verification | None = None  # compression loss: vs the model before compression (reported)
    task_metric: dict[str, Any] | None = None  # on the eval split, on the build host
    # Room for later work: per-operator profiles, KV-cache programs, extra methods.
    extras: dict[str, Any] = Field(default_factory=dict)


class Manifest(_Model):
    schema_: str = Field(MANIFEST_SCHEMA, alias="schema")
    edgeslm_version: str
    cache_key: str
    status: Literal["ok", "verification-failed"]
    recipe: dict[str, Any] = Field(description="name, path, sha256 and the full validated recipe.")
    target: dict[str, Any] = Field(description="The resolved target (host: detected features).")
    model: dict[str, Any] = Field(description="source, kind, revision, file hashes, model_type, size.")
    task: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    shapes: dict[str, Any] = Field(description="min_seq_len, max_seq_len, batch_size.")
    artifacts: list[Artifact]
    files: list[FileEntry]
    reference: dict[str, Any] = Field(description="Reference I/O file and what it holds.")
    tools: dict[str, str]
    build: dict[str, Any] = Field(description="started_at, seconds, steps [{name, seconds}], host.")
    passes: list[dict[str, Any]] = Field(default_factory=list, description="What each pass did, in order.")
    evaluation: dict[str, Any] | None = Field(
        None, description="Task metric on the eval split: dataset, metric, original (before compression), "
        "compressed (eager), per artifact; the tokenized eval split is in the reference file.")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        return cls.model_validate_json(text)

    def artifact(self, name: str) -> Artifact:
        for a in self.artifacts:
            if a.name == name:
                return a
        raise KeyError(name)


def read_manifest(folder: Path) -> Manifest | None:
    try:
        return Manifest.from_json((folder / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def write_manifest(folder: Path, manifest: Manifest) -> None:
    tmp = folder / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(manifest.to_json())
    os.replace(tmp, folder / MANIFEST_NAME)


def file_entries(folder: Path, roles: dict[str, str]) -> list[FileEntry]:
    """Every file under `folder` except the manifest, hashed. `roles` maps path prefixes to roles."""
    out = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name in (MANIFEST_NAME, f".{MANIFEST_NAME}.tmp"):
            continue
        rel = p.relative_to(folder).as_posix()
        role = next((r for prefix, r in roles.items() if rel.startswith(prefix)), "other")
        out.append(FileEntry(path=rel, sha256=sha256_file(p), size=p.stat().st_size, role=role))
    return out


def intact(folder: Path, manifest: Manifest) -> bool:
    """Quick integrity check: every listed file exists with its size (hashes: `edgeslm verify`)."""
    for f in manifest.files:
        p = folder / f.path
        try:
            if p.stat().st_size != f.size:
                return False
        except OSError:
            return False
    return True
