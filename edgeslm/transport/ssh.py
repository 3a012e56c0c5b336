"""SSH connector (paramiko): verified host keys, ~/.ssh/config aliases, retries on transient failures,
and a bounded wait on every exchange.

Host keys are checked against the device's known_hosts file (read by `known_hosts`): an unknown key is
refused with its fingerprint and the way to accept it; a changed or revoked key is refused, always.
Passwords and passphrases are never logged (paramiko gets them from the agent or key files; edgeslm
never asks for or stores one).

A link can go silent (connection open, nothing forwarded). Every connection therefore sends SSH
keepalives that the server must answer, and a watchdog closes it when nothing at all has arrived for
`io_timeout` seconds: whatever was waiting (a command, an upload, a lock) then fails with one line.
"""

from __future__ import annotations

import logging
import os
import posixpath
import random
import shlex
import socket
import threading
import time
from pathlib import Path

from edgeslm.transport import known_hosts as kh
from edgeslm.transport.base import (MAX_OUTPUT, Completed, DeviceError, check_download, command_name, printable,
                                    size_text)
from edgeslm.transport.ssh_keys import AcceptAndRecord, HostKeyRefused, Refuse, check_identity, fingerprint, revoked
from edgeslm.transport.ssh_link import Channel, Overflow, Watched, drain, keepalive, why

__all__ = ["DeviceError", "SSHConnector", "resolve_settings"]


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
        # paramiko has expanded %h, %p, %r in it; OpenSSH takes the first of ProxyJump and ProxyCommand it
        # reads, edgeslm ProxyJump when both are set
        "proxy_command": found.get("proxycommand"),
        "known_hosts": str(Path(device.known_hosts).expanduser()),
        "timeout": device.connect_timeout,
        "io_timeout": device.io_timeout,
    }


class _Retry(Exception):
    """A transient failure worth another attempt; `where` names the hop that failed."""

    def __init__(self, where: str, exc: BaseException):
        self.where = where
        self.why = exc.why if isinstance(exc, _Retry) else why(exc)
        super().__init__(f"{where}: {self.why}")


def quiet_paramiko() -> None:
    """paramiko's transport thread logs what ends a connection (a handshake cut that edgeslm retries, a
    link the watchdog closed) at ERROR level, traceback included, to its logger `paramiko.transport`. With no
    handler configured, Python's last-resort handler prints that on stderr: 25 lines beside edgeslm's
    one-line message, for a failure that was retried and did not matter. edgeslm reports every failure
    itself, so paramiko's records go nowhere (EDGESLM_DEBUG=1 lets them through)."""
    logger = logging.getLogger("paramiko")
    if os.environ.get("EDGESLM_DEBUG"):
        return
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())
    logger.propagate = False


class SSHConnector:
    def __init__(self, name: str, device, accept_new_host_key: bool = False, retries: int = 3):
        quiet_paramiko()
        self.device = name
        self._entry, self._retries = device, retries
        self._holders = None  # the second connection, for lock and pin holders (spawn_holder)
        self.settings = resolve_settings(device)
        self.io_timeout = float(self.settings["io_timeout"])
        self.accept_new = accept_new_host_key
        try:
            self.known = kh.load(Path(self.settings["known_hosts"]))
        except kh.KnownHostsError as exc:
            raise DeviceError(f"device {name}: known_hosts {exc} (set known_hosts for this device in "
                              "devices.toml to a known_hosts file)") from None
        self._jump = None
        self._sock = None
        self._dead: str | None = None  # why the watchdog closed the link
        self._closing = threading.Event()
        self.client = self._connect(retries)
        self._sftp = None
        self._watch()

    # ---------------------------------------------------------------------------------- connect
    def _connect(self, retries: int):
        s = self.settings
        where = f"{s['user']}@{s['hostname']}:{s['port']}"
        if s["identity_file"]:
            check_identity(self.device, s["identity_file"])
        delay = 0.5
        for attempt in range(1, retries + 1):
            try:
                sock = self._open_socket()
                return self._client(s["hostname"], s["port"], s["user"], sock, f"device {self.device}", where)
            except _Retry as exc:
                self._close_jump()
                if attempt == retries:
                    raise DeviceError(f"device {self.device}: cannot connect to {exc.where} after {retries} "
                                      f"attempts ({exc.why})") from None
                time.sleep(delay * (1 + random.random()))  # backoff with jitter
                delay *= 2
            except DeviceError:
                self._close_jump()
                raise
        raise AssertionError("unreachable")

    def _client(self, host: str, port: int, user: str, sock, who: str, where: str):
        """A connected, authenticated SSHClient over `sock`; host keys checked against known_hosts."""
        import paramiko

        client = paramiko.SSHClient()
        name = kh.lookup_name(host, port)
        for key in self.known.keys_for(name):
            client.get_host_keys().add(name, key.get_name(), key)
        kh_path = Path(self.settings["known_hosts"])
        client.set_missing_host_key_policy(
            AcceptAndRecord(kh_path, self.known, who) if self.accept_new else Refuse(who, str(kh_path), self.known))
        s = self.settings
        try:
            client.connect(host, port=port, username=user, key_filename=s["identity_file"], timeout=s["timeout"],
                           banner_timeout=s["timeout"], auth_timeout=s["timeout"], channel_timeout=s["timeout"],
                           sock=sock, allow_agent=True, look_for_keys=s["identity_file"] is None)
            return client
        except HostKeyRefused as exc:
            client.close()
            raise DeviceError(str(exc)) from None
        except paramiko.BadHostKeyException as exc:
            client.close()
            if self.known.is_revoked(exc.key):
                raise DeviceError(revoked(who, where, exc.key, str(kh_path))) from None
            raise DeviceError(
                f"{who}: host key for {where} CHANGED (now {fingerprint(exc.key)}, "
                f"{kh_path} has {fingerprint(exc.expected_key)}); refusing to connect. "
                "If the device was reinstalled, remove its old line from known_hosts") from None
        except paramiko.PasswordRequiredException:
            client.close()
            raise DeviceError(f"{who}: identity file {s['identity_file']} is encrypted; load "
                              "it into ssh-agent (edgeslm never asks for or stores passphrases)") from None
        except paramiko.AuthenticationException as exc:
            client.close()
            # paramiko raises the same exception when the device stops answering mid-authentication
            # (no answer within auth_timeout) or the link drops then: those are not refusals
            text = str(exc).lower()
            if "timeout" in text:
                raise _Retry(where, TimeoutError(f"the device stopped answering during authentication (no answer "
                                                 f"within {s['timeout']:g}s, connect_timeout in devices.toml)")) from None
            if "transport shut down" in text or "eof" in text:
                raise _Retry(where, ConnectionError("the connection dropped during authentication")) from None
            raise DeviceError(f"{who}: authentication refused by {where} (check user and "
                              "identity_file, or load the key into ssh-agent)") from None
        except (socket.timeout, TimeoutError, ConnectionError, OSError, EOFError, paramiko.SSHException) as exc:
            client.close()
            raise _Retry(where, exc) from None

    def _open_socket(self):
        """A TCP connection to the device, a channel through the ProxyJump host, or the pipes of the
        ProxyCommand (~/.ssh/config); wrapped so the watchdog knows when bytes last arrived."""
        s = self.settings
        jump = s.get("proxy_jump")
        command = s.get("proxy_command")
        if (not jump or jump.lower() == "none") and command and command.lower() != "none":
            import paramiko

            try:
                self._sock = Watched(paramiko.ProxyCommand(command))
            except (paramiko.SSHException, OSError) as exc:
                raise _Retry(f"ProxyCommand {command!r}", exc) from None
            return self._sock
        if not jump or jump.lower() == "none":
            try:
                raw = socket.create_connection((s["hostname"], s["port"]), timeout=s["timeout"])
            except OSError as exc:
                raise _Retry(f"{s['user']}@{s['hostname']}:{s['port']}", exc) from None
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            self._sock = Watched(raw)
            return self._sock
        user, _, hostport = jump.rpartition("@")
        host, _, port = hostport.partition(":")
        user, port = user or s["user"], int(port or 22)
        where = f"{user}@{host}:{port}"
        who = f"device {self.device}: ProxyJump host {where}"
        try:
            raw = socket.create_connection((host, port), timeout=s["timeout"])
        except OSError as exc:
            raise _Retry(f"ProxyJump host {where}", exc) from None
        try:
            self._jump = self._client(host, port, user, Watched(raw), who, where)
        except _Retry as exc:
            raise _Retry(f"ProxyJump host {where}", exc) from None
        try:
            chan = self._jump.get_transport().open_channel(
                "direct-tcpip", (s["hostname"], s["port"]), ("127.0.0.1", 0), timeout=s["timeout"])
        except (OSError, EOFError, Exception) as exc:  # noqa: BLE001 - paramiko's ChannelException et al.
            raise _Retry(f"ProxyJump host {where} (forwarding to {s['hostname']}:{s['port']})", exc) from None
        self._sock = Watched(chan)
        return self._sock

    def _close_jump(self) -> None:
        if self._jump is not None:
            try:
                self._jump.close()
            except Exception:  # noqa: BLE001
                pass
            self._jump = None

    # ---------------------------------------------------------------------------------- liveness
    def _watch(self) -> None:
        """Keepalives the server must answer, and a watchdog that closes a silent link.

        The watchdog pings whenever nothing has arrived for `interval`, whatever this side sends
        meanwhile (paramiko's own keepalive waits for a pause in *outgoing* traffic, so a session that
        keeps writing, such as a lock heartbeat, would never ping and a long quiet command would look
        like a dead link)."""
        transport = self.client.get_transport()
        interval = max(0.25, min(10.0, self.io_timeout / 4))
        sock = self._sock

        def watchdog():
            pinged = 0.0
            while not self._closing.wait(min(0.5, interval / 2)) and transport.is_active():
                now = time.monotonic()
                silent = now - sock.last
                if silent > self.io_timeout:
                    self._dead = (f"no answer from the device for {silent:.0f}s (link silent or device "
                                  f"hung; io_timeout = {self.io_timeout:g}s in devices.toml)")
                    transport.close()  # every waiting channel, SFTP request and lock then fails
                    return
                if silent >= interval and now - pinged >= interval:
                    keepalive(transport)
                    pinged = now

        threading.Thread(target=watchdog, name=f"ssh-watchdog-{self.device}", daemon=True).start()

    def _lost(self, exc: BaseException, doing: str) -> DeviceError:
        if self._dead:
            return DeviceError(f"device {self.device}: {doing} failed: {self._dead}")
        transport = self.client.get_transport() if getattr(self, "client", None) else None
        if (isinstance(exc, OSError) and not isinstance(exc, (socket.timeout, TimeoutError, ConnectionError))
                and transport is not None and transport.is_active()):
            # the link is fine: the device (SFTP) or this machine refused (permission, no such folder, full disk)
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            return DeviceError(f"device {self.device}: {doing} failed: {printable(exc.strerror or why(exc))}{where}")
        return DeviceError(f"device {self.device}: {doing} failed: connection lost ({why(exc)})")

    # ----------------------------------------------------------------------------------- verbs
    def run(self, argv: list[str], timeout: float | None = None, limit: int = MAX_OUTPUT,
            listen=None) -> Completed:
        import paramiko

        cmd = " ".join(shlex.quote(a) for a in argv)
        what = command_name(argv)
        chan = None
        try:
            chan = self.client.get_transport().open_session(timeout=self.io_timeout)
            chan.exec_command(cmd)
            out, err, rc = drain(chan, limit, timeout, listen)
            if self._dead:  # the watchdog closed the link: the command's end is unknown
                raise self._lost(EOFError(), what)
            return Completed(rc, out.decode(errors="replace"), err.decode(errors="replace"))
        except Overflow:
            raise DeviceError(f"device {self.device}: {what} printed more than {size_text(limit)} on stdout "
                              "(refused without reading the rest); is the device's runner intact?") from None
        except (socket.timeout, TimeoutError):
            if self._dead:
                raise self._lost(TimeoutError(), what) from None
            raise DeviceError(f"device {self.device}: {what} timed out after {timeout:g}s "
                              "(command_timeout in devices.toml)") from None
        except (paramiko.SSHException, OSError, EOFError, AttributeError) as exc:  # AttributeError: no transport
            raise self._lost(ConnectionError(why(exc)) if isinstance(exc, OSError) else exc, what) from None
        finally:
            if chan is not None:
                chan.close()  # ends a command that is still writing (an answer refused, a timeout)

    def spawn(self, argv: list[str], timeout: float | None = None):
        import paramiko

        try:
            chan = self.client.get_transport().open_session(timeout=self.io_timeout)
            chan.settimeout(timeout or self.io_timeout)
            chan.exec_command(" ".join(shlex.quote(a) for a in argv))
        except (paramiko.SSHException, OSError, EOFError, AttributeError) as exc:
            raise self._lost(exc, command_name(argv)) from None
        return Channel(chan)

    def spawn_holder(self, argv: list[str], timeout: float | None = None):
        """`spawn` for a lock or pin holder, on a second connection to the device (opened once, closed with
        this one). Its heartbeats then travel in a TCP stream of their own: on this connection they would
        queue behind the file data an upload keeps in flight (the socket buffer and the server's SFTP window,
        up to ~2 MB: 20 s on a 100 KB/s link), and the device would let the lock go. Same settings; the
        device must show the host key this connection verified, and nothing is asked or recorded again."""
        if self._holders is None:
            other = SSHConnector(self.device, self._entry, accept_new_host_key=False, retries=self._retries)
            key = self.client.get_transport().get_remote_server_key()
            if other.client.get_transport().get_remote_server_key().asbytes() != key.asbytes():
                other.close()
                raise DeviceError(f"device {self.device}: a second connection to the device showed another host "
                                  f"key than the first ({fingerprint(key)}); refusing to go on")
            self._holders = other
        return self._holders.spawn(argv, timeout)

    def sftp(self):
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
            self._sftp.get_channel().settimeout(self.io_timeout)
        return self._sftp

    def put(self, local: Path, remote: str, progress=None) -> None:
        import paramiko

        try:
            self._mkdirs(posixpath.dirname(remote))
            self.sftp().put(str(local), remote, callback=progress, confirm=True)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self._lost(exc, f"upload of {local.name}") from None

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
            try:
                sftp.mkdir(f)
            except OSError as exc:
                try:
                    sftp.stat(f)  # made meanwhile by another session: fine
                except OSError:
                    raise DeviceError(f"device {self.device}: cannot create folder {f} there "
                                      f"({printable(exc.strerror or why(exc))})") from None

    def get(self, remote: str, local: Path, limit: int | None = None) -> None:
        import paramiko

        local.parent.mkdir(parents=True, exist_ok=True)
        made = not local.exists()
        try:
            sftp = self.sftp()
            info = sftp.stat(remote)
            check_download(self.device, remote, info.st_mode, info.st_size, limit)
            got = 0
            with sftp.open(remote, "rb") as src, open(local, "wb") as dst:
                src.prefetch(info.st_size)
                while True:
                    block = src.read(1 << 16)
                    if not block:
                        break
                    got += len(block)
                    check_download(self.device, remote, info.st_mode, got, limit)  # it grew meanwhile
                    dst.write(block)
        except DeviceError:
            if made:
                local.unlink(missing_ok=True)
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if made:
                local.unlink(missing_ok=True)
            raise self._lost(exc, f"download of {remote}") from None

    def close(self) -> None:
        self._closing.set()
        if self._holders is not None:
            self._holders.close()
        for c in (self._sftp, self.client, self._jump):
            try:
                if c is not None:
                    c.close()
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass


