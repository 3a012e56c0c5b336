"""Content-addressed build cache.

The key is a hash of everything a build depends on: the recipe's meaning and the files it names,
the resolved target, the model files, the versions of the tools and edgeslm's own code. Completed
builds live in `<cache>/builds/<key>`; a build folder is a hard-linked (or copied) view of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from importlib import metadata
from pathlib import Path

from edgeslm.artifacts.manifest import MANIFEST_NAME, intact, read_manifest
from edgeslm.hashing import cache_home

TOOLS = ("torch", "executorch", "torchao", "transformers", "tokenizers", "onnx", "onnxscript",
         "onnxruntime", "numpy")


def tool_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in TOOLS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def code_hash() -> str:
    """edgeslm's own build code: a change to an exporter must invalidate cached builds."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.suffix in (".py", ".txt") and "__pycache__" not in p.parts and "cli" not in p.parts:
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def cache_key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def store_dir() -> Path:
    return cache_home() / "builds"


def lookup(key: str, out_dir: Path) -> Path | None:
    """A folder holding a complete, intact build for `key`: the out dir itself, or the store."""
    for folder in (out_dir, store_dir() / key):
        m = read_manifest(folder)
        if m is not None and m.cache_key == key and m.status == "ok" and intact(folder, m):
            return folder
    return None


def _link_tree(src: Path, dst: Path) -> None:
    for p in src.rglob("*"):
        target = dst / p.relative_to(src)
        if p.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(p, target)
        except OSError:
            shutil.copy2(p, target)


KEEP = ("profiles",)  # results measured on devices: history that outlives any one build


def replace_dir(new: Path, dst: Path) -> None:
    """Swap `new` into place at `dst` (the old folder is removed only after the swap); device results
    kept beside the old build move over."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    for name in KEEP:
        if (dst / name).is_dir() and not (new / name).exists():
            os.replace(dst / name, new / name)
    if dst.exists():
        os.replace(dst, old)
    os.replace(new, dst)
    shutil.rmtree(old, ignore_errors=True)


def materialize(src: Path, out_dir: Path) -> None:
    """Make `out_dir` an exact view of the stored build `src`."""
    if src.resolve() == out_dir.resolve():
        return
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    _link_tree(src, tmp)
    replace_dir(tmp, out_dir)


def store(build_dir: Path, key: str) -> Path:
    """Keep a completed build in the store (hard links: no extra space when on one filesystem)."""
    dst = store_dir() / key
    if read_manifest(dst) is not None:
        return dst
    tmp = dst.with_name(f".{key}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    _link_tree(build_dir, tmp)
    if (tmp / MANIFEST_NAME).exists():
        replace_dir(tmp, dst)
    return dst
