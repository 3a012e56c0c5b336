"""Every host-side reader of a device answer, fed random and hostile documents (random bytes, random JSON,
nesting thousands deep, huge strings, wrong types in good answers): it returns a checked value or raises
one DeviceError/UserError, never anything else, and never reads past its cap. Then the same end to end
through the real sshd with a runner stand-in: a 300 MB probe line, a 400 MB profile result, a result
nested 100,000 deep."""

from __future__ import annotations

import json
import os
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployhelp import cli, device
from edgeslm.contract.answers import ANSWERS, MAX_LINE, MAX_STREAM, AnswerError, line_answer
from edgeslm.errors import EXIT_USER, UserError
from edgeslm.profiling.deploy import checked_probe, deploy, recipes_answer
from edgeslm.profiling.generate import _stream
from edgeslm.profiling.profile import read_result
from edgeslm.profiling.remote import answer_of, resolved
from standin import huge_line, hostile_python

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])
COMMANDS = sorted(set(ANSWERS) - {"token", "error", "resolve", "recipes", "generate"}) + ["probe"]

scalars = st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=30)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) |
                      st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=30)
deep = st.tuples(st.integers(1, 5000), st.sampled_from(["[", '{"a":'])).map(
    lambda t: t[1] * t[0] + ("]" if t[1] == "[" else "}") * t[0])
texts = (st.binary(max_size=3000).map(lambda b: b.decode("utf-8", errors="replace")) | values.map(json.dumps) |
         deep | st.text(max_size=500))


GOOD = {
    "verify": {"ok": False, "files": 2, "bad": [{"path": "model.onnx", "problem": "missing"}], "against": "host build"},
    "stage": {"need": ["model.onnx"], "reused": 1, "reused_bytes": 10, "free_bytes": 1 << 30},
    "status": {"current": "a" * 16, "previous": None, "versions": ["a" * 16], "staging": []},
    "commit": {"committed": "/wd/r/versions/" + "a" * 16, "files": 3},
    "activate": {"current": "versions/" + "a" * 16, "previous": None, "pruned": []},
    "rollback": {"current": "versions/" + "a" * 16, "previous": "versions/" + "b" * 16},
    "break-lock": {"broken": False, "held": False},
    "profile": {"written": "/wd/r/results/x.json", "flags": [], "parity": True},
    "hash": {"/wd/a": "a" * 64, "/wd/b": None},
}


def _only_user_errors(call) -> None:
    try:
        call()
    except UserError as exc:
        assert exc.exit_code == EXIT_USER and "\n" not in str(exc) and len(str(exc)) < 1000, str(exc)


@FAST
@given(command=st.sampled_from(COMMANDS), text=texts, rc=st.sampled_from([0, 0, 1, 137]))
def test_runner_answers(command, text, rc):
    _only_user_errors(lambda: answer_of("pi", command, rc, text, "stderr\x1b[2J line"))


@FAST
@given(command=st.sampled_from(sorted(GOOD)), data=st.data())
def test_good_answers_with_one_part_replaced(command, data):
    good = json.loads(json.dumps(GOOD[command]))
    if isinstance(good, dict) and good:
        key = data.draw(st.sampled_from(sorted(good)))
        good[key] = data.draw(values)
    _only_user_errors(lambda: answer_of("pi", command, 0, json.dumps(good), ""))


@FAST
@given(value=values)
def test_probe_answers(value):
    from edgeslm.contract import PROBE_SCHEMA

    if isinstance(value, dict):
        value = {"schema": PROBE_SCHEMA, "arch": "x86_64", "cpu_model": "c", "os": "o", "python": "3.11",
                 "runtimes": {}, "thermal": {"temperatures_c": {}}, "features": [], **value}
    _only_user_errors(lambda: checked_probe("pi", value))
    _only_user_errors(lambda: answer_of("pi", "probe", 0, json.dumps(value), ""))


@FAST
@given(data=st.binary(max_size=3000) | texts.map(str.encode) | values.map(lambda v: json.dumps(
    {"schema": "edgeslm.profile/1", "started_at": "now", "build": {}, **(v if isinstance(v, dict) else {"x": v})}
).encode()))
def test_profile_results(data):
    _only_user_errors(lambda: read_result("pi", data))


@FAST
@given(text=texts, rc=st.sampled_from([0, 1]))
def test_one_line_answers_resolve_and_recipes(text, rc):
    _only_user_errors(lambda: resolved("pi", "python3", "~/edgeslm", rc, text, ""))
    _only_user_errors(lambda: recipes_answer("pi", text))
    for kind in ("digest", "install", "place", "arch"):
        try:
            line_answer(kind, text)
        except AnswerError:
            pass


class Lines:
    """A channel stand-in for the stream parser: hands out `lines`, then endless `tail` (if any), and counts
    what the parser asked for (never more than its caps)."""

    def __init__(self, lines, tail: str | None = None):
        self.lines, self.tail, self.read = list(lines), tail, 0

    def readline(self, size=-1):
        line = self.lines.pop(0) if self.lines else (self.tail or "")
        line = line if size is None or size < 0 else line[:size]
        self.read += len(line)
        return line


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from tiny import make_decoder_tokenizer

    return make_decoder_tokenizer(tmp_path_factory.mktemp("tok"))


token_lines = st.one_of(
    st.integers(-10, 600).map(lambda t: json.dumps({"token": t})),
    values.map(lambda v: json.dumps({"token": v})),
    values.map(json.dumps), deep, st.text(max_size=200),
    st.builds(lambda ids, ttft: json.dumps({"tokens": ids, "prompt_tokens": 3, "load_ms": 1.0, "ttft_ms": ttft,
                                            "decode_tok_s": None, "runtime": "r", "stopped": False,
                                            "decoding": {"sampling": "greedy"}}),
              st.lists(st.integers(-3, 600), max_size=8), values),
)


@FAST
@given(lines=st.lists(token_lines, max_size=12), limit=st.integers(1, 8))
def test_generate_streams(tok, lines, limit):
    chan = Lines([ln + "\n" for ln in lines])
    try:
        out, _, summary = _stream(chan, tok, ["</s>"], lambda text: None, "pi", limit, 512)
    except UserError as exc:
        assert exc.exit_code == EXIT_USER and "\n" not in str(exc)
    else:
        assert len(out) <= limit and all(0 <= t < 512 for t in out)
        assert summary is None or (len(summary["tokens"]) <= limit and
                                   (summary["ttft_ms"] is None or isinstance(summary["ttft_ms"], (int, float))))


def test_readers_stop_at_their_caps(tok):
    """Nothing is read or parsed past a cap: an endless line, endless chatter, a 200 MB answer."""
    for chan in (Lines([], tail="x" * (1 << 30)), Lines([], tail="chatter\n")):
        with pytest.raises(UserError):
            _stream(chan, tok, [], lambda text: None, "pi", 5, 512)
        assert chan.read <= MAX_STREAM + MAX_LINE + 1
    big = b'{"schema": "edgeslm.profile/1", "x": "' + b"x" * (200 << 20) + b'"}'
    text = big.decode()
    tracemalloc.start()
    t0 = time.monotonic()
    for call in (lambda: read_result("pi", big), lambda: answer_of("pi", "verify", 0, text, "")):
        with pytest.raises(UserError, match="larger than"):
            call()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.monotonic() - t0 < 5 and peak < 1 << 20, peak  # refused before a byte of it was parsed


# -------------------------------------------------------------------- end to end, real sshd
@pytest.mark.slow
def test_a_300_mb_probe_line_is_refused_without_reading_it(tmp_path, inventory):
    python = hostile_python(tmp_path, {"probe": huge_line(300 << 20)})
    t0 = time.monotonic()
    r = cli("devices", "check", "pi", "--devices", inventory(pi={"python": python}))
    assert r.exit_code == EXIT_USER, r.output
    assert r.stderr.strip() == ("error: device pi: runner probe printed more than 1 MiB on stdout (refused without "
                                "reading the rest); is the device's runner intact?")
    assert time.monotonic() - t0 < 20


def _deployed(tmp_path, inventory, tiny_builds):
    deploy(tiny_builds["v1"], "pi", device(inventory(pi={})), log=lambda m: None)


WRITE = ("o = args[args.index('--out') + 1]\nos.makedirs(os.path.dirname(o), exist_ok=True)\n{write}\n"
         "print(json.dumps({{'written': o, 'flags': [], 'parity': True}}))\n")


@pytest.mark.slow
def test_a_400_mb_profile_result_is_refused_without_downloading_it(tmp_path, inventory, tiny_builds):
    _deployed(tmp_path, inventory, tiny_builds)
    write = "with open(o, 'wb') as f:\n    f.truncate(400 << 20)"  # sparse on the device
    python = hostile_python(tmp_path, {"profile": WRITE.format(write=write)})
    out = tmp_path / "out"
    t0 = time.monotonic()
    r = cli("profile", "-d", "pi", "--devices", inventory(pi={"python": python}), "-o", out)
    assert r.exit_code == EXIT_USER, r.output
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: device pi: ") and errors[0].endswith(
        "-onnx.json is larger than the 64 MiB edgeslm accepts for it (400 MiB); not downloaded"), r.stderr
    assert time.monotonic() - t0 < 30
    assert not [p for p in out.rglob("*") if p.is_file()]


@pytest.mark.slow
@pytest.mark.parametrize("result, why", [
    ('{"schema": "edgeslm.profile/1", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested deeper than 64 levels"),
    ('{"schema": "edgeslm.profile/1"}', "started_at is missing"),
    ("\xff\xfe not text", "not valid JSON|not UTF-8"),
])
def test_a_result_that_cannot_be_read_is_never_stored(tmp_path, inventory, tiny_builds, result, why):
    """A deeply nested result once raised RecursionError past the profile step, stayed under profiles/ and
    made every later `report` of the build exit 70."""
    _deployed(tmp_path, inventory, tiny_builds)
    write = f"open(o, 'w').write({result!r})"
    python = hostile_python(tmp_path, {"profile": WRITE.format(write=write)})
    out = tmp_path / "out"
    r = cli("profile", "-d", "pi", "--devices", inventory(pi={"python": python}), "-o", out)
    assert r.exit_code == EXIT_USER, r.output
    import re

    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and re.search(rf"^error: device pi: the runner's profile result is malformed \(.*({why}).*\); "
                                          r"is the device's runner intact\? \(nothing was stored\)$", errors[0]), r.stderr
    assert not [p for p in out.rglob("*") if p.is_file()]
    assert os.path.isdir(tmp_path / "wd-pi")
