"""manifest.json: what a build folder holds, how it was made, and how it was verified.

Schema-versioned and round-trippable. Deploy and profiling read it; the on-device runner reads it
with the standard library only, so everything it needs is plain JSON (no pickles, no torch types).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgeslm.config.base import FormatName
from edgeslm.contract import MANIFEST_SCHEMA
from edgeslm.errors import ConfigError, UserError
from edgeslm.hashing import sha256_file

MANIFEST_NAME = "manifest.json"

# Names and paths in a manifest become paths on the build host and on devices. A build folder can come
# from anywhere (a CI artifact, a colleague), and a device answers with its own copy: both are checked
# here, and the device runner repeats the same checks on its side.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
CACHE_KEY_RE = re.compile(r"^[0-9a-f]{16,128}$")
VERSION_LEN = 16  # a deployed version is the first 16 hex digits of the cache key


def plain_name(value: Any, what: str = "name") -> str:
    """A recipe/target/artifact name: lower-case letters, digits, '.', '_', '-'; never '.' or '..'."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value) or len(value) > 128:
        raise ValueError(f"{what} {value!r} is not a plain name (lower-case letters, digits, '.', '_', '-', "
                         "starting with a letter or digit)")
    return value


def relative_path(value: Any) -> str:
    """A plain relative POSIX path inside the build folder: no '..', '.', empty parts, leading '/',
    backslash or NUL."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"path {value!r} is empty")
    bad = ("\\" in value or "\x00" in value or value.startswith("/")
           or any(part in ("", ".", "..") for part in value.split("/")))
    if bad or any(ord(c) < 32 for c in value):
        raise ValueError(f"path {value!r} is not a plain relative path inside the build folder "
                         "(no '..', no leading '/', no backslash, no empty parts)")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileEntry(_Model):
    path: str = Field(description="Relative to the build folder (a plain relative POSIX path).")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    role: Literal["model", "tokenizer", "reference", "other"]

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return relative_path(v)


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
    how: str | None = Field(default=None, description="How the artifact was run when not plainly in its runtime "
                                                       "on this host (e.g. exact int32 products where this host's "
                                                       "kernels saturate and the target's do not).")


class TaskScore(BaseModel):
    """A task metric on the eval split (accuracy or macro-F1 of class predictions); `value` is the one `metric`
    names."""
    model_config = ConfigDict(extra="allow")

    metric: str
    value: float
    accuracy: float | None = None
    macro_f1: float | None = None
    n: int | None = Field(None, description="texts scored")


class Evaluation(BaseModel):
    """The task metric on the eval split: before compression, of the compressed eager model and of each artifact
    (on the build host); the device scores the tokenized split the reference file carries."""
    model_config = ConfigDict(extra="allow")

    dataset: str
    metric: str
    eval_texts: int
    original: TaskScore = Field(description="the model before any compressing pass")
    compressed_eager: TaskScore
    artifacts: dict[str, TaskScore] = Field(default_factory=dict, description="format -> its score")
    max_drop: float | None = None
    batch: int | None = None


class RecipeRef(_Model):
    name: str
    path: str | None = None
    sha256: str
    content: dict[str, Any] = Field(description="the whole validated recipe (its own schema: `edgeslm explain`)")


class Artifact(_Model):
    name: str = Field(description="Stable id, e.g. 'onnx' or 'executorch' (a plain name).")
    format: FormatName  # a name in contract.formats (a format registered at run time too)
    file: str = Field(description="The model file, relative to the build folder.")
    runtime: str = Field(description="onnxruntime | executorch/xnnpack")
    precision: str = Field(description="fp32, int8-dynamic, int8-static")
    quantization: dict[str, Any] | None = None
    export: dict[str, Any] = Field(default_factory=dict, description="Exporter facts: opset, "
                                   "optimization, delegated operators, dynamic shapes...")
    verification: Verification | None = None  # export fidelity: vs the eager model it was exported from
    compression: Verification | None = None  # compression loss: vs the model before compression (reported)
    task_metric: TaskScore | None = None  # on the eval split, on the build host
    # Room for later work: per-operator profiles, KV-cache programs, extra methods.
    extras: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return plain_name(v, "artifact name")

    @field_validator("file")
    @classmethod
    def _file(cls, v: str) -> str:
        return relative_path(v)


class Manifest(_Model):
    schema_: str = Field(MANIFEST_SCHEMA, alias="schema")
    edgeslm_version: str
    cache_key: str
    status: Literal["ok", "verification-failed"]
    recipe: RecipeRef
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
    evaluation: Evaluation | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("schema_")
    @classmethod
    def _schema(cls, v: str) -> str:
        if v != MANIFEST_SCHEMA:  # another version's fields mean other things: never read as this one's
            raise ValueError(f"{v[:60]!r} is not a manifest version this edgeslm reads ({MANIFEST_SCHEMA}); "
                             "rebuild the folder with this edgeslm")
        return v

    @field_validator("cache_key")
    @classmethod
    def _cache_key(cls, v: str) -> str:
        if not CACHE_KEY_RE.fullmatch(v):
            raise ValueError(f"cache key {v!r} is not a lower-case hex digest")
        return v

    @model_validator(mode="after")
    def _paths(self):
        plain_name(self.recipe.name, "recipe.name")
        plain_name(self.target.get("name"), "target.name")
        try:
            relative_path(self.reference.get("file"))
        except ValueError as exc:
            raise ValueError(f"reference.file: {exc}") from None
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths) or MANIFEST_NAME in paths:
            raise ValueError("files lists a path twice (or lists manifest.json itself)")
        return self

    @property
    def version(self) -> str:
        """The name of this build's folder on a device: versions/<version>."""
        return self.cache_key[:VERSION_LEN]

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


