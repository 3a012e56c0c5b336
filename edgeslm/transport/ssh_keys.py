"""Who is at the other end of an SSH link: host-key policies (refuse an unknown key with its fingerprint, or
record it when asked to; a revoked key always refused) and the identity file checked before connecting."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

from edgeslm.transport import known_hosts as kh
from edgeslm.transport.base import DeviceError, printable
from edgeslm.transport.ssh_link import why


def fingerprint(key) -> str:
    if key is None:
        return "no key of that type"
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def check_identity(device: str, path: str) -> None:
    """The identity file must be a private key paramiko reads (an encrypted one is left to ssh-agent): told
    before connecting, once, instead of failing three connection attempts with paramiko's words."""
    import paramiko

    from edgeslm.inputs import InputError, read_file

    fix = "fix identity_file in devices.toml or ~/.ssh/config"
    if not Path(path).exists():
        raise DeviceError(f"device {device}: identity_file {path} does not exist ({fix})")
    try:
        text = read_file(Path(path), "identity_file", limit=1 << 20, what="private key file").decode(
            "utf-8", errors="replace")
    except InputError as exc:
        raise DeviceError(f"device {device}: identity_file {exc.path} {exc.problem} ({fix})") from None
    reason = "no key found"
    for cls in (paramiko.RSAKey, paramiko.ECDSAKey, paramiko.Ed25519Key):  # what SSHClient.connect tries
        try:
            cls.from_private_key(io.StringIO(text))
            return
        except paramiko.PasswordRequiredException:
            return  # encrypted: ssh-agent may hold it (connect says so when it does not)
        except Exception as exc:  # noqa: BLE001 - any failure to read it means: not a private key paramiko reads
            reason = why(exc)
    hint = "; it is a public key: give the private one" if text.lstrip().startswith(("ssh-", "ecdsa-")) else ""
    raise DeviceError(f"device {device}: identity_file {path} is not a private key ({printable(reason, 80)}){hint} "
                      f"({fix})")


def revoked(who: str, hostname: str, key, known_hosts: str) -> str:
    return (f"{who}: host key for {hostname} ({key.get_name()} {fingerprint(key)}) is REVOKED in "
            f"{known_hosts}; refusing to connect")


class HostKeyRefused(Exception):
    pass


class Refuse:
    """Unknown host key: refuse, showing the fingerprint and how to accept it explicitly."""

    def __init__(self, who: str, known_hosts: str, known: kh.KnownHosts):
        self.who, self.known_hosts, self.known = who, known_hosts, known

    def missing_host_key(self, client, hostname, key):
        if self.known.is_revoked(key):
            raise HostKeyRefused(revoked(self.who, hostname, key, self.known_hosts))
        device = self.who.split(":")[0].removeprefix("device ")
        raise HostKeyRefused(
            f"{self.who}: unknown host key for {hostname} ({key.get_name()} {fingerprint(key)}), "
            f"not in {self.known_hosts}; if that fingerprint is right, accept it with "
            f"`edgeslm devices trust {device}` (or ssh-keyscan it into known_hosts)")


class AcceptAndRecord:
    """Trust on first use, only when asked for explicitly: record the new key in known_hosts.
    A revoked key is refused even then."""

    def __init__(self, known_hosts: Path, known: kh.KnownHosts, who: str):
        self.known_hosts, self.known, self.who = known_hosts, known, who

    def missing_host_key(self, client, hostname, key):
        if self.known.is_revoked(key):
            raise HostKeyRefused(revoked(self.who, hostname, key, str(self.known_hosts)))
        try:
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
            with open(self.known_hosts, "a") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        except OSError as exc:
            raise HostKeyRefused(f"{self.who}: cannot record the host key of {hostname} in {self.known_hosts} "
                                  f"({exc.strerror or exc}); fix known_hosts in devices.toml") from None
        client.get_host_keys().add(hostname, key.get_name(), key)
