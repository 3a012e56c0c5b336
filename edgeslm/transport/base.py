"""What every connector shares: the interface (run, put, get, spawn), the error a device's failure is, the
caps on what a device may send, and text helpers for messages that quote a device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edgeslm.errors import UserError


MAX_OUTPUT = 1 << 20  # what one command may print on stdout (a runner answer is one line): more is refused
STDERR_TAIL = 64 << 10  # of a command's stderr only the end is kept (the last line is what a message shows)


class DeviceError(UserError):
    """The device cannot be reached, refuses us, failed a command, or answered something invalid."""


@dataclass
class Listen:
    """What the caller of a long command hears while it runs (`Connector.run(..., listen=)`): each line of its
    stderr that starts with `prefix` (prefix removed; longer than 4 KiB: dropped), and on the first Ctrl-C
    `interrupt` is sent to the command's stdin and reading goes on (`on_interrupt` is told); a second one
    ends it as Ctrl-C always does."""
    prefix: str
    on_line: object  # (str) -> None
    interrupt: bytes | None = None
    on_interrupt: object = None  # () -> None
    _pending: bytearray = None
    interrupted: bool = False

    def feed(self, block: bytes) -> None:
        if self._pending is None:
            self._pending = bytearray()
        self._pending += block
        *lines, rest = self._pending.split(b"\n")
        self._pending = bytearray(rest if len(rest) <= 4096 else b"")
        prefix = self.prefix.encode()
        for line in lines:
            if line.startswith(prefix) and len(line) <= 4096:
                self.on_line(line[len(prefix):].decode("utf-8", errors="replace"))

    def interrupt_once(self, send) -> None:
        """On Ctrl-C: the first time, `send(interrupt)` and go on; else raise it again."""
        if self.interrupted or self.interrupt is None:
            raise KeyboardInterrupt
        self.interrupted = True
        send(self.interrupt)
        if self.on_interrupt:
            self.on_interrupt()


def printable(text, limit: int = 300) -> str:
    """Device-provided text for a one-line message: whitespace runs as one space, other control characters
    (terminal escapes) as '?', at most `limit` characters."""
    text = " ".join(str(text).split())
    text = "".join(c if c.isprintable() else "?" for c in text[:limit + 1])
    return text if len(text) <= limit else text[:limit] + "..."


def size_text(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def command_name(argv: list[str]) -> str:
    """A command for a message: `runner probe` for the runner's commands, else `command python3`."""
    import posixpath

    if len(argv) > 2 and argv[1].endswith((".py", ".pyz")):
        return f"runner {argv[2]}"
    return f"command {posixpath.basename(argv[0]) if argv else '?'}"


def check_download(device: str, remote: str, mode: int | None, size: int, limit: int | None) -> None:
    """A file about to come home from a device (checked before and while downloading): a regular file, no
    larger than `limit` bytes."""
    import stat

    if mode is not None and not stat.S_ISREG(mode):
        raise DeviceError(f"device {device}: {remote} is not a regular file there; not downloaded")
    if limit is not None and size > limit:
        raise DeviceError(f"device {device}: {remote} is larger than the {size_text(limit)} edgeslm accepts "
                          f"for it ({size_text(size)}); not downloaded")


@dataclass
class Completed:
    rc: int
    stdout: str
    stderr: str


class Connector(Protocol):
    device: str  # name, for messages

    def run(self, argv: list[str], timeout: float | None = None, limit: int = MAX_OUTPUT,
            listen: Listen | None = None) -> Completed:
        """Run a command to its end (at most `timeout` seconds). Its stdout is read in bounded chunks: past
        `limit` bytes the command is ended and DeviceError raised, without reading the rest; of stderr only
        the last STDERR_TAIL bytes are kept (and `listen` hears its progress lines and passes on Ctrl-C)."""
        ...

    def put(self, local: Path, remote: str, progress=None) -> None:
        """Upload a file; `progress(sent_bytes, total_bytes)` is called as it goes."""
        ...

    def get(self, remote: str, local: Path, limit: int | None = None) -> None:
        """Download a regular file; one larger than `limit` bytes is refused before (and while) downloading."""
        ...

    def spawn(self, argv: list[str], timeout: float | None = None) -> "Spawned":
        """Start a command that lives until `close()` (its stdin closes) or the connection drops;
        `timeout` bounds each wait for a line from it."""
        ...

    def spawn_holder(self, argv: list[str], timeout: float | None = None) -> "Spawned":
        """`spawn` for a lock or pin holder: what it is sent (heartbeats) never waits behind this
        connector's file transfers (SSH: a second connection)."""
        ...

    def close(self) -> None: ...


class Spawned(Protocol):
    def readline(self, size: int | None = -1) -> str:
        """The next line (at most `size` characters; undecodable bytes replaced), "" at the end."""
        ...

    def write(self, data: str) -> None:
        """Send to the command's stdin (heartbeats for lock and pin holders)."""
        ...

    def close(self) -> None: ...