def parse_manifest(text: str, where: str) -> Manifest:
    """A manifest from text, or a one-line ConfigError naming `where` and the offending key."""
    import pydantic

    from edgeslm.config.base import error_from_pydantic

    try:
        return Manifest.from_json(text)
    except pydantic.ValidationError as exc:
        raise error_from_pydantic(exc, Manifest, where) from None


def load_manifest(folder: Path) -> Manifest:
    """The manifest of a build folder that is about to be used (deployed, profiled): every name and
    path in it checked, or a UserError naming the file and key."""
    from edgeslm.inputs import InputError, read_text

    path = folder / MANIFEST_NAME
    if not os.path.lexists(path):
        raise UserError(f"{folder}: not a build folder (no {MANIFEST_NAME}); run `edgeslm build` first")
    try:
        text = read_text(path, "manifest")  # a FIFO or /dev/zero in its place is refused, not read forever
    except InputError as exc:
        raise UserError(f"{exc}; refusing this build folder (rebuild it)") from None
    try:
        return parse_manifest(text, str(path))
    except ConfigError as exc:
        raise ConfigError(exc.file, exc.key, exc.problem, "refusing this build folder; rebuild it") from None


_checked: dict[tuple, str] = {}


def check_files(folder: Path, manifest: Manifest) -> None:
    """Every file the manifest lists is a regular file inside `folder` (no symlink out of it) with the
    listed size and sha256. Run before anything of the folder leaves this machine."""
    root = folder.resolve()
    for f in manifest.files:
        p = folder / f.path
        try:
            real = p.resolve(strict=True)
        except (OSError, RuntimeError):
            raise UserError(f"{folder}: {f.path} (listed in {MANIFEST_NAME}) is missing; rebuild it") from None
        if root not in real.parents or not real.is_file():
            raise UserError(f"{folder}: {f.path} (listed in {MANIFEST_NAME}) resolves outside the build "
                            "folder or is not a file; refusing this build folder")
        st = real.stat()
        stamp = (str(real), st.st_size, st.st_mtime_ns, st.st_ino)
        if stamp not in _checked:  # hashed once per process (a group deploy checks one folder per device)
            _checked[stamp] = sha256_file(real)
        if st.st_size != f.size or _checked[stamp] != f.sha256:
            raise UserError(f"{folder}: {f.path} does not match its size/sha256 in {MANIFEST_NAME} "
                            "(the build folder was modified); rebuild it")


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
