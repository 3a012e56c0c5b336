"""Connectors: run a command, put a file, get a file, on a device. Local (subprocess) and SSH (paramiko).

Connectors know nothing about models; deploy and profiling speak to devices only through this interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edgeslm.errors import UserError


class DeviceError(UserError):
    """The device cannot be reached, refuses us, failed a command, or answered something invalid."""


@dataclass
class Completed:
    rc: int
    stdout: str
    stderr: str


class Connector(Protocol):
    device: str  # name, for messages

    def run(self, argv: list[str], timeout: float | None = None) -> Completed: ...

    def put(self, local: Path, remote: str) -> None: ...

    def get(self, remote: str, local: Path) -> None: ...

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
    def readline(self, limit: int | None = None) -> str:
        """The next line, at most `limit` characters of it; "" at the end."""
        ...

    def write(self, data: str) -> None:
        """Send to the command's stdin (heartbeats for lock and pin holders)."""
        ...

    def close(self) -> None: ...


def connect(name: str, device, *, accept_new_host_key: bool = False, retries: int = 3) -> Connector:
    """A connector for a device entry (config.devices.Device)."""
    from edgeslm.config.devices import LOCAL

    if name == LOCAL:
        from edgeslm.transport.local import LocalConnector

        return LocalConnector(name)
    from edgeslm.transport.ssh import SSHConnector

    return SSHConnector(name, device, accept_new_host_key=accept_new_host_key, retries=retries)
