"""Reading files that come from outside, on the build host: recipes, devices.toml, datasets, texts, model
folders, build folders, report inputs. Standard library only (validate, deploy and report stay torch-free).

Everything read here is a regular file (a FIFO would hang, /dev/zero would never end, a folder is not a
file), no larger than the limit for its kind (checked before and while reading), and, when a root folder
is given, inside that folder after every link is followed (a dataset file that links to /etc/passwd
would otherwise travel to every device in the build's reference data). Every failure is an InputError
(a UserError) that names the path and what to do; callers that know the recipe key re-raise it located.

    data = read_file(path, "dataset", root=dataset_folder)      # bytes, or InputError
    value = read_json(path, "config.json", root=model_folder)   # parsed with contract.documents' caps
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from edgeslm.contract.documents import MAX_DEPTH, DocumentError, loads
from edgeslm.errors import ConfigError, UserError

MiB = 1 << 20
# The largest file edgeslm reads of each kind (bytes). A limit is a refusal with its number, never a cut.
LIMITS = {
    "recipe": 1 * MiB,
    "target": 1 * MiB,
    "devices": 1 * MiB,
    "known_hosts": 16 * MiB,
    "dataset": 1024 * MiB,  # a .csv / .tsv / .jsonl dataset file
    "text": 256 * MiB,  # a verification / calibration / eval text file, or one .txt of a folder
    "config.json": 16 * MiB,
    "tokenizer": 256 * MiB,  # tokenizer.json, vocab files
    "json": 64 * MiB,  # other small JSON (an index of weight shards, generation_config.json)
    "manifest": 64 * MiB,
    "result": 64 * MiB,  # a profile result or report input
    "header": 4 * MiB,  # a C header (EDGESLM_ORT_HEADERS)
}


class InputError(UserError):
    """A file that cannot be read as the kind of input it should be (the message names it)."""

    def __init__(self, path, problem: str, fix: str | None = None):
        self.path, self.problem, self.fix = str(path), problem, fix
        super().__init__(f"{path}: {problem}" + (f" ({fix})" if fix else ""))

    def located(self, file: str, key: str | None) -> ConfigError:
        """The same problem as a ConfigError at a recipe's key: `r.toml: datasets.x.source: /d/a.csv is ...`."""
        return ConfigError(file, key, f"{self.path} {self.problem}", self.fix)


WHAT = {"json": "JSON file", "config.json": "config.json file", "header": "C header file", "devices": "devices.toml file",
        "tokenizer": "tokenizer file", "result": "result file"}


def limit_of(kind: str) -> int:
    return LIMITS.get(kind, LIMITS["json"])


def what_of(kind: str) -> str:
    return WHAT.get(kind, f"{kind} file")


def inside(path: Path, root: Path, what: str = "folder") -> Path:
    """`path` with every link followed, which must stay inside `root` (itself resolved): else InputError.
    A link that leaves the folder (or a `..` in a name) is refused, as build folders refuse them."""
    try:
        real_root = Path(root).resolve()
        real = Path(path).resolve()
    except ValueError:  # a NUL character, which no file name holds
        raise InputError(path, "is not a valid path (it holds a NUL character)", "check the path") from None
    except (OSError, RuntimeError) as exc:  # a link loop
        raise InputError(path, f"cannot be resolved ({getattr(exc, 'strerror', None) or exc})",
                         "remove the link loop") from None
    if real != real_root and real_root not in real.parents:
        raise InputError(path, f"leads outside its {what} {root} (to {real}) through a link or '..'",
                         f"copy the file into the {what} instead of linking to it")
    return real


def kind_of(mode: int) -> str:
    return ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else
            "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "not a regular file")


def check_regular(path: Path, what: str = "file") -> os.stat_result:
    """The stat of a regular file (links followed), or InputError saying what it is instead."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(path, "does not exist", "check the path") from None
    except NotADirectoryError:
        raise InputError(path, "does not exist (a part of the path is a file, not a folder)", "check the path") from None
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from None
    except ValueError:  # a NUL character, which no file name holds
        raise InputError(path, "is not a valid path (it holds a NUL character)", "check the path") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(path, f"is {kind_of(st.st_mode)}, not a regular file", f"give a {what}")
    return st


def read_file(path: Path, kind: str, root: Path | None = None, limit: int | None = None,
              what: str | None = None) -> bytes:
    """The bytes of a regular file of `kind` (see LIMITS), at most `limit` bytes (default: the kind's),
    inside `root` when given. Opened without blocking and checked again once open, so a file swapped for a
    FIFO meanwhile cannot hang the read; read no further than the limit, so a growing file cannot either."""
    limit = limit_of(kind) if limit is None else limit
    what = what or what_of(kind)
    path = Path(path)
    if root is not None:
        inside(path, root)
    st = check_regular(path, what)
    if st.st_size > limit:
        raise InputError(path, f"is {_size(st.st_size)}, larger than the {_size(limit)} edgeslm reads for a {what}",
                         "give a smaller file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(path, f"is {kind_of(os.fstat(fd).st_mode)}, not a regular file", f"give a {what}")
        chunks, total = [], 0
        while True:
            block = os.read(fd, min(1 << 22, limit + 1 - total))
            if not block:
                break
            chunks.append(block)
            total += len(block)
            if total > limit:
                raise InputError(path, f"is larger than the {_size(limit)} edgeslm reads for a {what}",
                                 "give a smaller file")
        return b"".join(chunks)
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def open_regular(path: Path, root: Path | None = None, what: str = "file"):
    """A binary file object of a regular file (inside `root` when given), opened without blocking and checked
    again once open: for header reads of files too large to read whole (weights, GGUF). The caller closes it."""
    path = Path(path)
    if root is not None:
        inside(path, root)
    check_regular(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise InputError(path, f"is {kind_of(mode)}, not a regular file", f"give a {what}")
    return os.fdopen(fd, "rb")


def read_text(path: Path, kind: str, root: Path | None = None, limit: int | None = None,
              what: str | None = None) -> str:
    """A UTF-8 text file (a BOM is dropped): NUL bytes or undecodable bytes are an InputError."""
    return decode_text(path, read_file(path, kind, root, limit, what), kind, what)[0]


def decode_text(path: Path, raw: bytes, kind: str, what: str | None = None, replace: bool = False) -> tuple[str, bool]:
    """(text, whether bytes were replaced) of a file's bytes: UTF-8, a BOM dropped, no NUL bytes. With
    `replace`, undecodable bytes become U+FFFD instead of an InputError naming the first one's offset."""
    if b"\x00" in raw:
        raise InputError(path, "is not a text file (it holds NUL bytes: binary data?)",
                         f"give a UTF-8 {what or what_of(kind)}")
    replaced = False
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if not replace:
            raise InputError(path, f"is not UTF-8 text (undecodable byte at offset {exc.start})",
                             "save it as UTF-8") from None
        text, replaced = raw.decode("utf-8", errors="replace"), True
    return (text[1:] if text.startswith("\ufeff") else text), replaced


def read_json(path: Path, kind: str = "json", root: Path | None = None, limit: int | None = None,
              max_depth: int = MAX_DEPTH, what: str | None = None):
    """A JSON file's value (size, depth, UTF-8 and syntax checked): InputError naming the file otherwise."""
    raw = read_file(path, kind, root, limit, what)
    try:
        return loads(raw, what="the file", max_bytes=None, max_depth=max_depth)
    except DocumentError as exc:
        raise InputError(path, str(exc).replace("the file ", "", 1)) from None


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"
