"""sha256 of files, memoised by (path, size, mtime) so an unchanged build is checked in milliseconds."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def cache_home() -> Path:
    return Path(os.environ.get("EDGESLM_CACHE", Path.home() / ".cache" / "edgeslm"))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class HashMemo:
    """A small JSON memo of file hashes; stale entries are recomputed, never trusted."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_home() / "file-hashes.json"
        try:
            self.data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}
        self.dirty = False

    def sha256(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        stamp = [st.st_size, st.st_mtime_ns]
        entry = self.data.get(key)
        if entry and entry[:2] == stamp:
            return entry[2]
        digest = sha256_file(path)
        self.data[key] = [*stamp, digest]
        self.dirty = True
        return digest

    def save(self) -> None:
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)
        self.dirty = False
