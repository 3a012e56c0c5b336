"""The deploy lock on a slow link, a commit that finds its lock lost, and lock holders that answer
something else than a lock. Real sshd, a real rate-limited TCP proxy, real runner processes."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from deployhelp import cli, device, hold_lock, release, run_runner, variant, current_version, model_folder
from edgeslm.errors import EXIT_USER
from edgeslm.profiling.deploy import deploy
from edgeslm.profiling.remote import RemoteRunner
from sshd import CuttingProxy, SlowProxy

pytestmark = pytest.mark.slow
QUIET = {"log": lambda m: None}

_dev = device
_model = model_folder
_current = current_version


def _key(sshd) -> str:
    return " ".join(sshd.host_pub.split()[:2])


class LockWatch:
    """Samples the device's lock file: who holds it and how old its last heartbeat is."""

    def __init__(self, path: Path):
        self.path, self.samples, self.stop = path, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.wait(0.05):
            try:
                info = json.loads(self.path.read_text())
            except (OSError, ValueError):
                continue
            self.samples.append((info.get("owner"), info.get("pid"), time.time() - float(info["heartbeat"])))

    def ages(self, pid) -> list[float]:
        return [age for _, p, age in self.samples if p == pid]

    def close(self):
        self.stop.set()
        self.thread.join(5)


# ----------------------------------------------------------------------------------- a slow link
def test_a_slow_upload_keeps_its_lock_and_a_second_deploy_waits_for_it(tmp_path, inventory, tiny_builds, sshd):
    """~100 KB/s for every connection together; an upload of ~0.8 MB takes ~8 s with lock_expire = 2: the
    holder's heartbeats (one every 0.4 s) must not wait behind the upload's file data."""
    wd = tmp_path / "wd-pi"
    deploy(tiny_builds["v1"], "pi", _dev(inventory(pi={})), **QUIET)  # runner and v1 there (fast link)
    big = variant(tiny_builds["v1"], tmp_path / "big", "a", grow=800_000)
    proxy = SlowProxy(sshd.port, rate=100_000)
    known = tmp_path / "proxy_known_hosts"
    known.write_text(f"[127.0.0.1]:{proxy.port} {_key(sshd)}\n")
    slow = _dev(inventory(pi={"port": proxy.port, "known_hosts": known, "lock_expire": 2, "lock_wait": 60,
                              "io_timeout": 10}))
    watch = LockWatch(_model(wd) / ".deploy.lock")
    box, order = {}, []

    def go(key, build):
        try:
            box[key] = deploy(build, "pi", slow, **QUIET)
            order.append(key)
        except Exception as exc:  # noqa: BLE001 - inspected below
            box[key] = exc

    first = threading.Thread(target=go, args=("first", big), daemon=True)
    second = threading.Thread(target=go, args=("second", tiny_builds["v2"]), daemon=True)
    t0 = time.monotonic()
    try:
        first.start()
        staging = _model(wd) / f".staging-{'a' * 16}"
        while not (staging / "model.onnx").exists() and first.is_alive() and time.monotonic() - t0 < 60:
            time.sleep(0.05)
        holder = json.loads((_model(wd) / ".deploy.lock").read_text())["pid"]
        second.start()  # while the first uploads: it waits for the lock (lock_wait = 60)
        first.join(90)
        second.join(90)
        watch.close()
        ages = watch.ages(holder)
        print(f"heartbeat age during the slow upload: max {max(ages):.2f}s over {len(ages)} samples, "
              f"{time.monotonic() - t0:.1f}s in all")
        assert not first.is_alive() and not second.is_alive()
        assert not isinstance(box["first"], Exception), box["first"]
        assert not isinstance(box["second"], Exception), box["second"]
        assert box["first"].sent_bytes >= 800_000 and order == ["first", "second"], order
        assert max(ages) < 2, f"the first deploy's heartbeats arrived late (max age {max(ages):.1f}s)"
        # the last deploy is the active one, the first the previous; nothing was left half-done
        assert _current(wd) == f"versions/{box['second'].version}"
        assert os.readlink(_model(wd) / "previous") == f"versions/{box['first'].version}"
        assert box["second"].previous == f"versions/{box['first'].version}"
        assert not list(_model(wd).glob(".staging-*")) and not list(_model(wd).glob(".trash-*"))
    finally:
        watch.close()
        proxy.close()


