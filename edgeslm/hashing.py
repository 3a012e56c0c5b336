"""sha256 of files, memoised so an unchanged build is checked in milliseconds.

A memo entry is trusted only while the file's whole stat identity is unchanged: device, inode, size,
mtime and ctime. Writing a file in place, copying another over it or renaming one into its place all
change the ctime (which, unlike the mtime, cannot be set back by `touch -d` or `cp -p`), so a swapped
file of the same size and modification time is hashed again: files are keyed by content.
"""

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
        if not isinstance(self.data, dict):
            self.data = {}
        self.dirty = False

    def sha256(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
        entry = self.data.get(key)
        if isinstance(entry, list) and len(entry) == len(stamp) + 1 and entry[:-1] == stamp:
            return entry[-1]
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
