"""This machine as a device: a fresh subprocess per command, files copied."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from edgeslm.transport import Completed, DeviceError


class LocalConnector:
    def __init__(self, device: str = "local"):
        self.device = device

    def run(self, argv: list[str], timeout: float | None = None) -> Completed:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGESLM_")}
        # stdin: a pipe that stays open until the command ends (or this process dies), as an SSH session's
        read_end, write_end = os.pipe()
        try:
            r = subprocess.run(argv, stdin=read_end, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"device {self.device}: command timed out after {timeout:g}s") from None
        finally:
            os.close(read_end)
            os.close(write_end)
        return Completed(r.returncode, r.stdout, r.stderr)

    def put(self, local: Path, remote: str) -> None:
        Path(remote).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, remote)

    def get(self, remote: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(remote, local)

    def spawn(self, argv: list[str], timeout: float | None = None):
        # the runner answers in JSON on stdout; native runtimes log on stderr (kept off the terminal)
        return _Process(subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, text=True, errors="replace"))

    spawn_holder = spawn  # a pipe of its own already: nothing queues before a heartbeat

    def close(self) -> None:
        pass


class _Process:
    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    def readline(self, limit: int | None = None) -> str:
        return self.proc.stdout.readline(-1 if limit is None else limit)

    def write(self, data: str) -> None:
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
