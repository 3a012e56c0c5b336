"""Messages that point the right way, and answers that cannot flood this machine: a device that stops
answering during authentication, known_hosts and identity files that are not what they should be, a
workdir that cannot be used, a `python` that is not Python, paramiko's own log lines; stdout read in
bounded chunks and stderr's tail only, downloads refused before they start. Real sshd, real proxies."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from deployhelp import cli, device
from edgeslm.errors import EXIT_USER
from edgeslm.transport import DeviceError, connect
from sshd import CuttingProxy

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _key(sshd) -> str:
    return " ".join(sshd.host_pub.split()[:2])


def _one_line(r, pattern: str) -> str:
    """The command's one error line (progress lines aside), matching `pattern`; exit 2, no traceback."""
    assert r.exit_code == EXIT_USER, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and re.search(pattern, lines[0]), r.stderr
    assert "Traceback" not in r.output and "internal error" not in r.output
    return lines[0]


class AuthBlackhole:
    """Forwards the client's SSH banner and key exchange up to its NEWKEYS, then swallows everything it
    sends (the connection stays open): the device stops answering during authentication. With `cut_first`,
    the first connection is closed there instead (the link drops during authentication) and later ones are
    forwarded whole."""

    def __init__(self, target_port: int, cut_first: bool = False):
        self.target, self.cut_first, self.connections = target_port, cut_first, 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.swallowed = 0
        self.open: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.open += [client, upstream]
            self.connections += 1
            threading.Thread(target=self._down, args=(upstream, client), daemon=True).start()
            if self.cut_first and self.connections > 1:
                threading.Thread(target=self._down, args=(client, upstream), daemon=True).start()
            else:
                threading.Thread(target=self._up, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _down(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass

    def _up(self, client, upstream):
        buf, banner, through = b"", True, True
        try:
            while data := client.recv(65536):
                if not through:
                    self.swallowed += len(data)
                    continue
                buf += data
                out = b""
                while through:
                    if banner:
                        end = buf.find(b"\n")
                        if end < 0:
                            break
                        out, buf, banner = out + buf[:end + 1], buf[end + 1:], False
                        continue
                    if len(buf) < 6 or len(buf) < 4 + int.from_bytes(buf[:4], "big"):
                        break
                    n = 4 + int.from_bytes(buf[:4], "big")
                    packet, buf = buf[:n], buf[n:]
                    out += packet
                    if packet[5] == 21:  # SSH_MSG_NEWKEYS: what follows is encrypted, authentication first
                        through = False
                        self.swallowed += len(buf)
                upstream.sendall(out)
                if not through and self.cut_first:
                    for sock in (client, upstream):
                        sock.shutdown(socket.SHUT_RDWR)
                    return
        except OSError:
            pass

    def close(self):
        self.sock.close()
        for s in self.open:
            try:
                s.close()
            except OSError:
                pass


def test_a_device_that_stops_answering_during_authentication_is_not_said_to_refuse(tmp_path, inventory, sshd):
    hole = AuthBlackhole(sshd.port)
    known = tmp_path / "proxy_known_hosts"
    known.write_text(f"[127.0.0.1]:{hole.port} {_key(sshd)}\n")
    try:
        t0 = time.monotonic()
        r = cli("devices", "check", "pi", "--devices", inventory(pi={"port": hole.port, "known_hosts": known,
                                                                     "timeout": 1}))
        line = _one_line(r, rf"^error: device pi: cannot connect to root@127\.0\.0\.1:{hole.port} after 3 attempts "
                            r"\(the device stopped answering during authentication \(no answer within 1s, "
                            r"connect_timeout in devices.toml\)\)$")
        assert "refused" not in line and hole.swallowed > 0
        assert time.monotonic() - t0 < 20
    finally:
        hole.close()


@pytest.mark.parametrize("accept", [False, True])
def test_known_hosts_that_is_a_folder_is_named(tmp_path, inventory, accept):
    folder = tmp_path / "kh-folder"
    folder.mkdir()
    inv = inventory(pi={"known_hosts": folder})
    t0 = time.monotonic()
    r = cli("devices", "check", "pi", "--devices", inv, *(["--accept-new-host-key"] if accept else []))
    _one_line(r, rf"^error: device pi: known_hosts {re.escape(str(folder))}: is a folder, not a regular file "
                 r"\(set known_hosts for this device in devices.toml to a known_hosts file\)$")
    assert time.monotonic() - t0 < 5 and not any(folder.iterdir())


def test_known_hosts_that_is_a_fifo_does_not_hang(tmp_path, inventory):
    fifo = tmp_path / "kh-fifo"
    os.mkfifo(fifo)
    r = cli("devices", "check", "pi", "--devices", inventory(pi={"known_hosts": fifo}))
    _one_line(r, r"known_hosts .*kh-fifo: is a FIFO \(named pipe\), not a regular file")


@pytest.mark.parametrize("kind", ["public key", "binary", "folder"])
def test_identity_file_that_is_not_a_private_key_is_named_at_once(tmp_path, inventory, sshd, kind):
    path = inventory(pi={})
    bad = {"public key": Path(f"{sshd.client_key}.pub"), "binary": tmp_path / "random.bin",
           "folder": tmp_path / "keys"}[kind]
    if kind == "binary":
        bad.write_bytes(os.urandom(3000))
    elif kind == "folder":
        bad.mkdir()
    path.write_text(path.read_text().replace(f'"{sshd.client_key}"', f'"{bad}"'))
    t0 = time.monotonic()
    r = cli("devices", "check", "pi", "--devices", path)
    why = {"public key": r"is not a private key \(.*\); it is a public key: give the private one",
           "binary": r"is not a private key \(", "folder": r"is a folder, not a regular file"}[kind]
    line = _one_line(r, rf"^error: device pi: identity_file {re.escape(str(bad))} {why}.*\(fix identity_file in "
                        r"devices.toml or ~/.ssh/config\)$")
    assert "attempts" not in line and time.monotonic() - t0 < 3  # not retried


def test_workdir_that_cannot_be_used_is_named(tmp_path, inventory):
    path = inventory(pi={})
    path.write_text(path.read_text().replace(str(tmp_path / "wd-pi"), "/proc/1"))
    r = cli("devices", "check", "pi", "--devices", path)
    _one_line(r, r"^error: device pi: cannot use workdir /proc/1 \(\w+Error: .*/proc/1/runner.*\); set a writable "
                 r"'workdir' for this device in devices.toml$")


@pytest.mark.parametrize("python, said", [("/bin/echo", r"-c import json"), ("/bin/true", r"no output"),
                                          ("/bin/false", r"no output \(exit status 1\)")])
def test_python_that_is_not_python_is_named(tmp_path, inventory, tiny_builds, python, said):
    r = cli("deploy", tiny_builds["v1"], "-d", "pi", "--devices", inventory(pi={"python": python}))
    _one_line(r, rf"^error: device pi: python = '{python}' \(devices.toml\) is not a working Python: asked for its "
                 rf"version, it answered '{said}.*'; set 'python' for this device to a python3 >= 3.9$")
    assert not (tmp_path / "wd-pi").exists()


def test_a_link_that_drops_during_authentication_is_retried(tmp_path, inventory, sshd):
    """It once read "authentication refused ... check user and identity_file", and was not retried."""
    flaky = AuthBlackhole(sshd.port, cut_first=True)
    known = tmp_path / "proxy_known_hosts"
    known.write_text(f"[127.0.0.1]:{flaky.port} {_key(sshd)}\n")
    try:
        r = cli("devices", "check", "pi", "--devices", inventory(pi={"port": flaky.port, "known_hosts": known}))
    finally:
        flaky.close()
    assert r.exit_code == 0, r.output
    assert flaky.connections == 2


def test_a_handshake_cut_that_is_retried_prints_no_traceback(tmp_path, inventory, sshd):
    """paramiko logs the cut connection (traceback included) through its own logger; with no handler,
    Python's last-resort handler printed those lines on stderr beside a command that then succeeded."""
    flaky = CuttingProxy(sshd.port, limit=0, cuts=1)  # the first connection is cut at the SSH banner
    known = tmp_path / "proxy_known_hosts"
    known.write_text(f"[127.0.0.1]:{flaky.port} {_key(sshd)}\n")
    inv = inventory(pi={"port": flaky.port, "known_hosts": known})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("EDGESLM_DEBUG", None)
    try:
        r = subprocess.run([sys.executable, "-c", "from edgeslm.cli import main; main()", "devices", "check", "pi",
                            "--devices", str(inv)], capture_output=True, text=True, env=env, timeout=120)
    finally:
        flaky.close()
    assert r.returncode == 0, r.stderr
    assert flaky.cut and flaky.connections == 2
    assert "Traceback" not in r.stderr and "paramiko" not in r.stderr, r.stderr


# ------------------------------------------------------------------------------- bounded reading
def test_ssh_stdout_is_capped_and_stderr_keeps_its_tail(inventory):
    import tracemalloc

    conn = connect("pi", device(inventory(pi={})))
    try:
        tracemalloc.start()
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match=r"^device pi: command sh printed more than 1 MiB on stdout \(refused "
                                              r"without reading the rest\)"):
            conn.run(["sh", "-c", "head -c 300000000 /dev/zero"], timeout=60)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert time.monotonic() - t0 < 15 and peak < 32 << 20, peak
        # 50 MB on stderr, then the answer: read side by side (reading stdout first stalled the channel)
        r = conn.run(["sh", "-c", "head -c 50000000 /dev/zero | tr '\\0' e >&2; echo >&2; echo last words >&2; "
                      "echo answer; exit 3"], timeout=60)
        assert (r.rc, r.stdout) == (3, "answer\n")
        assert r.stderr.endswith("last words\n") and len(r.stderr) <= 64 << 10
        assert conn.run(["echo", "still", "usable"]).stdout == "still usable\n"
    finally:
        conn.close()


def test_local_stdout_is_capped_and_stderr_keeps_its_tail():
    from edgeslm.transport.local import LocalConnector

    conn = LocalConnector("local")
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match=r"^device local: command sh printed more than 1 MiB on stdout"):
        conn.run(["sh", "-c", "head -c 300000000 /dev/zero"], timeout=60)
    assert time.monotonic() - t0 < 15
    r = conn.run(["sh", "-c", "head -c 50000000 /dev/zero | tr '\\0' e >&2; echo >&2; echo last words >&2; echo answer"],
                 timeout=60)
    assert (r.rc, r.stdout) == (0, "answer\n") and r.stderr.endswith("last words\n") and len(r.stderr) <= 64 << 10
    r = conn.run(["/no/such/python", "-c", "pass"])
    assert r.rc == 127


@pytest.mark.parametrize("where", ["ssh", "local"])
def test_downloads_are_refused_before_they_start(tmp_path, inventory, where):
    from edgeslm.transport.local import LocalConnector

    big = tmp_path / "device" / "big.json"
    big.parent.mkdir()
    with open(big, "wb") as f:
        f.truncate(400 << 20)  # sparse: 400 MB that cost nothing here
    fifo = tmp_path / "device" / "fifo.json"
    os.mkfifo(fifo)
    conn = connect("pi", device(inventory(pi={}))) if where == "ssh" else LocalConnector("pi")
    local = tmp_path / "home" / "big.json"
    try:
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match=rf"^device pi: {re.escape(str(big))} is larger than the 64 MiB edgeslm "
                                              r"accepts for it \(400 MiB\); not downloaded$"):
            conn.get(str(big), local, limit=64 << 20)
        with pytest.raises(DeviceError, match=r"is not a regular file there; not downloaded|not a regular file"):
            conn.get(str(fifo), local, limit=64 << 20)
        assert time.monotonic() - t0 < 10 and not local.exists()
        small = tmp_path / "device" / "small.json"
        small.write_text("{}")
        conn.get(str(small), local, limit=64 << 20)
        assert local.read_text() == "{}"
    finally:
        conn.close()


def test_an_upload_the_device_refuses_is_not_a_lost_connection(tmp_path, inventory):
    conn = connect("pi", device(inventory(pi={})))
    src = tmp_path / "f.txt"
    src.write_text("x")
    try:
        with pytest.raises(DeviceError, match=r"^device pi: cannot create folder /proc/1/edgeslm-test there \("):
            conn.put(src, "/proc/1/edgeslm-test/f.txt")
        with pytest.raises(DeviceError) as info:
            conn.put(src, "/proc/version")
        assert "connection lost" not in str(info.value), info.value
        assert conn.run(["echo", "ok"]).stdout == "ok\n"
    finally:
        conn.close()
