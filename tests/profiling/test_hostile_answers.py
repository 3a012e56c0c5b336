"""A device whose runner answers garbage: every answer is checked against its command's shape, so `[]`, `{}`
or a wrong type is one line naming the device and the command (exit 2), the device's current model stays,
and `edgeslm run`'s stream is refused past what was asked for. Real sshd; the real runner does the work,
except for the one command whose answer a stand-in replaces (tests/standin.py)."""

from __future__ import annotations

import os
import time

import pytest

from deployhelp import cli, device
from edgeslm.errors import EXIT_USER
from edgeslm.profiling.deploy import deploy
from edgeslm.transport import DeviceError
from standin import hostile_python

pytestmark = pytest.mark.slow
QUIET = {"log": lambda m: None}


def _one_error_line(r, pattern: str) -> None:
    """One error line (progress lines aside) matching `pattern`; exit 2, no traceback."""
    import re

    assert r.exit_code == EXIT_USER, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and re.search(pattern, lines[0]), r.stderr
    assert "internal error" not in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("answer", ["[]", "{}"])
@pytest.mark.parametrize("command, part", [
    ("probe", r"not a JSON object|schema None"),
    ("verify", r"not a JSON object|ok is missing"),
    ("stage", r"not a JSON object|need is missing"),
    ("activate", r"not a JSON object|current is missing"),
])
def test_garbage_answer_to_a_deploy_step_is_one_line_and_the_model_stays(tmp_path, inventory, tiny_builds,
                                                                         command, part, answer):
    wd = tmp_path / "wd-pi"
    first = deploy(tiny_builds["v1"], "pi", device(inventory(pi={})), **QUIET)
    python = hostile_python(tmp_path, {command: f"print({answer!r})"})
    inv = inventory(pi={"python": python})
    r = cli("deploy", tiny_builds["v2"], "-d", "pi", "--devices", inv)
    _one_error_line(r, rf"^error: device pi: {command} answered something malformed \(({part}).*\); is the "
                       r"device's runner intact\?$")
    assert os.readlink(wd / "tinydeploy" / "current") == f"versions/{first.version}"


@pytest.mark.parametrize("answer, part", [
    ("[]", "not a JSON object"), ("{}", "current is missing"),
    ('{"current": null, "previous": "../../../etc", "versions": [], "staging": []}', "previous is not a version"),
])
def test_garbage_status_answer_to_rollback(tmp_path, inventory, tiny_builds, answer, part):
    deploy(tiny_builds["v1"], "pi", device(inventory(pi={})), **QUIET)
    deploy(tiny_builds["v2"], "pi", device(inventory(pi={})), **QUIET)
    before = os.readlink(tmp_path / "wd-pi" / "tinydeploy" / "current")
    inv = inventory(pi={"python": hostile_python(tmp_path, {"status": f"print({answer!r})"})})
    r = cli("rollback", "-d", "pi", "--devices", inv)
    _one_error_line(r, rf"^error: device pi: status answered something malformed \({part}")
    assert os.readlink(tmp_path / "wd-pi" / "tinydeploy" / "current") == before


def test_garbage_list_of_deployed_recipes(tmp_path, inventory, tiny_builds):
    deploy(tiny_builds["v1"], "pi", device(inventory(pi={})), **QUIET)
    inv = inventory(pi={"python": hostile_python(tmp_path, {"code:os.listdir": "print('{\"tinydeploy\": 1}')"})})
    r = cli("profile", "-d", "pi", "--devices", inv, "-o", tmp_path / "out")
    _one_error_line(r, r"^error: device pi: the list of deployed recipes answered something malformed "
                       r"\(the answer is not a list\)")


def test_a_profile_answer_that_names_another_file_is_refused(tmp_path, inventory, tiny_builds):
    """The runner says where it wrote the result; it must be where it was asked to (the host picks that)."""
    deploy(tiny_builds["v1"], "pi", device(inventory(pi={})), **QUIET)
    python = hostile_python(tmp_path, {"profile": "print(json.dumps({'written': '/etc/passwd', 'flags': [], "
                                                  "'parity': True}))"})
    r = cli("profile", "-d", "pi", "--devices", inventory(pi={"python": python}), "-o", tmp_path / "out")
    _one_error_line(r, r"^error: device pi: profile answered something malformed \(written names '/etc/passwd'")
    assert not list((tmp_path / "out").rglob("*.json"))


# ------------------------------------------------------------------------------------ edgeslm run
@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from tiny import make_decoder_tokenizer

    return make_decoder_tokenizer(tmp_path_factory.mktemp("tok"))


