"""The bytes of an SSH link: a socket that records when bytes last arrived, the keepalive the server must
answer, a command's output read in bounded chunks, and a long-lived command's channel."""

from __future__ import annotations

import select
import socket
import time

from edgeslm.transport.base import STDERR_TAIL


class Watched:
    """A socket (or a ProxyJump channel) that records when bytes last arrived."""

    def __init__(self, sock):
        self._s = sock
        self.last = time.monotonic()

    def recv(self, n: int) -> bytes:
        data = self._s.recv(n)
        if data:
            self.last = time.monotonic()
        return data

    def __getattr__(self, name):
        return getattr(self._s, name)


def keepalive(transport) -> None:
    """A global request the server must answer (OpenSSH replies "failure"): an answer proves the link."""
    import paramiko
    from paramiko.common import cMSG_GLOBAL_REQUEST

    m = paramiko.Message()
    m.add_byte(cMSG_GLOBAL_REQUEST)
    m.add_string("keepalive@openssh.com")
    m.add_boolean(True)
    try:
        transport._send_user_message(m)
    except Exception:  # noqa: BLE001 - a dead link: the watchdog reports it
        pass


class Overflow(Exception):
    """A command printed more than its limit on stdout."""


def drain(chan, limit: int, timeout: float | None, listen=None) -> tuple[bytes, bytes, int]:
    """(stdout, the tail of stderr, exit status) of a command on `chan`, read in bounded chunks as they come
    (stdout and stderr together: a command flooding one cannot stall the other); Overflow past `limit`
    bytes of stdout, socket.timeout after `timeout` seconds in all. `listen` (base.Listen) hears stderr and
    is told of Ctrl-C."""
    deadline = None if timeout is None else time.monotonic() + timeout
    out, err = bytearray(), bytearray()
    while True:
        if deadline is not None and time.monotonic() > deadline:  # also while a flood keeps coming
            raise socket.timeout()
        try:
            if chan.recv_ready():
                out += chan.recv(1 << 16)
                if len(out) > limit:
                    raise Overflow()
            if chan.recv_stderr_ready():
                block = chan.recv_stderr(1 << 16)
                if listen is not None:
                    listen.feed(block)
                err += block
                if len(err) > 2 * STDERR_TAIL:
                    del err[:-STDERR_TAIL]
            if chan.recv_ready() or chan.recv_stderr_ready():
                continue
            if chan.closed or (chan.eof_received and chan.exit_status_ready()):
                break
            wait = 0.25 if deadline is None else min(0.25, max(0.0, deadline - time.monotonic()))
            select.select([chan], [], [], wait)
        except KeyboardInterrupt:
            if listen is None:
                raise
            listen.interrupt_once(chan.sendall)
    return bytes(out), bytes(err[-STDERR_TAIL:]), chan.recv_exit_status()


class Channel:
    def __init__(self, chan):
        self.chan, self.file = chan, chan.makefile("rb")

    def readline(self, size: int | None = -1) -> str:
        """The next line (at most `size` bytes of it); "" at the end or on a timeout."""
        try:
            line = self.file.readline(size) if size is not None and size >= 0 else self.file.readline()
        except (socket.timeout, OSError, EOFError):
            return ""
        return line.decode("utf-8", errors="replace")

    def write(self, data: str) -> None:
        try:
            self.chan.sendall(data.encode())
        except (socket.timeout, OSError, EOFError):
            pass

    def close(self) -> None:
        try:
            self.chan.shutdown_write()
            self.chan.close()
        except Exception:  # noqa: BLE001 - the link may already be gone; the device drops the lock then
            pass


def why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
