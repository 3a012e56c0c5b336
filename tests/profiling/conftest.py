from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sshd import start_sshd


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd", numbered=True))
    yield server
    server.stop()


def device_entry(name: str, server, workdir: Path, known_hosts: Path, python: str | None = None,
                 port: int | None = None, groups=(), target: str = "host", timeout: float = 5, **settings) -> str:
    """A devices.toml entry for the test sshd; `settings` are further keys (io_timeout=2, ...)."""
    g = ", ".join(f'"{x}"' for x in groups)
    more = "".join(f"{k} = {v!r}\n" for k, v in settings.items())
    return f"""
[devices.{name}]
host = "127.0.0.1"
port = {port or server.port}
user = "root"
identity_file = "{server.client_key}"
known_hosts = "{known_hosts}"
target = "{target}"
workdir = "{workdir}"
python = "{python or sys.executable}"
groups = [{g}]
connect_timeout = {timeout}
{more}"""


@pytest.fixture
def inventory(tmp_path, sshd):
    """inventory(**entries) -> devices.toml path; each entry: name -> dict of device_entry kwargs."""
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line() + "\n")

    def make(**entries) -> Path:
        text = "".join(device_entry(n, sshd, tmp_path / f"wd-{n}", kw.pop("known_hosts", known), **kw)
                       for n, kw in entries.items())
        path = tmp_path / "devices.toml"
        path.write_text(text)
        return path

    make.known_hosts = known
    return make