def _stream(inventory, tok, code: str, limit: int = 5):
    """generate's stream parser reading what `code` prints, over the real sshd (a spawned command, as
    `edgeslm run` spawns the runner)."""
    import sys

    from edgeslm.profiling.generate import _stream as stream
    from edgeslm.transport import connect

    conn = connect("pi", device(inventory(pi={})))
    shown = []
    try:
        chan = conn.spawn([sys.executable, "-c", "import json, sys\nout = sys.stdout\n" + code], timeout=30)
        try:
            return stream(chan, tok, [], shown.append, "pi", limit, 512), shown
        finally:
            chan.close()
    finally:
        conn.close()


TOKENS = "for t in {ids!r}:\n    print(json.dumps({{'token': t}}), flush=True)\n"
SUMMARY = ("print(json.dumps({{'tokens': {ids!r}, 'prompt_tokens': 3, 'load_ms': 1.0, 'ttft_ms': {ttft}, "
           "'decode_tok_s': 5.0, 'runtime': 'onnxruntime', 'stopped': False, 'decoding': {{'sampling': 'greedy'}}}}))\n")


def test_run_stream_of_a_well_behaved_device(inventory, tokenizer):
    ids = tokenizer("The cat sat on the mat.")["input_ids"]
    (out, shown, summary), pieces = _stream(inventory, tokenizer, TOKENS.format(ids=ids) +
                                            SUMMARY.format(ids=ids, ttft=2.5), limit=len(ids))
    assert out == ids and summary["ttft_ms"] == 2.5 and "".join(pieces) == shown == tokenizer.decode(ids)


@pytest.mark.parametrize("code, why", [
    (TOKENS.format(ids=list(range(50))), r"more tokens than the 5 asked for"),
    (TOKENS.format(ids=[72, -5]), r"token -5 is outside the vocabulary \[0, 512\)"),
    ("print('{\"token\": 1e20}')", r"token is not an integer"),
    ("print('{\"token\": 100000000000000000000}')", r"token 100000000000000000000 is outside the vocabulary"),
    ("print('{\"token\": \"7\"}')", r"token is not an integer"),
    (SUMMARY.format(ids=[1, 2], ttft="'fast'"), r"ttft_ms is not a number"),
    (SUMMARY.format(ids=list(range(9)), ttft=1.0), r"tokens holds 9 ids; 5 were asked for"),
    ("print('[1, 2]')\nprint('{}')", r"tokens is missing"),  # a line that is not an object is chatter
    (SUMMARY.format(ids=[1, -2], ttft=1.0), r"tokens\[1\] -2 is outside the vocabulary"),
    ("print('{}')", r"tokens is missing"),
    ("print('{\"tokens\": [1, 2]}')", r"prompt_tokens is missing"),
    ("print('{\"a\":' * 10000)", r"nested deeper than 64 levels"),
    ("print('{\"token\": 1')", r"not valid JSON"),
])
def test_run_stream_of_a_hostile_device_is_one_line(inventory, tokenizer, code, why):
    with pytest.raises(DeviceError, match=rf"^device pi: generate answered something malformed \(.*{why}"):
        _stream(inventory, tokenizer, code)


def test_run_stream_lines_and_the_whole_stream_are_capped(inventory, tokenizer):
    """A 300 MB line is refused after its first 64 KiB; endless chatter after 16 MiB in all."""
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match=r"a line longer than 64 KiB"):
        _stream(inventory, tokenizer, "block = 'x' * (1 << 20)\nout.write('{\"token\": \"')\n"
                                     "for _ in range(300):\n    out.write(block)\n")
    with pytest.raises(DeviceError, match=r"more than 16 MiB in all"):
        _stream(inventory, tokenizer, "line = 'log ' * 1000 + '\\n'\nwhile True:\n    out.write(line)\n")
    assert time.monotonic() - t0 < 60


def test_devices_check_shows_what_the_device_says_without_its_terminal_escapes(tmp_path, inventory):
    """A probe answer is shown, never interpreted: an escape sequence in the CPU name or OS (which would
    rewrite the user's terminal) comes out as '?'."""
    code = ("import json, runpy, io, contextlib\n"
            "buf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n"
            "    from edgeslm.runner.facts import probe\n"
            "p = probe(args[args.index('--workdir') + 1] if '--workdir' in args else None)\n"
            "p['cpu_model'] = 'Cortex\\x1b]0;owned\\x07-A72\\x1b[2J'\n"
            "p['os'] = 'Linux\\x1b[31m red'\n"
            "p['runtimes']['onnxruntime\\x1b[1m'] = '1.0\\x1b[0m'\n"
            "out.write(json.dumps(p) + '\\n')\n")
    python = hostile_python(tmp_path, {"probe": "import sys; sys.path.insert(0, sys.argv[1])\n" + code})
    r = cli("devices", "check", "pi", "--devices", inventory(pi={"python": python}))
    assert "\x1b" not in r.output and "\x07" not in r.output, r.output
    assert "Cortex?]0;owned?-A72?[2J" in r.output and "Linux?[31m red" in r.output, r.output
