"""devices.toml: the devices a user owns, how to reach them, and which target each one is."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from edgeslm.config.base import StrictModel, parse, read_toml
from edgeslm.errors import ConfigError

LOCAL = "local"


class Device(StrictModel):
    host: str | None = Field(None, description="Host name, address, or an alias from ~/.ssh/config "
                             "(its HostName, User, Port, IdentityFile and ProxyJump apply). "
                             "Omitted only for the built-in local device.")
    port: int | None = Field(None, ge=1, le=65535, description="SSH port (default 22 or ~/.ssh/config).")
    user: str | None = Field(None, description="Login user (default: ~/.ssh/config, then your user name).")
    identity_file: str | None = Field(None, description="Private key file; omit to use ssh-agent or "
                                      "~/.ssh/config.")
    known_hosts: str = Field("~/.ssh/known_hosts", description="known_hosts file the host key is "
                             "verified against; unknown or changed keys are refused.")
    target: str = Field(description="Target this device is (see `edgeslm targets`); builds for another "
                        "architecture are refused.")
    workdir: str = Field("~/edgeslm", description="Folder on the device holding deployed versions.")
    python: str = Field("python3", description="Python interpreter on the device that runs the runner.")
    groups: tuple[str, ...] = Field((), description="Groups for `--group` deploys and checks.")
    connect_timeout: float = Field(10.0, gt=0, le=300, description="Seconds to wait for a connection.")


class Inventory(StrictModel):
    devices: dict[str, Device] = Field(default_factory=dict, description="Devices by name: [devices.NAME].")

    @model_validator(mode="after")
    def _names(self):
        if LOCAL in self.devices:
            raise ValueError(f"'{LOCAL}' is the built-in device of this machine; pick another name")
        for name, dev in self.devices.items():
            if dev.host is None:
                raise ValueError(f"devices.{name}.host is required")
        return self

    def get(self, name: str, file: str = "devices.toml") -> Device:
        if name == LOCAL:
            import os
            import sys

            home = os.environ.get("EDGESLM_CACHE", "~/.cache/edgeslm")
            return Device(target="host", workdir=f"{home}/local-device", python=sys.executable)
        try:
            return self.devices[name]
        except KeyError:
            import difflib
            close = difflib.get_close_matches(name, list(self.devices) + [LOCAL], n=1, cutoff=0.5)
            hint = f"did you mean {close[0]}?" if close else f"known devices: {', '.join([LOCAL, *self.devices])}"
            raise ConfigError(file, f"devices.{name}", "no such device", hint) from None


    def select(self, names: tuple[str, ...] = (), group: str | None = None, all_: bool = False,
               file: str = "devices.toml") -> list[str]:
        """Device names from explicit names, a group, or all (local included only when named)."""
        chosen = list(names)
        if group:
            members = [n for n, d in self.devices.items() if group in d.groups]
            if not members:
                known = sorted({g for d in self.devices.values() for g in d.groups})
                raise ConfigError(file, None, f"no device is in group {group!r}",
                                  f"groups: {', '.join(known) or 'none defined'}")
            chosen += members
        if all_:
            chosen += list(self.devices)
        for n in chosen:
            self.get(n, file)
        return list(dict.fromkeys(chosen))


def load_inventory(path: Path | None) -> Inventory:
    if path is None or not path.exists():
        return Inventory()
    return parse(Inventory, read_toml(path), str(path))
