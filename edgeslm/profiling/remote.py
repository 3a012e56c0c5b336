"""The device runner, called through a connector: checked each session, answers in JSON.

Names that become paths on the device (recipe, version) are checked here before they are sent, and the
runner checks them again on its side. Locks and pins are held by a runner process on the device that
this side keeps alive with heartbeats; it gives up by itself when they stop.

What the device answers is input: every answer is read with a size cap (the connector's) and parsed with
a depth cap (contract.documents), then checked against its command's shape (contract.answers); anything
else is one DeviceError line naming the device, the command and the part that is wrong.
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
from edgeslm.contract.answers import AnswerError, check, line_answer
from edgeslm.contract.documents import MAX_ANSWER, DocumentError, loads
from edgeslm.errors import UserError
from edgeslm.hashing import sha256_file
from edgeslm.runner.bundle import runner_path
from edgeslm.transport import MAX_OUTPUT, Connector, DeviceError, printable, size_text

# the first command of a session: which Python answers (its version), and whether the workdir can be made
# and written (a folder in it is created, and a file there created and removed): one JSON line
RESOLVE = ("import json,os,sys,tempfile\n"
           "p=os.path.abspath(os.path.expanduser(sys.argv[1])); r=os.path.join(p,'runner'); e=None\n"
           "try:\n"
           "    os.makedirs(r, exist_ok=True); fd,t=tempfile.mkstemp(dir=r,prefix='.probe-'); os.close(fd); os.remove(t)\n"
           "except OSError as x:\n"
           "    e='%s: %s' % (type(x).__name__, x)\n"
           "print(json.dumps({'python': list(sys.version_info[:3]), 'workdir': p, 'problem': e}))")
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
        if self.line("digest", DIGEST, path) == digest:
            return path
        tmp = f"{path}.part-{uuid.uuid4().hex[:12]}"
        self.conn.put(local, tmp)
        if self.line("install", INSTALL, tmp, path, digest) != "1":
            raise DeviceError(f"device {self.name}: the uploaded runner arrived damaged (sha256 differs); "
                              "check the device's disk and try again")
        return path

    def et_runtime(self, arch: str, log=print) -> str:
        """edgeslm's ExecuTorch runtime folder for the device's architecture, under
        <workdir>/runtimes/et-<digest>: built here once (edgeslm.native.runtime_folder), uploaded when the
        device lacks it or any file differs, each file checked by sha256 before the folder is put in place."""
        from edgeslm.native.runtime_folder import runtime_folder

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
        if self.line("place", PLACE_TREE, tmp, path, "1" if damaged else "0") != "1":
            raise DeviceError(f"device {self.name}: {path} (or its folder) is a symbolic link; edgeslm does not "
                              "replace files through links: remove it and deploy again")
        return path

    def python_output(self, code: str, *args: str) -> str:
        r = self.conn.run([self.python, "-c", code, *args], timeout=self.device.command_timeout)
        self._found(r)
        if r.rc != 0:
            last = (r.stderr.strip().splitlines() or [_silent_exit(r.rc)])[-1]
            raise DeviceError(f"device {self.name}: {printable(last)}")
        return r.stdout

    def line(self, kind: str, code: str, *args: str) -> str:
        """The one line a host-side Python command prints, checked (contract.answers.LINES[kind])."""
        try:
            return line_answer(kind, self.python_output(code, *args))
        except AnswerError as exc:
            raise malformed(self.name, LINE_NAMES[kind], exc, "is the device's Python (python in devices.toml) "
                            "a working python3?") from None

    def arch(self) -> str:
        """The device's machine name (platform.machine())."""
        return self.line("arch", "import platform; print(platform.machine())")

    def _found(self, r) -> None:
        if r.rc == 127 or "not found" in r.stderr and r.rc != 0:
            raise DeviceError(f"device {self.name}: Python {self.python!r} not found there (install python3 >= 3.9 "
                              "or set 'python' for this device in devices.toml)")

    def _resolve(self, workdir: str) -> str:
        r = self.conn.run([self.python, "-c", RESOLVE, workdir], timeout=self.device.command_timeout)
        self._found(r)
        return resolved(self.name, self.python, workdir, r.rc, r.stdout, r.stderr)

    def call(self, *args: str, timeout: float | None = None, listen=None) -> dict:
        """Runner command `args[0]`: its answer, checked against the command's shape (`listen`: transport.Listen,
        what a long command tells meanwhile)."""
        r = self.conn.run([self.python, self.path, *args], timeout=timeout or self.device.command_timeout,
                          listen=listen)
        return answer_of(self.name, args[0], r.rc, r.stdout, r.stderr)

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
    def put(self, local: Path, remote: str, progress=None) -> None:
        self.conn.put(local, remote, progress)

    def get(self, remote: str, local: Path, limit: int | None = None) -> None:
        self.conn.get(remote, local, limit=limit)


