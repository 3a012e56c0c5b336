"""What each runner command answers (contract.answers): the real runner's answers pass their shapes, and an
answer that is not its command's ([], {}, a wrong type, a huge or deep document) is one DeviceError line
naming the device, the command and the part, before anything reads it."""

from __future__ import annotations

import hashlib
import json

import pytest

from edgeslm.contract.answers import ANSWERS, AnswerError, check, line_answer, token_id
from edgeslm.errors import UserError
from edgeslm.profiling.remote import answer_of
from edgeslm.transport import DeviceError


def _answer(command: str, value, rc: int = 0) -> dict:
    return answer_of("pi", command, rc, json.dumps(value) + "\n", "")


def _version_folder(folder, content: bytes = b"weights") -> None:
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(content)
    entry = {"path": "model.onnx", "sha256": hashlib.sha256(content).hexdigest(), "size": len(content)}
    (folder / "manifest.json").write_text(json.dumps({"files": [entry]}))


def test_the_runners_own_answers_pass_their_shapes(tmp_path):
    """The answers of the runner's functions (as runner/main.py prints them) are what the host accepts."""
    from edgeslm.runner.facts import probe
    from edgeslm.runner.locks import break_lock
    from edgeslm.runner.main import _write_result
    from edgeslm.runner.store import activate, commit, hash_files, rollback, stage, status, verify_dir

    wd, recipe = tmp_path / "wd", "tiny"
    mdir = wd / recipe
    unlocked = lambda folder: None  # noqa: E731 - the lock's own checks are tests/profiling/test_lock.py's
    v1, v2 = "a" * 16, "b" * 16
    answers = [("probe", probe(str(wd))), ("hash", hash_files([str(tmp_path / "absent")])),
               ("verify", verify_dir(str(tmp_path / "absent")))]
    for version, content in ((v1, b"one"), (v2, b"two")):
        _version_folder(mdir / f".staging-{version}", content)
        (mdir / f".staging-{version}" / "model.onnx").unlink()  # must be sent
        answers.append(("stage", stage(str(wd), recipe, version, unlocked)))
        (mdir / f".staging-{version}" / "model.onnx").write_bytes(content)
        answers.append(("commit", commit(str(wd), recipe, version, None, unlocked)))
        answers.append(("activate", activate(str(wd), recipe, version, unlocked)))
    answers += [("verify", verify_dir(str(mdir / "versions" / v2))), ("status", status(str(wd), recipe)),
                ("rollback", rollback(str(wd), recipe, v1, None, unlocked)), ("break-lock", break_lock(str(wd), recipe)),
                ("hash", hash_files([str(mdir / "versions" / v1 / "model.onnx")]))]
    result = {"flags": [], "parity": {"passed": True}}
    answers.append(("profile", _write_result(result, str(mdir / "results" / "r.json"), str(wd))))
    for command, answer in answers:
        assert _answer(command, answer) == json.loads(json.dumps(answer)), command
    summary = {"tokens": [3, 4], "prompt_tokens": 5, "load_ms": 1.5, "ttft_ms": 2.0, "decode_tok_s": None,
               "runtime": "onnxruntime", "stopped": False, "decoding": {"sampling": "greedy"}}
    assert check("generate", summary) == summary  # runner/generation.generate's summary
    sampled = {**summary, "decoding": {"sampling": "sample", "temperature": 0.7, "top_k": 40, "top_p": 0.9, "seed": 1}}
    assert check("generate", sampled) == sampled


