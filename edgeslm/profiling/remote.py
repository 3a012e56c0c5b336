"""The device runner, called through a connector: uploaded once per version, answers in JSON."""

from __future__ import annotations

import contextlib
import json
import posixpath
from pathlib import Path

from edgeslm.hashing import sha256_file
from edgeslm.runner import RUNNER_PATH
from edgeslm.transport import Connector
from edgeslm.transport.ssh import DeviceError

RESOLVE = "import os,sys; p=os.path.expanduser(sys.argv[1]); os.makedirs(p, exist_ok=True); print(p)"
EXISTS = "import os,sys; print(int(os.path.isfile(sys.argv[1])))"


class RemoteRunner:
    def __init__(self, conn: Connector, name: str, python: str, workdir: str):
        self.conn, self.name, self.python = conn, name, python
        self.workdir = self._resolve(workdir)
        digest = sha256_file(RUNNER_PATH)[:12]
        self.path = posixpath.join(self.workdir, "runner", f"device_runner-{digest}.py")
        if self.python_output(EXISTS, self.path).strip() != "1":
            self.conn.put(RUNNER_PATH, self.path + ".part")
            self.python_output("import os,sys; os.replace(sys.argv[1] + '.part', sys.argv[1])", self.path)

    def python_output(self, code: str, *args: str) -> str:
        r = self.conn.run([self.python, "-c", code, *args], timeout=60)
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

    def call(self, *args: str, timeout: float | None = 600) -> dict:
        r = self.conn.run([self.python, self.path, *args], timeout=timeout)
        lines = [ln for ln in r.stdout.strip().splitlines() if ln.startswith("{")]
        try:
            data = json.loads(lines[-1]) if lines else None
        except ValueError:
            data = None
        if r.rc != 0 or data is None or "error" in data:
            why = (data or {}).get("error") or (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise DeviceError(f"device {self.name}: {args[0]} failed: {why}")
        return data

    @contextlib.contextmanager
    def locked(self, folder: str):
        """Exclusive deploy lock on the device, held by a runner process for as long as we are connected."""
        holder = self.conn.spawn([self.python, self.path, "hold-lock", folder])
        try:
            line = holder.readline()
            try:
                answer = json.loads(line) if line.strip() else {"error": "no answer from the device"}
            except ValueError:
                answer = {"error": line.strip()[:200]}
            if "error" in answer:
                raise DeviceError(f"device {self.name}: {answer['error']}")
            yield
        finally:
            holder.close()

    def put(self, local: Path, remote: str) -> None:
        self.conn.put(local, remote)

    def get(self, remote: str, local: Path) -> None:
        self.conn.get(remote, local)