def test_the_holder_has_a_connection_of_its_own_that_asks_and_records_nothing(tmp_path, inventory, tiny_builds,
                                                                               sshd):
    counter = CuttingProxy(sshd.port, limit=1 << 40)  # never cuts: counts connections
    known = tmp_path / "new_known_hosts"
    known.write_text("")
    try:
        dev = _dev(inventory(pi={"port": counter.port, "known_hosts": known}))
        r = deploy(tiny_builds["v1"], "pi", dev, accept_new_host_key=True, **QUIET)
        assert r.sent_files > 0 and counter.connections == 2
        assert known.read_text() == f"[127.0.0.1]:{counter.port} {_key(sshd)}\n"  # recorded once
    finally:
        counter.close()


# ------------------------------------------------------------------------------- a lock lost midway
def _end_holder(wd: Path) -> int:
    """Kill the device's lock holder (as its own expiry would end it) and wait until the flock is free."""
    import fcntl

    path = _model(wd) / ".deploy.lock"
    pid = json.loads(path.read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    with open(path) as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return pid
            except OSError:
                assert time.monotonic() < deadline, "the killed holder still holds the lock"
                time.sleep(0.05)


@pytest.mark.parametrize("verb,then", [("commit", "free"), ("commit", "taken"), ("activate", "free"),
                                       ("rollback", "taken")])
def test_a_deploy_that_lost_its_lock_changes_nothing(tmp_path, inventory, tiny_builds, monkeypatch, verb, then):
    """The device's holder ends between the upload and `verb` (its heartbeats stopped for its expiry, or it
    was broken); with `taken`, another deploy holds the lock by then. The device refuses `verb` in one line."""
    inv = inventory(pi={})
    wd = tmp_path / "wd-pi"
    first = deploy(tiny_builds["v1"], "pi", _dev(inv), **QUIET)
    if verb == "rollback":
        deploy(variant(tiny_builds["v1"], tmp_path / "c", "c"), "pi", _dev(inv), **QUIET)
    before = _snapshot(_model(wd))
    model, other = RemoteRunner.model, []

    def interrupted(self, v, *args, **kw):
        if v == verb:
            _end_holder(wd)
            if then == "taken":
                other.append(hold_lock(sys.executable, wd, owner="ci@other (edgeslm pid 9)")[0])
        return model(self, v, *args, **kw)

    monkeypatch.setattr(RemoteRunner, "model", interrupted)
    build = variant(tiny_builds["v1"], tmp_path / "b", "b", grow=1000)
    try:
        args = ("rollback", "-d", "pi") if verb == "rollback" else ("deploy", build, "-d", "pi")
        r = cli(*args, "--devices", inv)
    finally:
        for p in other:
            release(p)
    now = (r"now held by ci@other \(edgeslm pid 9\) \(device pid \d+\) since \S+, last heartbeat \d+s ago"
           if then == "taken" else "no one holds it now")
    errors = [ln for ln in r.stderr.splitlines() if not ln.startswith("  ")]  # progress lines are indented
    assert r.exit_code == EXIT_USER and len(errors) == 1, r.output
    assert re.fullmatch(rf"error: device pi: {verb} failed: the deploy lock is no longer this deploy's \({now}; no "
                        r"heartbeat came within its expiry, or it was broken\); nothing was changed: deploy again",
                        errors[0]), errors
    after = _snapshot(_model(wd))
    if verb == "activate":  # committed (a complete version, not active; the next deploy prunes it)
        assert {k: v for k, v in after.items() if not k.startswith(f"versions/{'b' * 16}")} == before
    else:
        assert {k: v for k, v in after.items() if not k.startswith(f".staging-{'b' * 16}")} == before
    assert _current(wd) == before["current"]
    assert os.readlink(_model(wd) / ("previous" if verb == "rollback" else "current")) == f"versions/{first.version}"


def _snapshot(folder: Path) -> dict:
    """Every file, folder and link under `folder` (the lock file and pins aside: they are the locks')."""
    import hashlib

    return {str(p.relative_to(folder)): (os.readlink(p) if p.is_symlink() else
                                         hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(folder.rglob("*")) if p.name != ".deploy.lock" and ".pins" not in p.parts}


def test_the_runner_changes_nothing_without_the_lock_it_names(tmp_path):
    wd, py, version, other = tmp_path / "wd", sys.executable, "ab" * 8, "cd" * 8
    for v in (version, other):
        (_model(wd) / "versions" / v).mkdir(parents=True)
        (_model(wd) / "versions" / v / "manifest.json").write_text('{"files": []}')
    (_model(wd) / "current").symlink_to(f"versions/{other}")
    (_model(wd) / "previous").symlink_to(f"versions/{version}")
    before = _snapshot(_model(wd))
    holder, held = hold_lock(py, wd)
    try:
        assert set(held) == {"locked", "token", "holder"} and "token" not in held["holder"]
        for lock, why in (([], "refusing to change the model folder without --lock TOKEN"),
                          (["--lock", "../x"], "refusing --lock '../x': not a lock token"),
                          (["--lock", "0" * 32], "the deploy lock is no longer this deploy's (now held by "
                                                 "ci@builder (edgeslm pid 42)")):
            for verb in (["stage", version], ["commit", version], ["activate", version], ["rollback"]):
                rc, answer = run_runner(py, verb[0], "--workdir", wd, "tinydeploy", *verb[1:], *lock)
                assert rc == 1 and answer["error"].startswith(why), (verb, lock, answer)
        assert _snapshot(_model(wd)) == before
        rc, answer = run_runner(py, "activate", "--workdir", wd, "tinydeploy", version, "--lock", held["token"])
        assert rc == 0 and answer["current"] == f"versions/{version}", answer
        # another deploy is refused the lock without learning its token
        rc, answer = run_runner(py, "hold", "--workdir", wd, "tinydeploy")
        assert rc == 1 and "another deploy is in progress" in answer["error"] and "token" not in answer["holder"]
    finally:
        release(holder)
    rc, answer = run_runner(py, "rollback", "--workdir", wd, "tinydeploy", "--lock", held["token"])
    assert rc == 1 and answer["error"].startswith("the deploy lock is no longer this deploy's (no one holds it now")
    assert _current(wd) == f"versions/{version}"


# ------------------------------------------------------------------------- holders that answer nonsense
HOSTILE = {
    "empty object": b"{}\n",
    "empty list": b"[]\n",
    "garbage": b"Segmentation fault\n",
    "not UTF-8": b"\xff\xfe{\n",
    "a huge line": b"x" * (8 << 20),  # 8 MiB without an end of line
    "too deep": b"[" * 5000 + b"]" * 5000 + b"\n",
    "a bad token": b'{"locked": "/x", "token": "../../etc/passwd", "holder": {}}\n',
    "a number as error": b'{"error": 5}\n',
    "a bad pin": b'{"pinned": "../../../etc"}\n',
    "nothing": b"",
}
FAKE = """#!{python}
import os, sys
args = sys.argv[1:]
if len(args) > 1 and args[1] == "hold":
    data = open({answer!r}, "rb").read()
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    if data:
        sys.stdin.read()  # held until the host lets go (else: a runner that died without a word)
    sys.exit(0)
os.execv({python!r}, [{python!r}] + args)
"""


def _fake_python(tmp_path: Path) -> tuple[Path, Path]:
    """A device `python` that answers `hold` with the bytes in the returned file and is Python otherwise."""
    answer, fake = tmp_path / "hold-answer", tmp_path / "fake-python"
    fake.write_text(FAKE.format(python=sys.executable, answer=str(answer)))
    fake.chmod(0o755)
    return fake, answer


@pytest.mark.parametrize("command", ["deploy", "profile"])
def test_a_holder_answering_nonsense_is_one_line_and_nothing_happens(tmp_path, inventory, tiny_builds, command):
    wd, out = tmp_path / "wd-pi", tmp_path / "out"
    fake, answer = _fake_python(tmp_path)
    if command == "profile":
        deploy(tiny_builds["v1"], "pi", _dev(inventory(pi={})), **QUIET)
    before = _snapshot(_model(wd)) if command == "profile" else {}
    inv = inventory(pi={"python": str(fake)})
    for what, data in HOSTILE.items():
        if command == "deploy" and what == "a bad pin" or command == "profile" and what == "a bad token":
            continue
        answer.write_bytes(data)
        t0 = time.monotonic()
        args = ("deploy", tiny_builds["v1"]) if command == "deploy" else ("profile", "-o", out)
        r = cli(*args, "-d", "pi", "--devices", inv)
        lines = r.stderr.strip().splitlines()
        assert r.exit_code == EXIT_USER and len(lines) == 1 and r.stdout == "", (what, r.output[:2000])
        assert lines[0].startswith("error: device pi: ") and len(lines[0]) < 500, (what, lines)
        assert "Traceback" not in lines[0] and "internal error" not in lines[0], (what, lines)
        assert time.monotonic() - t0 < 20, what
        assert (_snapshot(_model(wd)) if _model(wd).exists() else {}) == before, what  # nothing uploaded
        assert not out.exists(), what  # nothing measured