def resolved(name: str, python: str, workdir: str, rc: int, stdout: str, stderr: str) -> str:
    """The workdir from RESOLVE's answer, the first command of a session: the device's `python` must be a
    working Python >= 3.9 (told by its answer, not assumed) and the workdir a folder it can create and write."""
    data = None
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if rc == 0 and lines:
        try:
            data = check("resolve", loads(lines[-1], "answer", MAX_ANSWER))
        except (DocumentError, AnswerError):
            data = None
    if data is None or len(data["python"]) < 2:
        said = stdout.strip() or (stderr.strip().splitlines() or [_silent_exit(rc)])[-1]
        raise DeviceError(f"device {name}: python = {python!r} (devices.toml) is not a working Python: asked for "
                          f"its version, it answered {printable(said, 60)!r}; set 'python' for this device to a "
                          "python3 >= 3.9")
    version = ".".join(str(v) for v in data["python"][:3])
    if tuple(data["python"][:2]) < (3, 9):
        raise DeviceError(f"device {name}: python = {python!r} (devices.toml) is Python {printable(version, 40)}; "
                          "the runner needs Python >= 3.9 (install it, or set 'python' for this device)")
    if data["problem"]:
        raise DeviceError(f"device {name}: cannot use workdir {workdir} ({printable(data['problem'])}); "
                          "set a writable 'workdir' for this device in devices.toml")
    return data["workdir"]


LINE_NAMES = {"digest": "the runner's sha256 check", "install": "the runner's install", "place": "the runtime's install",
              "arch": "platform.machine()"}


def malformed(name: str, command: str, why, hint: str = "is the device's runner intact?") -> DeviceError:
    return DeviceError(f"device {name}: {command} answered something malformed ({printable(why, 200)}); {hint}")


def answer_of(name: str, command: str, rc: int, stdout: str, stderr: str) -> dict:
    """The answer of runner `command` (its last JSON line on stdout), parsed with the size and depth caps and
    checked against the command's shape; the runner's own refusal ({"error": ...}, exit 1) or a failure
    without one (a crash: the last line of stderr) is DeviceError "<command> failed: ...", anything
    malformed DeviceError "<command> answered something malformed (<part>)"."""
    if len(stdout) > MAX_OUTPUT:  # the connectors stop reading there; a caller's text is held to it too
        raise malformed(name, command, f"the answer is larger than {size_text(MAX_OUTPUT)}")
    lines = [ln for ln in stdout.splitlines() if ln.startswith(("{", "["))]
    data, problem = None, "no JSON answer"
    if lines:
        try:
            data = loads(lines[-1], "the answer", MAX_ANSWER)
        except DocumentError as exc:
            problem = str(exc)
    if isinstance(data, dict) and "error" in data:
        raise DeviceError(f"device {name}: {command} failed: {printable(data['error'])}")
    if rc != 0:
        why = (stderr.strip().splitlines() or [_silent_exit(rc)])[-1]
        raise DeviceError(f"device {name}: {command} failed: {printable(why)}")
    if data is None:
        raise malformed(name, command, problem)
    try:
        return check(command, data)
    except AnswerError as exc:
        raise malformed(name, command, exc) from None


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
