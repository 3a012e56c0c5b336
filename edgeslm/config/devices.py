"""devices.toml: the devices a user owns, how to reach them, and which target each one is."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from edgeslm.config.base import StrictModel, parse, read_toml
from edgeslm.errors import ConfigError

LOCAL = "local"
# Device names become folder names (profile results land in .../profiles/<device>/).
DEVICE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


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
    connect_timeout: float = Field(10.0, gt=0, le=300, description="Seconds to wait for a connection "
                                   "(TCP connect, SSH handshake, authentication), per attempt.")
    io_timeout: float = Field(30.0, gt=0, le=3600, description="Seconds without any answer from the device "
                              "(SSH keepalives are sent and must be answered) after which the link counts as "
                              "dead and the running deploy or profile fails; also bounds each SFTP read/write.")
    command_timeout: float = Field(600.0, gt=0, le=86400, description="Seconds one runner command (verify, "
                                   "stage, commit, activate...) may take on the device.")
    profile_timeout: float = Field(3600.0, gt=0, le=86400, description="Seconds one profiling run (or `run`) "
                                   "may take on the device; the runner there also stops itself then.")
    lock_wait: float = Field(0.0, ge=0, le=3600, description="Seconds a deploy waits for another deploy's "
                             "lock on the device before giving up (0: fail at once, naming the holder).")
    lock_expire: float = Field(30.0, gt=0, le=3600, description="The deploy lock's holder on the device "
                               "gives it up after this many seconds without a heartbeat from its host (the "
                               "host sends one every lock_expire/5 s), so a host that vanished or a link "
                               "that went silent frees the device.")


    @field_validator("host", "user", "workdir", "python", "known_hosts")
    @classmethod
    def _not_blank(cls, value, info):
        if value is not None and not value.strip():
            raise ValueError("must not be empty" + (" (omit the key to use the default)" if info.field_name
                                                    != "host" else ""))
        if value is not None and value != value.strip():
            raise ValueError(f"{value!r} has spaces around it (remove them)")
        return value


class Inventory(StrictModel):
    devices: dict[str, Device] = Field(default_factory=dict, description="Devices by name: [devices.NAME].")

    @model_validator(mode="after")
    def _names(self):
        if LOCAL in self.devices:
            raise ValueError(f"'{LOCAL}' is the built-in device of this machine; pick another name")
        for name, dev in self.devices.items():
            if not DEVICE_NAME_RE.fullmatch(name):
                raise ValueError(f"devices.{name!r}: a device name becomes a folder name; use letters, digits, "
                                 "'.', '_' and '-', starting with a letter or digit (at most 64)")
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


def load_inventory(path: Path | None, required: bool = False) -> Inventory:
    """The inventory in `path`. A missing file is an empty inventory (only `local`) unless `required`
    (the user named the file): then it is an error naming it."""
    if path is None or (not path.exists() and not required):
        return Inventory()
    if not path.exists():
        raise ConfigError(str(path), None, "devices file not found",
                          "check the path given with --devices or $EDGESLM_DEVICES")
    return parse(Inventory, read_toml(path, "devices"), str(path))


LOCAL_FILE = "devices.local.toml"  # beside devices.toml: this machine's own entries (emulated devices), untracked


def load_default_inventory(folder: Path = Path(".")) -> tuple[Inventory, str]:
    """./devices.toml and ./devices.local.toml, either or both may be absent; returns (the devices of both,
    the names of the files read for messages). A device named in both files is an error naming it."""
    main_file, local_file = folder / "devices.toml", folder / LOCAL_FILE
    inv = load_inventory(main_file)
    if not local_file.exists():
        return inv, str(main_file)
    extra = load_inventory(local_file, required=True)
    for name in extra.devices:
        if name in inv.devices:
            raise ConfigError(str(local_file), f"devices.{name}", f"is also in {main_file}",
                              "rename one of them (or remove the one you do not use)")
    merged = Inventory.model_construct(devices={**inv.devices, **extra.devices})
    return merged, f"{main_file} + {local_file}" if main_file.exists() else str(local_file)
