"""The device runner, called through a connector: checked each session, answers in JSON.

Names that become paths on the device (recipe, version) are checked here before they are sent, and the
runner checks them again on its side. Locks and pins are held by a runner process on the device that
this side keeps alive with heartbeats; it gives up by itself when they stop.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import posixpath
import re
import socket
import threading
import uuid
from pathlib import Path

from edgeslm.artifacts.manifest import plain_name
from edgeslm.contract.documents import DocumentError, loads
from edgeslm.errors import UserError
from edgeslm.hashing import sha256_file
from edgeslm.runner.bundle import runner_path
from edgeslm.transport import Connector, DeviceError

RESOLVE = "import os,sys; p=os.path.expanduser(sys.argv[1]); os.makedirs(p, exist_ok=True); print(p)"
DIGEST = ("import hashlib,os,sys; p=sys.argv[1]; print(hashlib.sha256(open(p,'rb').read()).hexdigest() "
          "if os.path.isfile(p) else 'missing')")
INSTALL = ("import hashlib,os,sys; t,p,d=sys.argv[1:4]; ok=hashlib.sha256(open(t,'rb').read()).hexdigest()==d; "
           "os.replace(t,p) if ok else os.remove(t); print(int(ok))")

# a folder uploaded under a temporary name takes its place; when another session placed the same content
# first, the copy is dropped (content-addressed: equal names mean equal files)
# Symlinks (runtimes/ or the folder itself) are refused: nothing is replaced or deleted through them.
PLACE_TREE = ("import os,shutil,sys; t,p,bad=sys.argv[1:4]\n"
              "if os.path.islink(p) or os.path.islink(os.path.dirname(p)): shutil.rmtree(t); print(0); sys.exit()\n"
              "if bad=='1' and os.path.isdir(p): os.rename(p,t+'.damaged'); shutil.rmtree(t+'.damaged')\n"
              "try: os.rename(t,p)\nexcept OSError: shutil.rmtree(t)\nprint(1)")
REMOVE_TREE = "import shutil,sys; shutil.rmtree(sys.argv[1], ignore_errors=True); print(1)"


def check_name(value: str, what: str = "recipe") -> str:
    """A name that becomes a folder on the device or here: plain, or a one-line UserError."""
    try:
        return plain_name(value, what)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def owner() -> str:
    """Who holds a lock, for the message another deploy sees (no secrets: user, host, pid)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"{user}@{socket.gethostname()} (edgeslm pid {os.getpid()})"


class RemoteRunner:
    def __init__(self, conn: Connector, name: str, device):
        self.conn, self.name, self.device = conn, name, device
        self.python = device.python
        self.workdir = self._resolve(device.workdir)
        self.path = self._install()

    # ------------------------------------------------------------------------------ the runner
    def _install(self) -> str:
        """The runner bundle (one zip file, see edgeslm.runner.bundle) on the device, re-checked by sha256
        every session and re-uploaded under a unique temporary name when it is missing or differs."""
        local = runner_path()
        digest = sha256_file(local)
        path = posixpath.join(self.workdir, "runner", local.name)
        if self.python_output(DIGEST, path).strip() == digest:
            return path
        tmp = f"{path}.part-{uuid.uuid4().hex[:12]}"
        self.conn.put(local, tmp)
        if self.python_output(INSTALL, tmp, path, digest).strip() != "1":
            raise DeviceError(f"device {self.name}: the uploaded runner arrived damaged (sha256 differs); "
                              "check the device's disk and try again")
        return path

    def et_runtime(self, arch: str, log=print) -> str:
        """edgeslm's ExecuTorch runtime folder for the device's architecture, under
        <workdir>/runtimes/et-<digest>: built here once (edgeslm.profiling.et_runtime), uploaded when the
        device lacks it or any file differs, each file checked by sha256 before the folder is put in place."""
        from edgeslm.profiling.et_runtime import runtime_folder

        local = runtime_folder(arch)
        files = sorted(p for p in local.iterdir() if p.is_file())
        sums = {p.name: sha256_file(p) for p in files}
        digest = hashlib.sha256("".join(f"{n} {h}\n" for n, h in sums.items()).encode()).hexdigest()
        path = posixpath.join(self.workdir, "runtimes", f"et-{digest[:16]}")
        there = self.call("hash", *[posixpath.join(path, n) for n in sums])
        if all(there.get(posixpath.join(path, n)) == h for n, h in sums.items()):
            return path
        tmp = f"{path}.part-{uuid.uuid4().hex[:12]}"
        log(f"  upload ExecuTorch runtime for {arch} ({sum(p.stat().st_size for p in files) / 1e6:.1f} MB)")
        for p in files:
            self.conn.put(p, posixpath.join(tmp, p.name))
        got = self.call("hash", *[posixpath.join(tmp, n) for n in sums])
        if not all(got.get(posixpath.join(tmp, n)) == h for n, h in sums.items()):
            self.python_output(REMOVE_TREE, tmp)
            raise DeviceError(f"device {self.name}: the uploaded ExecuTorch runtime arrived damaged (sha256 "
                              "differs); check the device's disk and try again")
        damaged = any(there.get(posixpath.join(path, n)) for n in sums)  # present but not what was built
        if self.python_output(PLACE_TREE, tmp, path, "1" if damaged else "0").strip() != "1":
            raise DeviceError(f"device {self.name}: {path} (or its folder) is a symbolic link; edgeslm does not "
                              "replace files through links: remove it and deploy again")
        return path

    def python_output(self, code: str, *args: str) -> str:
        r = self.conn.run([self.python, "-c", code, *args], timeout=self.device.command_timeout)
        if r.rc == 127 or "not found" in r.stderr and r.rc != 0:
            raise DeviceError(f"device {self.name}: Python {self.python!r} not found there (install python3 >= 3.9 "
                              "or set 'python' for this device in devices.toml)")
        if r.rc != 0:
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise DeviceError(f"device {self.name}: {last}")
        return r.stdout

    def _resolve(self, workdir: str) -> str:
        try:
            return self.python_output(RESOLVE, workdir).strip()
        except DeviceError as exc:
            if "Permission" in str(exc) or "Read-only" in str(exc):
                raise DeviceError(f"device {self.name}: cannot create workdir {workdir} ({exc}); "
                                  "set a writable 'workdir' in devices.toml") from None
            raise

    def call(self, *args: str, timeout: float | None = None) -> dict:
        r = self.conn.run([self.python, self.path, *args], timeout=timeout or self.device.command_timeout)
        lines = [ln for ln in r.stdout.strip().splitlines() if ln.startswith("{")]
        try:
            data = json.loads(lines[-1]) if lines else None
        except ValueError:
            data = None
        if r.rc != 0 or not isinstance(data, dict) or "error" in data:
            why = (data or {}).get("error") if isinstance(data, dict) else None
            why = why or (r.stderr.strip().splitlines() or [_silent_exit(r.rc)])[-1]
            raise DeviceError(f"device {self.name}: {args[0]} failed: {' '.join(str(why).split())[:300]}")
        return data

    def model(self, verb: str, recipe: str, *args: str, timeout: float | None = None) -> dict:
        """A runner command on <workdir>/<recipe>."""
        return self.call(verb, "--workdir", self.workdir, check_name(recipe), *args, timeout=timeout)

    def model_dir(self, recipe: str) -> str:
        return posixpath.join(self.workdir, check_name(recipe))

    # ------------------------------------------------------------------------- locks and pins
    @contextlib.contextmanager
    def locked(self, recipe: str):
        """The exclusive deploy lock on <workdir>/<recipe>; yields its token, which the runner commands
        that change the model folder (stage, commit, activate, rollback) take as `--lock TOKEN`: they change
        nothing unless this hold still holds the lock."""
        with self._hold(recipe, "--wait", str(self.device.lock_wait)) as answer:
            yield answer["token"]

    @contextlib.contextmanager
    def pinned(self, recipe: str, version: str = "current"):
        """Pin a version (resolving `current` once) so no deploy prunes it; yields the version."""
        with self._hold(recipe, "--pin", version) as answer:
            yield answer["pinned"]

    @contextlib.contextmanager
    def _hold(self, recipe: str, *extra: str):
        """A runner `hold` process on the device, on a link of its own (its heartbeats never wait behind an
        upload), kept alive with heartbeats until the block ends; yields its first answer, checked."""
        expire = float(self.device.lock_expire)
        argv = [self.python, self.path, "hold", "--workdir", self.workdir, check_name(recipe),
                "--owner", owner(), "--expire", f"{expire:g}", *extra]
        wait = float(self.device.lock_wait) if "--wait" in extra else 30.0  # a pin waits out a prune
        holder = self.conn.spawn_holder(argv, timeout=self.device.io_timeout + wait + 5)
        stop = threading.Event()
        try:
            answer = hold_answer(self.name, holder.readline(MAX_HOLD_ANSWER + 1), pin="--pin" in extra)

            def beat():
                while not stop.wait(max(0.1, expire / 5)):
                    holder.write("\n")

            threading.Thread(target=beat, name=f"heartbeat-{self.name}", daemon=True).start()
            yield answer
        finally:
            stop.set()
            holder.close()

    # ---------------------------------------------------------------------------------- files
    def put(self, local: Path, remote: str) -> None:
        self.conn.put(local, remote)

    def get(self, remote: str, local: Path) -> None:
        self.conn.get(remote, local)


MAX_HOLD_ANSWER = 64 << 10  # a hold answers in ~300 bytes (a busy lock's record in ~1 KB)
TOKEN_RE = re.compile(r"^[0-9a-f]{32}$")
VERSION_RE = re.compile(r"^[0-9a-f]{16}$")


def hold_answer(name: str, line: str, pin: bool) -> dict:
    """A hold's first line, checked against its shape: {"locked": path, "token": 32 hex, "holder": {...}}
    for the deploy lock, {"pinned": 16 hex} for a pin, or {"error": text} (the device's refusal, such as
    a busy lock). Anything else, and a line longer than MAX_HOLD_ANSWER, is one DeviceError."""
    if not line.strip():
        raise DeviceError(f"device {name}: hold failed: no answer from the device's runner")
    if len(line.encode()) > MAX_HOLD_ANSWER:
        raise DeviceError(f"device {name}: hold answered a line longer than {MAX_HOLD_ANSWER >> 10} KiB; "
                          "is the device's runner intact?")
    try:
        answer = loads(line, "hold answer", max_bytes=MAX_HOLD_ANSWER, max_depth=8)
    except DocumentError as exc:
        raise DeviceError(f"device {name}: {exc}; is the device's runner intact?") from None
    if isinstance(answer, dict) and isinstance(answer.get("error"), str) and answer["error"].strip():
        raise DeviceError(f"device {name}: {' '.join(answer['error'].split())[:400]}")
    if pin:
        ok = isinstance(answer, dict) and isinstance(answer.get("pinned"), str) and VERSION_RE.fullmatch(
            answer["pinned"])
        want = '{"pinned": VERSION (16 hex digits)}'
    else:
        ok = (isinstance(answer, dict) and isinstance(answer.get("token"), str)
              and TOKEN_RE.fullmatch(answer["token"]) and isinstance(answer.get("locked"), str))
        want = '{"locked": PATH, "token": 32 hex digits}'
    if not ok:
        got = " ".join(json.dumps(answer)[:80].split())
        raise DeviceError(f"device {name}: hold answered {got} instead of {want}; is the device's runner intact?")
    return answer


def ends_with_host(timeout: float) -> list[str]:
    """Runner arguments for a long command (profile, generate): it ends when this host's session does (the
    connectors keep its stdin open until then) or when the host's own timeout has passed."""
    return ["--deadline", f"{timeout:g}", "--stop-on-eof"]


def _silent_exit(rc: int) -> str:
    """What a runner that printed nothing tells by its exit status (OpenSSH reports a signal as 128+N;
    paramiko as -1 when the channel closed without one)."""
    import signal

    if rc > 128 and rc - 128 in {s.value for s in signal.Signals}:
        return f"no output; the runner was killed by {signal.Signals(rc - 128).name} (exit {rc})"
    return f"no output (exit status {rc})"
