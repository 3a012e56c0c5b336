"""Connectors: run a command, put a file, get a file, on a device. Local (subprocess) and SSH (paramiko).

Connectors know nothing about models; deploy and profiling speak to devices only through this interface
(transport.base), and get one with `connect`.
"""

from __future__ import annotations

from edgeslm.transport.base import (MAX_OUTPUT, STDERR_TAIL, Completed, Connector, DeviceError, Spawned,
                                    check_download, command_name, printable, size_text)

__all__ = ["MAX_OUTPUT", "STDERR_TAIL", "Completed", "Connector", "DeviceError", "Spawned", "check_download",
           "command_name", "connect", "printable", "size_text"]


def connect(name: str, device, *, accept_new_host_key: bool = False, retries: int = 3) -> Connector:
    """A connector for a device entry (config.devices.Device)."""
    from edgeslm.config.devices import LOCAL

    if name == LOCAL:
        from edgeslm.transport.local import LocalConnector

        return LocalConnector(name)
    from edgeslm.transport.ssh import SSHConnector

    return SSHConnector(name, device, accept_new_host_key=accept_new_host_key, retries=retries)
