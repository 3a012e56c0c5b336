"""SSH connector (paramiko): verified host keys, ~/.ssh/config aliases, retries on transient failures.

Host keys are checked against the device's known_hosts file: an unknown key is refused with its
fingerprint and the way to accept it; a changed key is refused, always. Passwords and passphrases are
never logged (paramiko gets them from the agent or key files; edgeslm never asks for or stores one).
"""

from __future__ import annotations

import base64
import hashlib
import os
import posixpath
import random
import shlex
import socket
import time
from pathlib import Path

from edgeslm.errors import UserError
from edgeslm.transport import Completed


class DeviceError(UserError):
    """The device cannot be reached, refuses us, or failed a command."""


def _fingerprint(key) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def resolve_settings(device) -> dict:
    """Merge the devices.toml entry with ~/.ssh/config for its host (OpenSSH precedence: explicit wins)."""
    import paramiko

    cfg_path = Path(os.environ.get("EDGESLM_SSH_CONFIG", "~/.ssh/config")).expanduser()
    found = {}
    if cfg_path.exists():
        found = paramiko.SSHConfig.from_path(str(cfg_path)).lookup(device.host)
    identity = device.identity_file or (found.get("identityfile") or [None])[0]
    return {
        "hostname": found.get("hostname", device.host),
        "port": device.port or int(found.get("port", 22)),
        "user": device.user or found.get("user") or os.environ.get("USER", "root"),
        "identity_file": str(Path(identity).expanduser()) if identity else None,
        "proxy_jump": found.get("proxyjump"),
        "known_hosts": str(Path(device.known_hosts).expanduser()),
        "timeout": device.connect_timeout,
    }


class SSHConnector:
    def __init__(self, name: str, device, accept_new_host_key: bool = False, retries: int = 3):
        self.device = name
        self.settings = resolve_settings(device)
        self.accept_new = accept_new_host_key
        self._jump = None
        self.client = self._connect(retries)
        self._sftp = None

    # ---------------------------------------------------------------------------------- connect
    def _connect(self, retries: int):
        import paramiko

        s = self.settings
        where = f"{s['user']}@{s['hostname']}:{s['port']}"
        if s["identity_file"] and not Path(s["identity_file"]).is_file():
            raise DeviceError(f"device {self.device}: identity_file {s['identity_file']} does not exist "
                              "(fix identity_file in devices.toml or ~/.ssh/config)")
        delay = 0.5
        for attempt in range(1, retries + 1):
            client = paramiko.SSHClient()
            kh = Path(s["known_hosts"])
            if kh.exists():
                client.load_host_keys(str(kh))
            client.set_missing_host_key_policy(_AcceptAndRecord(kh) if self.accept_new else _Refuse(self.device, s))
            try:
                client.connect(s["hostname"], port=s["port"], username=s["user"],
                               key_filename=s["identity_file"], timeout=s["timeout"],
                               banner_timeout=s["timeout"], auth_timeout=s["timeout"],
                               sock=self._proxy_sock(), allow_agent=True, look_for_keys=s["identity_file"] is None)
                return client
            except _HostKeyRefused as exc:
                raise DeviceError(str(exc)) from None
            except paramiko.BadHostKeyException as exc:
                raise DeviceError(
                    f"device {self.device}: host key for {where} CHANGED (now {_fingerprint(exc.key)}, "
                    f"{s['known_hosts']} has {_fingerprint(exc.expected_key)}); refusing to connect. "
                    "If the device was reinstalled, remove its old line from known_hosts") from None
            except paramiko.PasswordRequiredException:
                raise DeviceError(f"device {self.device}: identity file {s['identity_file']} is encrypted; load "
                                  "it into ssh-agent (edgeslm never asks for or stores passphrases)") from None
            except paramiko.AuthenticationException:
                raise DeviceError(f"device {self.device}: authentication refused by {where} (check user and "
                                  "identity_file, or load the key into ssh-agent)") from None
            except (socket.timeout, TimeoutError, ConnectionError, OSError, paramiko.SSHException) as exc:
                if attempt == retries:
                    raise DeviceError(f"device {self.device}: cannot connect to {where} after {retries} "
                                      f"attempts ({_why(exc)})") from None
                time.sleep(delay * (1 + random.random()))  # backoff with jitter
                delay *= 2
        raise AssertionError("unreachable")

    def _proxy_sock(self):
        jump = self.settings.get("proxy_jump")
        if not jump or jump.lower() == "none":
            return None
        import paramiko

        user, _, hostport = jump.rpartition("@")
        host, _, port = hostport.partition(":")
        self._jump = paramiko.SSHClient()
        kh = Path(self.settings["known_hosts"])
        if kh.exists():
            self._jump.load_host_keys(str(kh))
        self._jump.set_missing_host_key_policy(_Refuse(self.device + " (ProxyJump)", {"known_hosts": str(kh)}))
        self._jump.connect(host, port=int(port or 22), username=user or self.settings["user"],
                           key_filename=self.settings["identity_file"], timeout=self.settings["timeout"])
        return self._jump.get_transport().open_channel(
            "direct-tcpip", (self.settings["hostname"], self.settings["port"]), ("127.0.0.1", 0))

    # ----------------------------------------------------------------------------------- verbs
    def run(self, argv: list[str], timeout: float | None = None) -> Completed:
        import paramiko

        cmd = " ".join(shlex.quote(a) for a in argv)
        try:
            _, out, err = self.client.exec_command(cmd, timeout=timeout)
            stdout = out.read().decode(errors="replace")
            stderr = err.read().decode(errors="replace")
            return Completed(out.channel.recv_exit_status(), stdout, stderr)
        except (socket.timeout, TimeoutError):
            raise DeviceError(f"device {self.device}: command timed out after {timeout}s: {argv[0]}") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise DeviceError(f"device {self.device}: connection lost ({_why(exc)})") from None

    def spawn(self, argv: list[str]):
        import paramiko

        try:
            chan = self.client.get_transport().open_session()
            chan.exec_command(" ".join(shlex.quote(a) for a in argv))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise DeviceError(f"device {self.device}: connection lost ({_why(exc)})") from None
        return _Channel(chan)

    def sftp(self):
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
        return self._sftp

    def put(self, local: Path, remote: str) -> None:
        import paramiko

        try:
            self._mkdirs(posixpath.dirname(remote))
            self.sftp().put(str(local), remote, confirm=True)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise DeviceError(f"device {self.device}: upload of {local.name} failed ({_why(exc)})") from None

    def _mkdirs(self, folder: str) -> None:
        sftp = self.sftp()
        missing = []
        while folder not in ("", "/"):
            try:
                sftp.stat(folder)
                break
            except FileNotFoundError:
                missing.append(folder)
                folder = posixpath.dirname(folder)
        for f in reversed(missing):
            sftp.mkdir(f)

    def get(self, remote: str, local: Path) -> None:
        import paramiko

        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.sftp().get(remote, str(local))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise DeviceError(f"device {self.device}: download of {remote} failed ({_why(exc)})") from None

    def close(self) -> None:
        for c in (self._sftp, self.client, self._jump):
            try:
                if c is not None:
                    c.close()
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass


class _Channel:
    def __init__(self, chan):
        self.chan, self.file = chan, chan.makefile("r")

    def readline(self) -> str:
        return self.file.readline()

    def close(self) -> None:
        try:
            self.chan.shutdown_write()
            self.chan.close()
        except Exception:  # noqa: BLE001 - the link may already be gone; the device drops the lock then
            pass


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


class _HostKeyRefused(Exception):
    pass


class _Refuse:
    """Unknown host key: refuse, showing the fingerprint and how to accept it explicitly."""

    def __init__(self, device: str, settings: dict):
        self.device, self.settings = device, settings

    def missing_host_key(self, client, hostname, key):
        raise _HostKeyRefused(
            f"device {self.device}: unknown host key for {hostname} ({key.get_name()} {_fingerprint(key)}), "
            f"not in {self.settings['known_hosts']}; if that fingerprint is right, accept it with "
            f"`edgeslm devices trust {self.device}` (or ssh-keyscan it into known_hosts)")


class _AcceptAndRecord:
    """Trust on first use, only when asked for explicitly: record the new key in known_hosts."""

    def __init__(self, known_hosts: Path):
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key):
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with open(self.known_hosts, "a") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)
