"""A real OpenSSH server on loopback with its own keys and config, for deploy tests."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


@dataclass
class Sshd:
    folder: Path
    port: int
    client_key: Path
    host_pub: str  # "ssh-ed25519 AAAA..."
    proc: subprocess.Popen | None = None

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {' '.join(self.host_pub.split()[:2])}"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def start_sshd(folder: Path, port: int | None = None) -> Sshd:
    if not Path(SSHD).exists():
        raise RuntimeError(f"{SSHD} is missing: apt-get install openssh-server (make test does this)")
    folder.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host_pub = keygen(folder / "host_ed25519")
    client_pub = keygen(folder / "client_ed25519")
    (folder / "authorized_keys").write_text(client_pub + "\n")
    port = port or free_port()
    conf = folder / "sshd_config"
    conf.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {folder / 'host_ed25519'}
PidFile {folder / 'sshd.pid'}
AuthorizedKeysFile {folder / 'authorized_keys'}
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
MaxStartups 50
Subsystem sftp internal-sftp
""")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=open(folder / "sshd.log", "w"))
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(folder / 'sshd.log').read_text()}")
            time.sleep(0.05)
    return Sshd(folder, port, folder / "client_ed25519", host_pub, proc)


class _Proxy:
    """A loopback TCP proxy to `target_port`; subclasses decide, chunk by chunk, what gets through
    (`_forward(connection_index, from_client, byte_count_so_far)` -> "send" | "cut" | "silence")."""

    chunk = 65536  # bytes read per turn

    def __init__(self, target_port: int, limit: int):
        import threading

        self.limit, self.target = limit, target_port
        self.connections = 0
        self.open: list[socket.socket] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _forward(self, index: int, from_client: bool, sent: int) -> str:
        raise NotImplementedError

    def _pace(self, from_client: bool, n: int) -> None:
        """Called before `n` bytes are passed on (a slow link waits here)."""

    def close(self):
        """Stop listening and close every connection it made (a silent link's too)."""
        self.sock.close()
        for s in self.open:
            try:
                s.close()
            except OSError:
                pass

    def _serve(self):
        import threading

        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.open += [client, upstream]
            self.connections += 1
            index, sent = self.connections, [0]

            def pump(src, dst, from_client):
                try:
                    while True:
                        data = src.recv(self.chunk)
                        if not data:
                            break
                        if from_client:
                            sent[0] += len(data)
                        verdict = self._forward(index, from_client, sent[0])
                        if verdict == "silence":
                            return  # nothing more either way, and nothing closed
                        if verdict == "cut":
                            break
                        self._pace(from_client, len(data))
                        dst.sendall(data)
                except OSError:
                    pass
                for sock in (src, dst):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                        sock.close()
                    except OSError:
                        pass

            threading.Thread(target=pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client, False), daemon=True).start()


class CuttingProxy(_Proxy):
    """Cuts both directions after `limit` client bytes: a dropped link. With `cuts`, only the first
    `cuts` connections are cut; later ones are forwarded whole."""

    def __init__(self, target_port: int, limit: int, cuts: int | None = None):
        self.cuts, self.cut = cuts, False
        super().__init__(target_port, limit)

    def _forward(self, index: int, from_client: bool, sent: int) -> str:
        if from_client and (self.cuts is None or index <= self.cuts) and sent > self.limit:
            self.cut = True
            return "cut"
        return "send"

    def close(self):
        self.sock.close()


class SilentProxy(_Proxy):
    """Forwards `limit` client bytes, then stops forwarding (and reading) both ways without closing
    anything: a link that went silent. Connections stay open until close()."""

    def __init__(self, target_port: int, limit: int):
        import threading

        self.silent = threading.Event()
        super().__init__(target_port, limit)

    def _forward(self, index: int, from_client: bool, sent: int) -> str:
        if self.silent.is_set() or (from_client and sent > self.limit):
            self.silent.set()
            return "silence"
        return "send"


class SlowProxy(_Proxy):
    """A slow link: every connection through it shares `rate` bytes per second in each direction, passed
    on in small packets in the order they queue (a bottleneck that serves flows packet by packet). What
    waits to cross it stays in the sender's and the proxy's socket buffers, per connection, as on a real
    slow link. `limit` is unused (nothing is cut)."""

    chunk = 2048

    def __init__(self, target_port: int, rate: float):
        import threading

        self.rate = float(rate)
        self._lock = threading.Lock()
        self._free = {True: 0.0, False: 0.0}  # when the link is next free, per direction
        super().__init__(target_port, 0)

    def _forward(self, index: int, from_client: bool, sent: int) -> str:
        return "send"

    def _pace(self, from_client: bool, n: int) -> None:
        with self._lock:
            start = max(time.monotonic(), self._free[from_client])
            self._free[from_client] = done = start + n / self.rate
        time.sleep(max(0.0, done - time.monotonic()))

