"""The deploy lock and version pins, held while the host's heartbeats arrive."""

from __future__ import annotations

import datetime
import json
import os
import re
import secrets
import time

from edgeslm.runner.errors import RunnerError
from edgeslm.runner.facts import read_small
from edgeslm.runner.store import link_version, pin_path, checked_version, model_dir


# A deploy holds an exclusive flock on <model>/.deploy.lock; a profile holds a shared flock on
# <model>/.pins/<version> (prune skips pinned versions). Either is held by a `hold` process that the
# host keeps alive with heartbeat lines on its stdin: it exits (and the kernel drops the flock) when
# stdin closes or no heartbeat came for EXPIRE seconds, so a link that went silent frees the device
# even while sshd keeps the session. The lock file says who holds it, since when, last heartbeat, and
# the hold's token (random, answered to the host): stage, commit, activate and rollback get it back
# (--lock) and change nothing unless that hold still holds the lock (`guard`), so a deploy whose lock
# expired under it cannot touch what the next deploy is doing.
TOKEN_RE = re.compile(r"^[0-9a-f]{32}$")


def _now() -> float:
    return time.time()


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).isoformat(timespec="seconds")


def _lock_info(path: str) -> dict:
    return _parse_info(read_small(path))


def _parse_info(text: str) -> dict:
    try:
        info = json.loads(text)
        if isinstance(info, dict):
            return info
    except ValueError:
        pass
    m = re.match(r"pid (\d+) since (\S+)", text)  # written by runners before heartbeats
    if m:
        try:
            t = datetime.datetime.fromisoformat(m.group(2)).timestamp()
        except ValueError:
            t = 0.0
        return {"pid": int(m.group(1)), "since": t, "heartbeat": t, "expire": 0, "owner": "unknown host"}
    return {}


def _public(info: dict) -> dict:
    """The lock record as another host may see it (without the holder's token)."""
    return {k: v for k, v in info.items() if k != "token"}


def _describe(info: dict) -> str:
    if not info:
        return "holder unknown"
    age = _now() - float(info.get("heartbeat") or 0)
    return (f"held by {info.get('owner', 'unknown host')} (device pid {info.get('pid')}) since "
            f"{_iso(float(info.get('since') or 0))}, last heartbeat {age:.0f}s ago")


def _stale(info: dict) -> bool:
    return bool(info) and _now() - float(info.get("heartbeat") or 0) > float(info.get("expire") or 0)


def _write_info(fd: int, info: dict) -> None:
    """One write of a fixed length (JSON padded with spaces), so a reader never sees half a record."""
    data = json.dumps(info).encode()
    data += b" " * max(0, 1024 - len(data))
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))


def acquire(path: str, mode: int, wait: float):
    """An open fd holding flock `mode` on `path` (created), waiting up to `wait` seconds; None when not got."""
    import fcntl

    os.makedirs(os.path.dirname(path), exist_ok=True)
    deadline = _now() + max(0.0, wait)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            st = os.stat(path)  # the file may have been unlinked (pruned) while we waited
            if (st.st_ino, st.st_dev) == (os.fstat(fd).st_ino, os.fstat(fd).st_dev):
                return fd
        except OSError:
            pass
        os.close(fd)
        if _now() >= deadline:
            return None
        time.sleep(0.2)


def hold(workdir: str, recipe: str, pin: str | None, owner: str, expire: float, wait: float) -> int:
    """Hold the deploy lock (or, with PIN, a pin on a version) while heartbeats arrive on stdin."""
    import fcntl
    import select

    mdir = model_dir(workdir, recipe)
    os.makedirs(mdir, exist_ok=True)
    if pin is None:
        path = os.path.join(mdir, ".deploy.lock")
        fd = acquire(path, fcntl.LOCK_EX, wait)
        if fd is None:
            info = _lock_info(path)
            hint = ("; it looks stale: `edgeslm deploy --break-lock` frees it" if _stale(info) else "")
            print(json.dumps({"error": f"another deploy is in progress on this device ({_describe(info)}){hint}",
                              "holder": _public(info)}), flush=True)
            return 1
        since = _now()
        token = secrets.token_hex(16)
        info = {"owner": owner, "pid": os.getpid(), "since": since, "heartbeat": since, "expire": expire,
                "token": token}
        _write_info(fd, info)
        answer = {"locked": path, "token": token, "holder": _public(info)}
    else:
        deadline = _now() + max(wait, 30.0)
        while True:
            version = link_version(mdir, "current") if pin == "current" else checked_version(pin)
            if not version:
                print(json.dumps({"error": f"nothing deployed in {mdir}"}), flush=True)
                return 1
            fd = acquire(pin_path(mdir, version), fcntl.LOCK_SH, max(0.0, deadline - _now()))
            if fd is None:
                print(json.dumps({"error": f"cannot pin version {version} in {mdir}"}), flush=True)
                return 1
            if os.path.isfile(os.path.join(mdir, "versions", version, "manifest.json")):
                break
            os.close(fd)  # pruned between resolving and pinning: resolve again
            if pin != "current" or _now() >= deadline:
                print(json.dumps({"error": f"version {version} is no longer on the device"}), flush=True)
                return 1
        info = None
        answer = {"pinned": version}
    print(json.dumps(answer), flush=True)
    last = _now()
    while True:
        try:
            ready, _, _ = select.select([0], [], [], max(0.05, min(1.0, expire / 4)))
        except (OSError, ValueError, KeyboardInterrupt):
            return 0
        if ready:
            try:
                data = os.read(0, 4096)
            except OSError:
                data = b""
            if not data:
                return 0  # the host closed the session (or it dropped): release
            last = _now()
            if info is not None:
                info["heartbeat"] = last
                _write_info(fd, info)
        elif _now() - last > expire:
            return 3  # no heartbeat: the host is gone or its link went silent; release


