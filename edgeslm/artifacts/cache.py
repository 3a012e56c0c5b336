"""Content-addressed build cache.

The key is a hash of everything a build depends on: the recipe's meaning and the files it names,
the resolved target, the model files (by content), the versions of the tools and edgeslm's own code.
Completed builds live in `<cache>/builds/<key>`. A build folder is a *copy* of a stored build (on
filesystems that support it the copy shares blocks until written, so it costs no space), never a hard
link: a user editing or copying over a file in `build/` cannot change the cache. Before a stored or
built folder is reused, every file is checked against the sha256 in its manifest; a corrupt store
entry is thrown away and rebuilt, a modified build folder is restored from the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from edgeslm.artifacts.manifest import MANIFEST_NAME, Manifest, read_manifest, write_manifest
from edgeslm.errors import UserError
from edgeslm.hashing import HashMemo, cache_home

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


# edgeslm's rooms whose code never shapes a build's files: the command line, reports, deploy and profiling,
# the SSH transport and the developer tools (the emulator). A change there rebuilds nothing.
NOT_BUILD_CODE = ("cli", "reports", "profiling", "transport", "devtools")


def code_hash(only: tuple[str, ...] | None = None, root: Path | None = None) -> str:
    """edgeslm's own build code: a change to an exporter must invalidate cached builds, a change to a report
    must not (NOT_BUILD_CODE is left out). `only`: the package-relative files (or folders) a cached step
    depends on, e.g. fine-tuning."""
    root = root or Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if only is not None and not any(rel == o or rel.startswith(o.rstrip("/") + "/") for o in only):
            continue
        if rel.split("/", 1)[0] in NOT_BUILD_CODE:
            continue
        if p.suffix in (".py", ".txt") and "__pycache__" not in p.parts:
            h.update(rel.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def cache_key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def store_dir() -> Path:
    return cache_home() / "builds"


USED = ".used"  # <store>/.used/<key>: its mtime is when the entry was last used (`edgeslm cache` reads it)


def touch(store: Path, key: str) -> None:
    """Record that the entry `key` of `store` was used now (a build or a pass result taken from the cache)."""
    try:
        (store / USED).mkdir(parents=True, exist_ok=True)
        (store / USED / key).touch()
    except OSError:
        pass  # a read-only cache still works; the entry just looks older


def damaged_files(folder: Path, manifest: Manifest, memo: HashMemo) -> list[str]:
    """Files of `manifest` that are missing in `folder` or whose content differs (sha256)."""
    bad = []
    for f in manifest.files:
        p = folder / f.path
        try:
            if p.is_symlink() or not p.is_file() or p.stat().st_size != f.size or memo.sha256(p) != f.sha256:
                bad.append(f.path)
        except OSError:
            bad.append(f.path)
    return bad


@dataclass
class Hit:
    folder: Path  # where the verified build is: the out dir itself or the store entry
    note: str = ""  # what was found and repaired on the way, for the user


def lookup(key: str, out_dir: Path, memo: HashMemo | None = None) -> Hit | None:
    """A verified, complete build for `key`: the out dir itself if intact, else the store entry.

    A store entry that fails its own checksums is removed (it is edgeslm's) so the build runs again."""
    memo = memo or HashMemo()
    note = ""
    m = read_manifest(out_dir)
    if m is not None and m.cache_key == key and m.status == "ok":
        bad = damaged_files(out_dir, m, memo)
        if not bad:
            return Hit(out_dir)
        note = (f"{out_dir}: {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} modified since the build; "
                "restored from the cache")
    entry = store_dir() / key
    m = read_manifest(entry)
    if m is not None and m.cache_key == key and m.status == "ok":
        bad = damaged_files(entry, m, memo)
        if not bad:
            touch(store_dir(), key)
            return Hit(entry, note)
        shutil.rmtree(entry, ignore_errors=True)
    return None


def copy_file(src: Path, dst: Path) -> None:
    """Copy bytes; copy_file_range lets copy-on-write filesystems share blocks (no space used)."""
    try:
        with open(src, "rb") as fi, open(dst, "wb") as fo:
            left = os.fstat(fi.fileno()).st_size
            while left > 0:
                n = os.copy_file_range(fi.fileno(), fo.fileno(), left)
                if n == 0:
                    break
                left -= n
        if left > 0:
            raise OSError("short copy")
    except (OSError, AttributeError):
        shutil.copyfile(src, dst)


def copy_tree(src: Path, dst: Path, read_only: bool = False) -> None:
    for p in sorted(src.rglob("*")):
        target = dst / p.relative_to(src)
        if p.is_symlink():
            continue  # builds hold no links; never follow one out of the folder
        if p.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_file(p, target)
        if read_only:
            os.chmod(target, 0o444)


KEEP = ("profiles",)  # results measured on devices: history that outlives any one build
STALE = re.compile(r"^\.(?P<name>.+)\.(?:build|tmp|old)-(?P<pid>\d+)$")


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
    """Make `out_dir` an exact copy of the verified build `src` (device results beside it are kept)."""
    if src.resolve() == out_dir.resolve():
        return
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    copy_tree(src, tmp)
    replace_dir(tmp, out_dir)


def store(build_dir: Path, key: str, replace: bool = False) -> Path:
    """Keep a completed build in the store (a read-only copy). `replace` overwrites an existing entry
    (`build --force`); otherwise a verified entry is kept as it is."""
    dst = store_dir() / key
    if not replace and read_manifest(dst) is not None and lookup(key, dst) is not None:
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(dst.parent)
    tmp = dst.with_name(f".{key}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    copy_tree(build_dir, tmp, read_only=True)
    if (tmp / MANIFEST_NAME).exists():
        replace_dir(tmp, dst)
        touch(dst.parent, key)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


BUILD_WAIT = 3 * 3600.0  # seconds a build waits for another process building the same key


@contextlib.contextmanager
def key_lock(key: str, progress=lambda message: None, wait: float | None = None):
    """Hold the build lock of `key` (an flock: the kernel frees it when its process ends, so no lock goes
    stale). Another holder is waited for, up to `wait` seconds ($EDGESLM_BUILD_WAIT, default 3 hours)."""
    import fcntl

    from edgeslm.runner.locks import acquire

    if wait is None:
        try:
            wait = float(os.environ.get("EDGESLM_BUILD_WAIT", BUILD_WAIT))
        except ValueError:
            wait = BUILD_WAIT
    path = store_dir() / ".locks" / f"{key}.lock"

    def holder() -> str:  # the pid the holder wrote into the lock file
        return (path.read_text(errors="replace").strip() if path.is_file() else "") or "?"

    fd = acquire(str(path), fcntl.LOCK_EX, 0)
    if fd is None:
        progress(f"waiting for another edgeslm process (pid {holder()}) building the same artifacts")
        fd = acquire(str(path), fcntl.LOCK_EX, wait)
    if fd is None:
        raise UserError(f"another edgeslm process (pid {holder()}) has been building the same recipe, model and "
                        f"target for over {wait:.0f}s; wait for it, stop it, or set EDGESLM_BUILD_WAIT (seconds)")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def retarget(folder: Path, target) -> str:
    """A build taken from the store for another target that gets the same files (the cache key holds only what
    of the target shapes them): its manifest names the target it is now for. Returns a note for the user
    ("" when nothing changed)."""
    m = read_manifest(folder)
    want = target.model_dump(mode="json")
    if m is None or m.target == want:
        return ""
    was = m.target.get("name")
    write_manifest(folder, m.model_copy(update={"target": want}))
    return f"the same files as built for target {was} (nothing in them differs between the two targets)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(parent: Path) -> list[Path]:
    """Remove the work folders (`.NAME.build-PID`, `.tmp-PID`, `.old-PID`) that edgeslm processes left
    behind in `parent` when they were killed; only those whose process is gone."""
    removed = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = STALE.match(p.name)
        if m and p.is_dir() and not p.is_symlink() and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"])):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed
