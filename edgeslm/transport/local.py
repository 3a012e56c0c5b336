"""This machine as a device: a fresh subprocess per command, files copied."""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import time
from pathlib import Path

from edgeslm.transport.base import (MAX_OUTPUT, STDERR_TAIL, Completed, DeviceError, Listen, check_download,
                                    command_name, size_text)


class LocalConnector:
    def __init__(self, device: str = "local"):
        self.device = device

    def run(self, argv: list[str], timeout: float | None = None, limit: int = MAX_OUTPUT,
            listen: Listen | None = None) -> Completed:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGESLM_")}
        # stdin: a pipe that stays open until the command ends (or this process dies), as an SSH session's
        read_end, write_end = os.pipe()
        try:
            try:
                # a session of its own: Ctrl-C reaches this host, which passes it on as `listen` says
                proc = subprocess.Popen(argv, stdin=read_end, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                        start_new_session=listen is not None)
            except OSError as exc:  # no such program: what a shell would answer
                return Completed(127, "", f"{argv[0]}: {exc.strerror or exc}: not found")
            finally:
                os.close(read_end)
            try:
                out, err = _drain(proc, limit, timeout, listen, lambda data: os.write(write_end, data))
                rc = proc.wait(timeout=timeout)
            except (_Overflow, subprocess.TimeoutExpired) as exc:
                proc.kill()  # ours: started above
                proc.wait()
                if isinstance(exc, _Overflow):
                    raise DeviceError(f"device {self.device}: {command_name(argv)} printed more than "
                                      f"{size_text(limit)} on stdout (refused without reading the rest); is the "
                                      "device's runner intact?") from None
                raise DeviceError(f"device {self.device}: command timed out after {timeout:g}s") from None
            finally:
                for f in (proc.stdout, proc.stderr):
                    f.close()
        finally:
            os.close(write_end)
        return Completed(rc, out.decode(errors="replace"), err.decode(errors="replace"))

    def put(self, local: Path, remote: str, progress=None) -> None:
        Path(remote).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, remote)
        if progress:
            size = Path(remote).stat().st_size
            progress(size, size)

    def get(self, remote: str, local: Path, limit: int | None = None) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        made = not local.exists()
        try:
            fd = os.open(remote, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise DeviceError(f"device {self.device}: download of {remote} failed: {exc.strerror or exc}") from None
        try:
            st = os.fstat(fd)
            check_download(self.device, remote, st.st_mode, st.st_size, limit)
            got = 0
            with open(local, "wb") as dst:
                while True:
                    block = os.read(fd, 1 << 20)
                    if not block:
                        break
                    got += len(block)
                    check_download(self.device, remote, st.st_mode, got, limit)
                    dst.write(block)
        except (DeviceError, OSError) as exc:
            if made:
                local.unlink(missing_ok=True)
            if isinstance(exc, DeviceError):
                raise
            raise DeviceError(f"device {self.device}: download of {remote} failed: {exc.strerror or exc}") from None
        finally:
            os.close(fd)

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

    def readline(self, size: int | None = -1) -> str:
        return self.proc.stdout.readline(-1 if size is None else size)

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


class _Overflow(Exception):
    pass


def _drain(proc: subprocess.Popen, limit: int, timeout: float | None, listen: Listen | None = None,
           send=None) -> tuple[bytes, bytes]:
    """(stdout, the tail of stderr) of `proc`, read as they come in bounded chunks; _Overflow past `limit`
    bytes of stdout, TimeoutExpired after `timeout` seconds. `listen` hears stderr; `send` writes stdin."""
    deadline = None if timeout is None else time.monotonic() + timeout
    out, err = bytearray(), bytearray()
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        while sel.get_map():
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                raise subprocess.TimeoutExpired(proc.args, timeout)
            try:
                ready = sel.select(wait)
            except KeyboardInterrupt:
                if listen is None:
                    raise
                listen.interrupt_once(send)
                continue
            for key, _ in ready:
                block = os.read(key.fd, 1 << 16)
                if not block:
                    sel.unregister(key.fileobj)
                    continue
                if listen is not None and key.data is err:
                    listen.feed(block)
                key.data.extend(block)
                if key.data is out and len(out) > limit:
                    raise _Overflow()
                if key.data is err and len(err) > 2 * STDERR_TAIL:
                    del err[:-STDERR_TAIL]
    return bytes(out), bytes(err[-STDERR_TAIL:])