def guard(token):
    """The check a command that changes a model folder under the deploy lock runs (with that folder) before
    each change: RunnerError unless the hold whose answer carried TOKEN holds the lock right now: the lock
    file records that token, and the flock is held (this process cannot take it), so that hold process is
    alive and has not let go (its host vanished, or its heartbeats stopped for its expiry). The token is
    checked with the folder (so a hostile name is refused as such first)."""

    def check(mdir: str) -> None:
        if token is None:
            raise RunnerError("refusing to change the model folder without --lock TOKEN (the deploy lock's token, "
                              "from `hold`)")
        if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
            raise RunnerError(f"refusing --lock {str(token)[:40]!r}: not a lock token (32 hex digits from `hold`)")
        held, info = _holder(os.path.join(mdir, ".deploy.lock"))
        if held and info.get("token") == token:
            return
        now = f"now {_describe(info)}" if held else "no one holds it now"
        raise RunnerError(f"the deploy lock is no longer this deploy's ({now}; no heartbeat came within its expiry, "
                          "or it was broken); nothing was changed: deploy again")

    return check


def _holder(path: str) -> tuple:
    """(whether some process holds the flock on PATH, the record in that file)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False, {}
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = False  # nobody held it (released again when fd closes)
        except OSError:
            held = True
        return held, _parse_info(os.pread(fd, 1 << 16, 0).decode(errors="replace").strip())
    finally:
        os.close(fd)


def break_lock(workdir: str, recipe: str) -> dict:
    """Free the deploy lock only when its holder is gone or stale (no heartbeat within its expiry) and
    is this runner's `hold` process for this folder; then stop that process."""
    import fcntl
    import signal

    mdir = model_dir(workdir, recipe)
    path = os.path.join(mdir, ".deploy.lock")
    if not os.path.exists(path):
        return {"broken": False, "held": False}
    fd = acquire(path, fcntl.LOCK_EX, 0)
    if fd is not None:
        os.close(fd)
        return {"broken": False, "held": False}
    info = _lock_info(path)
    if not _stale(info):
        raise RunnerError(f"the deploy lock is {_describe(info)}, within its {info.get('expire')}s expiry: "
                          "that deploy is alive; not breaking it")
    pid = info.get("pid")
    cmdline = _read_bytes(f"/proc/{pid}/cmdline").split(b"\0") if isinstance(pid, int) else []
    args = [a.decode(errors="replace") for a in cmdline]
    paths = {os.path.realpath(os.path.expanduser(a)) for a in args if a[:1] in ("/", "~")}
    root = os.path.dirname(mdir)
    ours = (any(os.path.basename(a).startswith(("edgeslm-runner", "device_runner")) for a in args)
            and any(a in ("hold", "hold-lock") for a in args)
            and (mdir in paths or (root in paths and recipe in args)))
    if not ours:
        raise RunnerError(f"the deploy lock is {_describe(info)}, but process {pid} is not this runner's lock "
                          f"holder for {recipe} ({' '.join(args)[:120] or 'no such process'}); not killing it")
    for sig, grace in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except OSError:
            pass
        fd = acquire(path, fcntl.LOCK_EX, grace)
        if fd is not None:
            os.close(fd)
            return {"broken": True, "held": True, "holder": _public(info), "signal": int(sig)}
    raise RunnerError(f"could not free the deploy lock ({_describe(info)})")


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""
