"""What each runner command answers, as shapes the build host and the runner share (standard library only;
it ships to the device). A device's answer is input like any other: the host parses it with
`documents.loads` (a size cap and a depth cap) and then checks it against its command's shape here, so a
runner that is damaged, replaced or hostile is one line naming the part that is wrong, never a KeyError
further on.

    value = documents.loads(line, "verify answer")
    check("verify", value)              # -> value, or AnswerError("bad[0].path is not a string")
    line_answer("digest", stdout)       # the host's one-line Python commands (DIGEST, INSTALL, ...)
    token_id(value, vocab)              # a generated token id: an int in [0, vocab)

A shape is a type (str, int, bool, NUMBER), or Text(regex), Maybe(shape) (null allowed), ListOf(shape),
MapOf(shape) (string keys), OneOf(values) or Obj(required, optional). Objects keep keys they do not know
(a newer runner may add some), as the records in `results` do.
"""

from __future__ import annotations

import re

MAX_LINE = 64 << 10  # one line of a streamed answer (generate's token and summary lines)
MAX_STREAM = 16 << 20  # everything a streamed command may send (`edgeslm run`)
NUMBER = (int, float)


class AnswerError(ValueError):
    """An answer that is not what its command answers (the message names the part)."""


class Text:
    """A string matching `regex` (whole), at most `max_len` characters."""

    def __init__(self, regex: str, what: str, max_len: int = 4096):
        self.rx, self.what, self.max_len = re.compile(regex), what, max_len

    def check(self, value, where: str):
        if not isinstance(value, str):
            raise AnswerError(f"{_name(where)} is not a string")
        if len(value) > self.max_len or not self.rx.fullmatch(value):
            raise AnswerError(f"{_name(where)} is not {self.what}")


class Maybe:
    def __init__(self, shape):
        self.shape = shape

    def check(self, value, where: str):
        if value is not None:
            _check(self.shape, value, where)


class ListOf:
    def __init__(self, shape):
        self.shape = shape

    def check(self, value, where: str):
        if not isinstance(value, list):
            raise AnswerError(f"{_name(where)} is not a list")
        for i, v in enumerate(value):
            _check(self.shape, v, f"{where}[{i}]")


class MapOf:
    """An object whose keys are strings and whose values all have one shape."""

    def __init__(self, shape):
        self.shape = shape

    def check(self, value, where: str):
        if not isinstance(value, dict):
            raise AnswerError(f"{_name(where)} is not an object")
        for k, v in value.items():
            _check(self.shape, v, f"{where}[{_short(k)}]")


class OneOf:
    def __init__(self, *values):
        self.values = values

    def check(self, value, where: str):
        if isinstance(value, bool) or value not in self.values:
            raise AnswerError(f"{_name(where)} is not one of {', '.join(map(repr, self.values))}")


class Obj:
    """An object with these keys (and optional ones); keys it does not list are kept."""

    def __init__(self, required: dict, optional: dict | None = None):
        self.required, self.optional = required, optional or {}

    def check(self, value, where: str):
        if not isinstance(value, dict):
            raise AnswerError(f"{where} is not an object" if where else "not a JSON object")
        for key, shape in self.required.items():
            if key not in value:
                raise AnswerError(f"{_join(where, key)} is missing")
            _check(shape, value[key], _join(where, key))
        for key, shape in self.optional.items():
            if key in value:
                _check(shape, value[key], _join(where, key))


_NAMES = {str: "a string", int: "an integer", bool: "true or false", float: "a number", NUMBER: "a number",
          dict: "an object", list: "a list"}


def _check(shape, value, where: str) -> None:
    if isinstance(shape, (type, tuple)):
        wrong = not isinstance(value, shape) or (isinstance(value, bool) and shape is not bool)
        if wrong:
            raise AnswerError(f"{_name(where)} is not {_NAMES.get(shape, shape)}")
        return
    shape.check(value, where)


def _name(where: str) -> str:
    return where or "the answer"


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _short(key) -> str:
    try:
        text = str(key)
    except ValueError:  # an integer too long to print
        return "(a very long number)"
    return repr(text if len(text) <= 40 else text[:40] + "...")