COMMANDS = ["probe", "hash", "verify", "status", "stage", "commit", "activate", "rollback", "break-lock", "profile"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("value", [[], {}, "text", 7, None, [{}]])
def test_garbage_answers_are_one_line_naming_the_command(command, value):
    if command == "hash" and value == {}:
        return  # no files asked about: an empty map is the right answer
    with pytest.raises(DeviceError) as info:
        _answer(command, value)
    msg = str(info.value)
    assert msg.startswith(f"device pi: {command} answered something malformed (")
    assert msg.endswith("is the device's runner intact?") and "\n" not in msg
    assert isinstance(info.value, UserError) and info.value.exit_code == 2


@pytest.mark.parametrize("command, value, part", [
    ("verify", {"ok": "yes", "files": 1, "bad": []}, "ok is not true or false"),
    ("verify", {"ok": False, "files": 1, "bad": [{"path": 3, "problem": "x"}]}, r"bad\[0\]\.path is not a string"),
    ("verify", {"ok": False, "files": 1, "bad": [], "actual": {"a": "zz"}}, r"actual\['a'\] is not a sha256"),
    ("stage", {"need": ["a"], "reused": 0, "free_bytes": "lots"}, "free_bytes is not an integer"),
    ("stage", {"need": "a", "reused": 0, "free_bytes": 1}, "need is not a list"),
    ("stage", {"need": [], "reused": True, "free_bytes": 1}, "reused is not an integer"),
    ("status", {"current": "../../etc", "previous": None, "versions": [], "staging": []}, "current is not a version"),
    ("activate", {"current": "versions/x", "previous": None, "pruned": []}, "current is not versions/"),
    ("break-lock", {"broken": 1, "held": True}, "broken is not true or false"),
    ("profile", {"written": "relative.json", "flags": [], "parity": True}, "written is not an absolute path"),
    ("profile", {"written": "/r.json", "flags": [1], "parity": True}, r"flags\[0\] is not a string"),
    ("hash", {"/a": 5}, r"\['/a'\] is not a string"),
    ("probe", {"schema": "edgeslm.probe/1"}, "arch is missing"),
])
def test_wrong_types_name_the_part(command, value, part):
    with pytest.raises(DeviceError, match=rf"^device pi: {command} answered something malformed \({part}"):
        _answer(command, value)


def test_size_depth_and_encoding_are_capped_before_anything_reads_the_answer():
    huge = '{"a": "' + "x" * (2 << 20) + '"}'
    with pytest.raises(DeviceError, match=r"verify answered something malformed \(the answer is larger than 1 MiB"):
        answer_of("pi", "verify", 0, huge, "")
    deep = "{" + '"a":{' * 100_000 + "}" * 100_001
    with pytest.raises(DeviceError, match=r"nested deeper than 64 levels"):
        answer_of("pi", "status", 0, deep, "")
    with pytest.raises(DeviceError, match=r"not valid JSON"):
        answer_of("pi", "stage", 0, '{"need": [', "")
    with pytest.raises(DeviceError, match=r"no JSON answer"):
        answer_of("pi", "stage", 0, "", "")


def test_a_refusal_and_a_crash_are_failures_with_the_devices_words_made_printable():
    with pytest.raises(DeviceError, match=r"^device pi: stage failed: refusing \?\[31mversion 'x'$"):
        answer_of("pi", "stage", 1, json.dumps({"error": "refusing \x1b[31mversion\n'x'"}), "")
    with pytest.raises(DeviceError, match=r"^device pi: verify failed: MemoryError$"):
        answer_of("pi", "verify", 1, "", "Traceback (most recent call last):\n  ...\nMemoryError\n")
    with pytest.raises(DeviceError, match=r"killed by SIGKILL"):
        answer_of("pi", "verify", 137, "", "")


@pytest.mark.parametrize("kind, good, bad", [
    ("digest", ["a" * 64, "missing\n"], ["A" * 64, "a" * 63, "missing\nmissing", "", "1"]),
    ("install", ["1\n", "0"], ["2", "yes", "1\n1"]),
    ("place", ["1"], ["11"]),
    ("arch", ["x86_64\n", "aarch64", "armv7l"], ["x86 64", "../x", "a" * 65, "\x1b[2J"]),
])
def test_one_line_answers(kind, good, bad):
    for text in good:
        assert line_answer(kind, text) == text.strip()
    for text in bad:
        with pytest.raises(AnswerError):
            line_answer(kind, text)


def test_token_ids():
    assert token_id(0, 512) == 0 and token_id(511, 512) == 511
    for value, why in ((-5, "outside"), (512, "outside"), (10 ** 20, "outside"), (1e20, "not an integer"),
                       (True, "not an integer"), ("3", "not an integer"), (None, "not an integer")):
        with pytest.raises(AnswerError, match=why):
            token_id(value, 512)


def test_every_command_has_a_shape():
    from edgeslm.runner import main

    documented = {line.split()[2] for line in main.__doc__.splitlines() if line.strip().startswith("python3 runner")}
    assert documented - {"hold"} <= set(ANSWERS) | {"probe"}, documented - set(ANSWERS)


@pytest.mark.parametrize("edit, part", [
    (lambda p: p["thermal"].update(temperatures_c={"cpu": "hot"}), r"thermal\.temperatures_c\['cpu'\] is not a number"),
    (lambda p: p["thermal"].pop("governor"), r"thermal\.governor is missing"),
    (lambda p: p.update(features="avx2"), "features is not a list"),
    (lambda p: p.update(runtimes={"numpy": 2}), r"runtimes\['numpy'\] is not a string"),
    (lambda p: p.update(disk={"free_bytes": "1e9"}), r"disk\.free_bytes is not an integer"),
    (lambda p: p.update(cores="4"), "cores is not an integer"),
])
def test_probe_parts_the_host_reads_are_typed(edit, part):
    """What `devices check` prints and `deploy` compares (temperatures formatted as numbers, free disk)."""
    from edgeslm.runner.facts import probe

    answer = probe(None)
    edit(answer)
    with pytest.raises(DeviceError, match=rf"^device pi: probe answered something malformed \({part}"):
        _answer("probe", answer)
