"""Links that go silent or are cut, locks whose holder vanished, known_hosts files edgeslm does not fully
understand, and one exit code per refusal. Real sshd, real TCP proxies, real runner processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from deployhelp import cli, device, variant
from edgeslm.errors import EXIT_FAILED, EXIT_USER, UserError
from edgeslm.profiling.deploy import deploy
from edgeslm.runner import RUNNER_PATH
from sshd import CuttingProxy, SilentProxy, free_port, keygen

pytestmark = pytest.mark.slow
QUIET = {"log": lambda m: None}

_dev = device


def _current(wd: Path) -> str:
    return os.readlink(wd / "tinydeploy" / "current")


def _key(sshd) -> str:
    return " ".join(sshd.host_pub.split()[:2])


# ------------------------------------------------------------------------------ silent links, locks
def test_silent_link_fails_within_io_timeout_and_the_device_lock_frees_itself(tmp_path, inventory, tiny_builds,
                                                                              sshd):
    wd = tmp_path / "wd-pi"
    first = deploy(tiny_builds["v1"], "pi", _dev(inventory(pi={})), **QUIET)
    other = variant(tiny_builds["v1"], tmp_path / "other", "f", grow=600_000)
    proxy = SilentProxy(sshd.port, limit=150_000)
    known = tmp_path / "proxy_known_hosts"
    known.write_text(f"[127.0.0.1]:{proxy.port} {_key(sshd)}\n")
    silent = _dev(inventory(pi={"port": proxy.port, "known_hosts": known, "io_timeout": 2, "lock_expire": 2}))
    box = {}

    def go():
        try:
            deploy(other, "pi", silent, **QUIET)
        except Exception as exc:  # noqa: BLE001 - inspected below
            box["error"] = exc

    t0 = time.monotonic()
    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(60)
    try:
        assert not worker.is_alive(), "deploy hangs on a silent link"
        assert proxy.silent.is_set() and time.monotonic() - t0 < 20
        err = box.get("error")
        assert isinstance(err, UserError), repr(err)
        assert re.match(r"device pi: upload of model\.onnx failed: no answer from the device for \ds", str(err)), err
        assert _current(wd) == f"versions/{first.version}"
        # sshd still holds the silent session, but the lock holder on the device lost its heartbeats
        # and let go: a deploy over a good link gets the lock (waiting for it at most lock_wait)
        good = _dev(inventory(pi={"lock_wait": 20, "lock_expire": 2}))
        done = deploy(other, "pi", good, **QUIET)
        assert _current(wd) == f"versions/{done.version}"
    finally:
        proxy.close()


def test_a_long_quiet_command_survives_while_this_side_keeps_writing(inventory):
    """The watchdog pings the device whenever nothing arrives, even while this side sends (a lock's
    heartbeats): a command that prints nothing for 3x io_timeout completes; a real silence still fails."""
    from edgeslm.transport import connect

    conn = connect("pi", _dev(inventory(pi={"io_timeout": 1.5})))
    writer = conn.spawn(["sh", "-c", "cat > /dev/null"], timeout=30)  # written to, answers nothing
    stop = threading.Event()

    def heartbeat():
        while not stop.wait(0.2):
            writer.write("beat\n")

    beats = threading.Thread(target=heartbeat, daemon=True)
    beats.start()
    try:
        t0 = time.monotonic()
        r = conn.run(["sh", "-c", "sleep 5; echo done"], timeout=30)
        assert (r.rc, r.stdout.strip()) == (0, "done") and time.monotonic() - t0 >= 5
    finally:
        stop.set()
        beats.join(5)
        conn.close()


def _holder(wd: Path, expire: float, owner: str = "ci@other-host (edgeslm pid 7)") -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, str(RUNNER_PATH), "hold", "--workdir", str(wd), "tinydeploy",
                          "--owner", owner, "--expire", str(expire)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert "locked" in p.stdout.readline()
    return p


def test_break_lock_frees_only_a_stale_holder_that_is_our_runner(tmp_path, inventory, tiny_builds):
    inv = inventory(pi={})
    wd = tmp_path / "wd-pi"
    # a live deploy (fresh heartbeat) is never broken
    live = _holder(wd, expire=300)
    try:
        r = cli("deploy", tiny_builds["v1"], "-d", "pi", "--devices", inv, "--break-lock")
        assert r.exit_code == EXIT_USER and "that deploy is alive; not breaking it" in r.output, r.output
        assert live.poll() is None
    finally:
        live.stdin.close()
        live.wait(10)

    # a holder that stopped answering (frozen: it cannot even expire by itself)
    stale = _holder(wd, expire=1)
    os.kill(stale.pid, signal.SIGSTOP)
    try:
        time.sleep(2)
        r = cli("deploy", tiny_builds["v1"], "-d", "pi", "--devices", inv)
        assert r.exit_code == EXIT_USER
        assert re.search(r"another deploy is in progress on this device \(held by ci@other-host \(edgeslm pid 7\) "
                         r"\(device pid \d+\) since \S+, last heartbeat \d+s ago\); it looks stale: "
                         r"`edgeslm deploy --break-lock` frees it", r.output), r.output
        r = cli("deploy", tiny_builds["v1"], "-d", "pi", "--devices", inv, "--break-lock")
        assert r.exit_code == 0, r.output
        assert "broke the stale deploy lock of ci@other-host" in r.stderr
        assert stale.wait(10) == -signal.SIGKILL
    finally:
        if stale.poll() is None:
            stale.kill()

    # a lock record naming a process that is not our runner: nothing is killed
    bystander = subprocess.Popen(["sleep", "60"])
    grab = ("import fcntl,json,os,sys,time; fd=os.open(sys.argv[1], os.O_RDWR|os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.ftruncate(fd, 0); os.write(fd, json.dumps({'owner': 'x', "
            "'pid': int(sys.argv[2]), 'since': 0, 'heartbeat': 0, 'expire': 1}).encode()); print('ok', flush=True); "
            "sys.stdin.read()")
    other = subprocess.Popen([sys.executable, "-c", grab, str(wd / "tinydeploy" / ".deploy.lock"), str(bystander.pid)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "ok"
        r = cli("deploy", tiny_builds["v1"], "-d", "pi", "--devices", inv, "--break-lock")
        assert r.exit_code == EXIT_USER and "is not this runner's lock holder" in r.output, r.output
        assert bystander.poll() is None and other.poll() is None
    finally:
        other.stdin.close()
        other.wait(10)
        bystander.kill()


# -------------------------------------------------------------------------------- handshake cuts
def test_cut_during_the_handshake_is_retried_then_reported_in_one_line(tmp_path, inventory, tiny_builds, sshd):
    flaky = CuttingProxy(sshd.port, limit=300, cuts=2)  # the first two connections die mid key exchange
    known = tmp_path / "proxy_known_hosts"
    known.write_text(f"[127.0.0.1]:{flaky.port} {_key(sshd)}\n")
    r = deploy(tiny_builds["v1"], "pi", _dev(inventory(pi={"port": flaky.port, "known_hosts": known})), **QUIET)
    assert r.sent_files > 0 and flaky.connections == 4 and flaky.cut  # 4: the lock holder's own connection
    flaky.close()

    dead = CuttingProxy(sshd.port, limit=300)  # every connection dies mid key exchange
    known.write_text(f"[127.0.0.1]:{dead.port} {_key(sshd)}\n")
    inv = inventory(pi={"port": dead.port, "known_hosts": known})
    r = cli("deploy", tiny_builds["v1"], "-d", "pi", "--devices", inv)
    dead.close()
    assert r.exit_code == EXIT_USER, r.output
    assert re.search(rf"error: device pi: cannot connect to root@127\.0\.0\.1:{dead.port} after 3 attempts", r.output)
    assert "internal error" not in r.output and len(r.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------------- known_hosts
def _hashed(name: str) -> str:
    import paramiko

    return paramiko.HostKeys.hash_host(name)


def test_known_hosts_with_markers_hashed_hosts_and_malformed_lines(tmp_path, inventory, sshd):
    other = keygen(tmp_path / "ca")
    known = tmp_path / "known_hosts"
    known.write_text("\n".join([
        "# a comment",
        "",
        f"@cert-authority *.example.org {' '.join(other.split()[:2])}",
        "just-one-field",
        "example.org ssh-ed25519 !!!not-base64!!!",
        f"@unknown-marker example.org {' '.join(other.split()[:2])}",
        "example.org,!127.0.0.1 ssh-frobnicate AAAA",
        f"{_hashed(f'[127.0.0.1]:{sshd.port}')} {_key(sshd)}",
    ]) + "\n")
    inv = inventory(pi={"known_hosts": known})
    r = cli("devices", "check", "pi", "--devices", inv, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["device"] == "pi"
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning: ")]
    assert [re.search(r":(\d+): ", w).group(1) for w in warnings] == ["3", "4", "5", "6", "7"], warnings
    assert "@cert-authority (host certificates) is not supported" in warnings[0]
    assert all(w.endswith("line skipped") for w in warnings)


@pytest.mark.parametrize("lines", ["revoked-only", "revoked-and-listed", "revoked-wildcard"])
def test_revoked_host_key_is_refused_even_when_accepting_new_keys(tmp_path, inventory, sshd, lines):
    known = tmp_path / "known_hosts"
    host = f"[127.0.0.1]:{sshd.port}"
    text = {"revoked-only": f"@revoked {host} {_key(sshd)}\n",
            "revoked-and-listed": f"{host} {_key(sshd)}\n@revoked {host} {_key(sshd)}\n",
            "revoked-wildcard": f"{host} {_key(sshd)}\n@revoked * {_key(sshd)}\n"}[lines]
    known.write_text(text)
    inv = inventory(pi={"known_hosts": known})
    for extra in ((), ("--accept-new-host-key",)):
        r = cli("devices", "check", "pi", "--devices", inv, *extra)
        assert r.exit_code == EXIT_USER, r.output
        assert re.search(r"error: device pi: host key for \S+ \(ssh-ed25519 SHA256:\S+\) is REVOKED in", r.output)
    assert known.read_text() == text  # never recorded


# ------------------------------------------------------------------------- one refusal, one code
def test_host_key_refusal_gives_exit_2_from_every_command(tmp_path, inventory, tiny_builds):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    inv = inventory(pi={"known_hosts": empty}, pj={"known_hosts": empty, "groups": ("lab",)})
    for args in (["deploy", tiny_builds["v1"], "-d", "pi"], ["profile", "-d", "pi"], ["rollback", "-d", "pi"],
                 ["devices", "check", "pi"]):
        r = cli(*args, "--devices", inv)
        assert r.exit_code == EXIT_USER, (args, r.output)
        assert re.search(r"^error: device pi: unknown host key for \[127\.0\.0\.1\]:\d+ \(ssh-ed25519 SHA256:",
                         r.stderr), (args, r.output)
    # several devices: each failure is named and the command exits 1
    r = cli("deploy", tiny_builds["v1"], "-g", "lab", "-d", "pi", "--devices", inv)
    assert r.exit_code == EXIT_FAILED
    assert "FAILED pi: device pi: unknown host key" in r.stdout and "FAILED pj: device pj: unknown host key" in r.stdout


def test_proxyjump_failures_name_the_jump_host(tmp_path, inventory, tiny_builds, sshd, monkeypatch):
    dead = free_port()
    cfg = tmp_path / "ssh_config"
    monkeypatch.setenv("EDGESLM_SSH_CONFIG", str(cfg))
    inv = tmp_path / "devices.toml"
    known = tmp_path / "known_hosts"
    inv.write_text(f'[devices.viajump]\nhost = "viajump"\nknown_hosts = "{known}"\ntarget = "host"\n'
                   f'workdir = "{tmp_path / "wd"}"\npython = "{sys.executable}"\nconnect_timeout = 2\n')
    cfg.write_text(f"Host viajump\n    HostName localhost\n    Port {sshd.port}\n    User root\n"
                   f"    IdentityFile {sshd.client_key}\n    ProxyJump root@127.0.0.1:{dead}\n")
    known.write_text(f"[localhost]:{sshd.port} {_key(sshd)}\n[127.0.0.1]:{sshd.port} {_key(sshd)}\n")
    with pytest.raises(UserError, match=rf"^device viajump: cannot connect to ProxyJump host root@127\.0\.0\.1:{dead} "
                                        r"after 3 attempts"):
        deploy(tiny_builds["v1"], "viajump", _dev(inv, "viajump"), **QUIET)
    # the jump host answers, but its key is unknown (only the target's is in known_hosts)
    cfg.write_text(cfg.read_text().replace(f"127.0.0.1:{dead}", f"127.0.0.1:{sshd.port}"))
    known.write_text(f"[localhost]:{sshd.port} {_key(sshd)}\n")
    with pytest.raises(UserError, match=rf"^device viajump: ProxyJump host root@127\.0\.0\.1:{sshd.port}: unknown "
                                        rf"host key for \[127\.0\.0\.1\]:{sshd.port}"):
        deploy(tiny_builds["v1"], "viajump", _dev(inv, "viajump"), **QUIET)
    # both known: through the jump host to the device
    known.write_text(f"[localhost]:{sshd.port} {_key(sshd)}\n[127.0.0.1]:{sshd.port} {_key(sshd)}\n")
    r = deploy(tiny_builds["v1"], "viajump", _dev(inv, "viajump"), **QUIET)
    assert r.sent_files > 0