SHA256 = Text(r"[0-9a-f]{64}", "a sha256 digest")
VERSION = Text(r"[0-9a-f]{16}", "a version (16 hex digits)")
VERSION_LINK = Text(r"versions/[0-9a-f]{16}", "versions/<16 hex digits>")
PATH = Text(r"/[^\x00-\x1f\x7f]*", "an absolute path")
NAME = Text(r"[A-Za-z0-9][A-Za-z0-9._-]*", "a plain name", 128)
BAD_FILE = Obj({"path": str, "problem": str})

# the answer of each runner command the host reads (runner/main.py); `hold` is read by profiling.remote
ANSWERS = {
    "hash": MapOf(Maybe(SHA256)),
    "verify": Obj({"ok": bool, "files": int, "bad": ListOf(BAD_FILE)},
                  {"against": str, "actual": MapOf(Maybe(SHA256))}),
    "status": Obj({"current": Maybe(VERSION), "previous": Maybe(VERSION), "versions": ListOf(VERSION),
                   "staging": ListOf(str)}),
    "stage": Obj({"need": ListOf(str), "reused": int, "free_bytes": int}, {"reused_bytes": int}),
    "commit": Obj({"committed": PATH, "files": int}),
    "activate": Obj({"current": VERSION_LINK, "previous": Maybe(VERSION_LINK), "pruned": ListOf(VERSION)}),
    "rollback": Obj({"current": VERSION_LINK, "previous": Maybe(VERSION_LINK)}, {"verified_against": str,
                                                                                 "files": int}),
    "break-lock": Obj({"broken": bool, "held": bool},
                      {"holder": dict, "signal": int}),  # holder: the lock file's record, as found
    "profile": Obj({"written": PATH, "flags": ListOf(str), "parity": bool}),
    "generate": Obj({"tokens": ListOf(int), "prompt_tokens": int, "load_ms": NUMBER, "ttft_ms": Maybe(NUMBER),
                     "decode_tok_s": Maybe(NUMBER), "runtime": str, "stopped": bool,
                     "decoding": Obj({"sampling": OneOf("greedy", "sample")})}),
    "token": Obj({"token": int}),
    "error": Obj({"error": str}),
    "resolve": Obj({"python": ListOf(int), "workdir": PATH, "problem": Maybe(str)}),
    "recipes": ListOf(str),
}
# what the host reads of a probe beyond the record's own checks (contract.results.ProbeResult)
PROBE = Obj({"thermal": Obj({"temperatures_c": MapOf(NUMBER), "governor": Maybe(str)}),
             "runtimes": MapOf(Maybe(str)), "features": ListOf(str)},
            {"cores": Maybe(int), "disk": Maybe(Obj({"free_bytes": int}, {"path": str, "total_bytes": int})),
             "mem_total_kb": Maybe(int), "mem_available_kb": Maybe(int)})
SAMPLED = Obj({"temperature": NUMBER, "top_k": int, "top_p": NUMBER, "seed": int})

# the host's one-line Python commands (profiling.remote): what each prints, whole
LINES = {
    "digest": Text(r"[0-9a-f]{64}|missing", "a sha256 digest or 'missing'"),
    "install": OneOf("0", "1"),
    "place": OneOf("0", "1"),
    "arch": Text(r"[A-Za-z0-9_.-]{1,64}", "a machine name (platform.machine())"),
}


def check(command: str, value):
    """`value` (a parsed answer of runner `command`), or AnswerError naming the part that is wrong."""
    if command == "probe":
        from edgeslm.contract.results import ProbeResult, ResultError

        try:
            ProbeResult.from_dict(value)
        except ResultError as exc:
            raise AnswerError(str(exc)) from None
        _check(PROBE, value, "")
        return value
    _check(ANSWERS[command], value, "")
    if command == "generate" and value["decoding"]["sampling"] == "sample":
        _check(SAMPLED, value["decoding"], "decoding")
    return value


def line_answer(kind: str, text: str) -> str:
    """What a one-line command printed (surrounding whitespace dropped), checked against LINES[kind]."""
    value = text.strip() if isinstance(text, str) else text
    if isinstance(value, str) and "\n" in value:
        raise AnswerError("more than one line")
    _check(LINES[kind], value, "")
    return value


def token_id(value, vocab: int, where: str = "token") -> int:
    """A generated token id: an integer in [0, vocab)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise AnswerError(f"{where} is not an integer")
    if not 0 <= value < vocab:
        raise AnswerError(f"{where} {value if abs(value) < 10 ** 30 else '(a very long number)'} is outside the "
                          f"vocabulary [0, {vocab})")
    return value
