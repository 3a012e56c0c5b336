"""An emulated device's entry in a devices file: written in place by `devices emulate start --add-to FILE`
(once, however often it is started) and taken out again by `devices emulate stop`.

Only entries this module wrote are touched: they carry MARK in their table header's comment. A user's own
`[devices.NAME]` of the same name is never replaced; the file is rewritten atomically and must still parse.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from pathlib import Path

from edgeslm.devtools.emulate.image import EmulatorError

MARK = "# emulated "  # the header comment of every entry `devices emulate start` writes
_HEADER = re.compile(r"^\s*\[")


def _blocks(lines: list[str], name: str) -> list[tuple[int, int, bool]]:
    """(first line, end line, written by the emulator) of each `[devices.NAME]` table in `lines`."""
    head = re.compile(r"^\s*\[\s*devices\s*\.\s*(\"?)" + re.escape(name) + r"\1\s*\](.*)$")
    found = []
    for i, line in enumerate(lines):
        m = head.match(line)
        if m:
            end = next((j for j in range(i + 1, len(lines)) if _HEADER.match(lines[j])), len(lines))
            while end > i + 1 and not lines[end - 1].strip():
                end -= 1  # the blank lines before the next table belong to the file, not the entry
            found.append((i, end, m.group(2).lstrip().startswith(MARK)))
    return found


def _without(lines: list[str], blocks: list[tuple[int, int, bool]]) -> list[str]:
    for start, end, _ in sorted(blocks, reverse=True):
        if start > 0 and not lines[start - 1].strip():
            start -= 1  # and the blank line the entry was written after
        del lines[start:end]
    return lines


def _write(path: Path, text: str) -> None:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # only if the file did not parse before either
        raise EmulatorError(f"{path}: would not be valid TOML after the edit ({exc}); fix the file first") from None
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: Path) -> list[str]:
    if path.exists() and not path.is_file():
        raise EmulatorError(f"{path} is not a regular file; give --add-to a devices file (e.g. devices.local.toml)")
    return path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []


def put_entry(path: Path, name: str, entry: str) -> str:
    """Write `entry` (a `[devices.NAME]` table with MARK) into `path`, replacing the one written before.
    Returns "added" or "updated". A `[devices.NAME]` the user wrote is refused, naming the file."""
    path = Path(path)
    lines = _read(path)
    blocks = _blocks(lines, name)
    if any(not ours for *_, ours in blocks):
        raise EmulatorError(f"{path} already has a [devices.{name}] that `devices emulate start` did not write; "
                            f"give the emulated device another name (`devices emulate start NAME`) or remove that entry")
    lines = _without(lines, blocks)
    text = "".join(lines)
    if text and not text.endswith("\n"):
        text += "\n"
    _write(path, text + entry)
    return "updated" if blocks else "added"


def remove_entry(path: Path, name: str) -> bool:
    """Take the emulator's `[devices.NAME]` out of `path` (a user's entry of that name stays). True if one was."""
    path = Path(path)
    if not path.is_file():
        return False
    lines = _read(path)
    ours = [b for b in _blocks(lines, name) if b[2]]
    if not ours:
        return False
    _write(path, "".join(_without(lines, ours)))
    return True
