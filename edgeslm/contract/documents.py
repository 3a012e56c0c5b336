"""JSON documents that come from outside (a device's answer, a result file, a dataset line): parsed with a
size cap and a depth cap, so a hostile document is one ValueError naming what is wrong, never a
RecursionError, a hang or unbounded memory. Standard library only (it ships to the device).

    loads(text, what="probe answer", max_bytes=1 << 20)   # -> the value, or DocumentError
    check_depth(value, 64)                                 # for documents parsed elsewhere (TOML)
"""

from __future__ import annotations

import json

MAX_DEPTH = 64  # no edgeslm document nests deeper than ~8; 64 leaves room and stays far from recursion limits
MAX_ANSWER = 1 << 20  # one line a runner command answers with (probe, verify, stage, hold, ...)


class DocumentError(ValueError):
    """A document that is too large, too deep, not UTF-8 or not JSON (the message says which)."""


def check_depth(value, max_depth: int = MAX_DEPTH, what: str = "document") -> None:
    """Refuse a value (dicts and lists) nested deeper than `max_depth`; iterative, so any depth is safe."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            children = v.values()
        elif isinstance(v, list):
            children = v
        else:
            continue
        if depth > max_depth:
            raise DocumentError(f"{what} is nested deeper than {max_depth} levels")
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


def loads(data, what: str = "document", max_bytes: int | None = MAX_ANSWER, max_depth: int = MAX_DEPTH,
          constants: bool = True):
    """The JSON value in `data` (str or bytes), or DocumentError: larger than `max_bytes` (checked before
    parsing), not UTF-8, not JSON, or nested deeper than `max_depth`. `constants`: accept NaN and Infinity
    (Python's json writes them: a broken model's perplexity is NaN, and that is a result, not damage)."""
    if max_bytes is not None and len(data) > max_bytes:
        raise DocumentError(f"{what} is larger than {_size(max_bytes)} ({_size(len(data))})")
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DocumentError(f"{what} is not UTF-8 text (undecodable byte at offset {exc.start})") from None
    try:
        value = json.loads(data) if constants else json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise DocumentError(f"{what} is nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # json.JSONDecodeError, too many digits, NaN
        raise DocumentError(f"{what} is not valid JSON ({str(exc).splitlines()[0][:100]})") from None
    check_depth(value, max_depth, what)
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"
