"""The build store as the user sees it (`edgeslm cache list|prune`): the completed builds
(`<cache>/builds/<key>`) and cached pass results (`<cache>/passes/<key>`), their size and when each was
last used, and eviction by age or by total size, least recently used first.

Only what edgeslm made is ever removed: a folder named by a 64-hex-digit key that holds the manifest (or
meta.json) edgeslm writes there, whose manifest names that key. Anything else in those folders is listed as
not edgeslm's and left alone; an entry a build holds the lock of right now is skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from edgeslm.artifacts import cache as build_cache
from edgeslm.hashing import cache_home

KEY = re.compile(r"[0-9a-f]{64}")
USED = build_cache.USED


@dataclass
class Entry:
    kind: str  # "build" or "pass"
    key: str
    folder: Path
    size: int
    created: float
    last_used: float
    what: str  # recipe, target and task of a build; the passes of a pass result

    def to_dict(self) -> dict:
        return {"kind": self.kind, "key": self.key, "folder": str(self.folder), "size_bytes": self.size,
                "created": _iso(self.created), "last_used": _iso(self.last_used), "what": self.what}


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def stores() -> dict[str, Path]:
    return {"build": build_cache.store_dir(), "pass": cache_home() / "passes"}


def _size(folder: Path) -> int:
    total = 0
    for root, dirs, files in os.walk(folder, followlinks=False):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def _describe(kind: str, folder: Path, key: str) -> str | None:
    """What the entry holds, or None when it is not an entry edgeslm wrote."""
    try:
        if kind == "build":
            m = json.loads((folder / "manifest.json").read_text())
            if not isinstance(m, dict) or m.get("cache_key") != key:
                return None
            target = (m.get("target") or {}).get("name", "?")
            return f"{(m.get('recipe') or {}).get('name', '?')} for {target} ({m.get('task', '?')})"
        meta = json.loads((folder / "meta.json").read_text())
        if not isinstance(meta, dict) or "sha256" not in meta:
            return None
        return "cached passes: " + ", ".join(str(f.get("type", "?")) for f in meta.get("facts", [])
                                             if isinstance(f, dict))
    except (OSError, ValueError):
        return None


def scan() -> tuple[list[Entry], list[Path]]:
    """(edgeslm's entries, other things found in the stores that are left alone)."""
    entries, others = [], []
    for kind, store in stores().items():
        try:
            children = sorted(store.iterdir())
        except OSError:
            continue
        for p in children:
            if p.name in (USED, ".locks") or build_cache.STALE.match(p.name):
                continue
            what = _describe(kind, p, p.name) if KEY.fullmatch(p.name) and p.is_dir() and not p.is_symlink() else None
            if what is None:
                others.append(p)
                continue
            created = p.stat().st_mtime
            try:
                used = (store / USED / p.name).stat().st_mtime
            except OSError:
                used = created
            entries.append(Entry(kind, p.name, p, _size(p), created, used, what))
    return entries, others


def choose(entries: list[Entry], older_than: float | None = None, max_size: int | None = None,
           everything: bool = False, now: float | None = None) -> list[Entry]:
    """The entries to remove: all of them, those unused for `older_than` seconds, and then the least
    recently used until the rest fit in `max_size` bytes."""
    now = time.time() if now is None else now
    if everything:
        return list(entries)
    chosen = [e for e in entries if older_than is not None and now - e.last_used > older_than]
    if max_size is not None:
        rest = sorted((e for e in entries if e not in chosen), key=lambda e: e.last_used)
        total = sum(e.size for e in rest)
        while rest and total > max_size:
            e = rest.pop(0)
            chosen.append(e)
            total -= e.size
    return chosen


def remove(entry: Entry) -> str | None:
    """Remove one entry under its build lock; None when done, else why it was kept."""
    import fcntl

    from edgeslm.runner.locks import acquire

    lock_path = stores()["build"] / ".locks" / f"{entry.key}.lock"
    fd = acquire(str(lock_path), fcntl.LOCK_EX, 0) if entry.kind == "build" else None
    if entry.kind == "build" and fd is None:
        return "a build is using it right now"
    try:
        if _describe(entry.kind, entry.folder, entry.key) is None:  # changed since it was listed
            return "no longer an edgeslm entry"
        trash = entry.folder.with_name(f".{entry.key}.old-{os.getpid()}")
        os.replace(entry.folder, trash)  # gone at once for lookups; then deleted
        for root, dirs, _ in os.walk(trash):  # store entries are read-only copies
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
            os.chmod(root, 0o755)
        shutil.rmtree(trash)
        (entry.folder.parent / USED / entry.key).unlink(missing_ok=True)
        return None
    except OSError as exc:
        return f"cannot remove it ({exc.strerror or exc})"
    finally:
        if fd is not None:
            os.close(fd)


def parse_age(text: str) -> float:
    """'30d', '12h', '90m', '2w' -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not m:
        raise ValueError(f"{text!r} is not an age such as 30d, 12h, 90m or 2w")
    return float(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m[2]]


def parse_size(text: str) -> int:
    """'5GB', '500MB', '2GiB', '0' -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"{text!r} is not a size such as 5GB, 500MB or 2GiB")
    unit = (m[2] or "B").upper().rstrip("B") or "B"
    scale = {"B": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}
    return int(float(m[1]) * scale[unit])
