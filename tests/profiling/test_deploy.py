"""Deploy over a real OpenSSH server on loopback: idempotent, verified, atomic, reversible."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeslm.config.devices import load_inventory
from edgeslm.errors import UserError
from edgeslm.runner import RUNNER_PATH
from edgeslm.profiling.deploy import deploy, rollback
from edgeslm.profiling.profile import profile
from sshd import CuttingProxy

pytestmark = pytest.mark.slow


def _dev(path: Path, name: str = "pi"):
    return load_inventory(path).get(name)


def _umount(path: Path) -> None:
    """The device's lock holder may need a moment to see its session close and exit."""
    import time

    for _ in range(50):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "-l", str(path)], check=True)


def _current(workdir: Path, recipe: str = "tinydeploy") -> str:
    return os.readlink(workdir / recipe / "current")


def test_first_deploy_redeploy_new_version_and_rollback(tmp_path, inventory, tiny_builds):
    dev = _dev(inventory(pi={}))
    wd = tmp_path / "wd-pi"
    first = deploy(tiny_builds["v1"], "pi", dev, log=lambda m: None)
    assert first.sent_files >= 5 and not first.already_there and first.previous is None
    v1 = _current(wd)
    assert v1 == f"versions/{first.version}"
    assert json.loads((wd / "tinydeploy" / "current" / "manifest.json").read_text())["cache_key"].startswith(first.version)

    again = deploy(tiny_builds["v1"], "pi", dev, log=lambda m: None)
    assert again.already_there and again.sent_files == 0 and _current(wd) == v1

    second = deploy(tiny_builds["v2"], "pi", dev, log=lambda m: None)
    assert second.version != first.version and _current(wd) == f"versions/{second.version}"
    assert second.sent_files == 0 and second.reused_files >= 5  # same model files: nothing re-sent
    assert os.readlink(wd / "tinydeploy" / "previous") == v1

    back = rollback("pi", dev, None)
    assert back["current"] == v1 and _current(wd) == v1


def test_unknown_host_key_is_refused_then_trusted_explicitly(tmp_path, inventory, tiny_builds, sshd):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    dev = _dev(inventory(pi={"known_hosts": empty}))
    with pytest.raises(UserError, match=r"unknown host key .* SHA256:[A-Za-z0-9+/]+.*edgeslm devices trust pi"):
        deploy(tiny_builds["v1"], "pi", dev, log=lambda m: None)
    assert not (tmp_path / "wd-pi").exists()
    deploy(tiny_builds["v1"], "pi", dev, accept_new_host_key=True, log=lambda m: None)
    assert f"[127.0.0.1]:{sshd.port} ssh-ed25519" in empty.read_text()


def test_changed_host_key_is_always_refused(tmp_path, inventory, tiny_builds, sshd):
    from sshd import keygen

    other = keygen(tmp_path / "other_host")
    bad = tmp_path / "bad_known_hosts"
    bad.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(other.split()[:2])}\n")
    dev = _dev(inventory(pi={"known_hosts": bad}))
    for accept in (False, True):
        with pytest.raises(UserError, match="CHANGED"):
            deploy(tiny_builds["v1"], "pi", dev, accept_new_host_key=accept, log=lambda m: None)


def test_connection_cut_mid_upload_leaves_active_model_intact(tmp_path, inventory, tiny_builds, sshd):
    dev = _dev(inventory(pi={}))
    wd = tmp_path / "wd-pi"
    first = deploy(tiny_builds["v1"], "pi", dev, log=lambda m: None)
    other = tmp_path / "other-build"
    import shutil

    shutil.copytree(tiny_builds["v1"], other)
    # a different version whose model file must be sent (30 kB of changed bytes)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["cache_key"] = "f" * 64
    for f in manifest["files"]:
        if f["path"] == "model.onnx":
            data = (other / "model.onnx").read_bytes() + os.urandom(300_000)
            (other / "model.onnx").write_bytes(data)
            import hashlib

            f["sha256"], f["size"] = hashlib.sha256(data).hexdigest(), len(data)
    (other / "manifest.json").write_text(json.dumps(manifest))
    proxy = CuttingProxy(sshd.port, limit=150_000)
    known = tmp_path / "proxy_known_hosts"
    known.write_text(f"[127.0.0.1]:{proxy.port} {' '.join(sshd.host_pub.split()[:2])}\n")
    cut_dev = _dev(inventory(pi={"port": proxy.port, "known_hosts": known}))
    with pytest.raises(UserError, match="device pi"):
        deploy(other, "pi", cut_dev, log=lambda m: None)
    proxy.close()
    assert proxy.cut
    assert _current(wd) == f"versions/{first.version}"
    check = subprocess.run([dev.python, str(RUNNER_PATH),
                            "verify", str(wd / "tinydeploy" / "current")], capture_output=True, text=True)
    assert json.loads(check.stdout)["ok"]
    # the lock was released and a later deploy over a good link completes
    done = deploy(other, "pi", dev, log=lambda m: None)
    assert _current(wd) == f"versions/{done.version}"


@contextlib.contextmanager
def _tmpfs_device(tmp_path, inventory, options: str):
    """Device `pi` whose workdir lies on a tmpfs mounted with `options` (small, or read-only)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], check=True)
    try:
        path = inventory(pi={})
        path.write_text(path.read_text().replace(str(tmp_path / "wd-pi"), str(mnt / "wd")))
        yield _dev(path), mnt / "wd"
    finally:
        _umount(mnt)


def test_full_disk_fails_cleanly(tmp_path, inventory, tiny_builds):
    with _tmpfs_device(tmp_path, inventory, "size=300k") as (dev, wd):
        with pytest.raises(UserError, match="not enough disk|No space left"):
            deploy(tiny_builds["v1"], "pi", dev, log=lambda m: None)
        assert not (wd / "tinydeploy" / "current").exists()


def test_unwritable_workdir(tmp_path, inventory, tiny_builds):
    with _tmpfs_device(tmp_path, inventory, "ro,size=100k") as (dev, _):
        with pytest.raises(UserError, match="Read-only|cannot create workdir"):
            deploy(tiny_builds["v1"], "pi", dev, log=lambda m: None)


def test_missing_runtime_is_named_with_the_install_line(tmp_path, inventory, tiny_builds):
    bare = tmp_path / "bare-venv"
    subprocess.run(["python3", "-m", "venv", "--without-pip", str(bare)], check=True)
    dev = _dev(inventory(pi={"python": str(bare / "bin" / "python")}))
    with pytest.raises(UserError) as info:
        deploy(tiny_builds["v1"], "pi", dev, log=lambda m: None)
    msg = str(info.value)
    assert "lacks numpy, onnxruntime, executorch" in msg and "pip install onnxruntime" in msg
    assert not (tmp_path / "wd-pi" / "tinydeploy" / "current").exists()


def test_wrong_architecture_is_refused(tmp_path, inventory, tiny_builds):
    dev = _dev(inventory(pi={"target": "rpi4"}))
    with pytest.raises(UserError, match=r"device pi is x86_64 but build tinydeploy is for target rpi4 \(aarch64\)"):
        deploy(tiny_builds["rpi4"], "pi", dev, log=lambda m: None)


def test_two_deploys_at_once_cannot_both_proceed(tmp_path, inventory, tiny_builds):
    from edgeslm.runner import RUNNER_PATH

    dev = _dev(inventory(pi={}))
    holder = subprocess.Popen([dev.python, str(RUNNER_PATH), "hold", "--workdir", str(tmp_path / "wd-pi"),
                               "tinydeploy", "--owner", "ci@builder (edgeslm pid 42)"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert "locked" in holder.stdout.readline()
    try:
        with pytest.raises(UserError, match=r"another deploy is in progress on this device \(held by "
                                            r"ci@builder \(edgeslm pid 42\) \(device pid \d+\) since \d{4}-"):
            deploy(tiny_builds["v1"], "pi", dev, log=lambda m: None)
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    deploy(tiny_builds["v1"], "pi", dev, log=lambda m: None)  # released when its holder went away


def test_profile_over_ssh(tmp_path, inventory, tiny_builds):
    dev = _dev(inventory(pi={}))
    deploy(tiny_builds["v1"], "pi", dev, log=lambda m: None)
    measured = profile("pi", dev, tmp_path / "profiles", iters=20, warmup=3, log=lambda m: None)
    assert {m.result.artifact.name for m in measured} == {"onnx", "executorch"}
    for m in measured:
        r = m.result
        assert r.SCHEMA == "edgeslm.profile/1" and r.parity.passed
        lat = r.latency_ms
        assert lat.n >= 20 and 0 < lat.min <= lat.p50 <= lat.p90 <= lat.p99 <= lat.max
        assert r.memory_kb.peak_rss > r.memory_kb.rss_before_load > 0
        assert r.device.name == "pi" and r.device.arch == "x86_64"
        assert "emulated" not in r.flags
        assert json.loads(m.path.read_text()) == r.to_dict()  # what is stored is the typed record


RELAY = """import socket, sys, threading
open(sys.argv[3], "a").write(f"{sys.argv[1]}:{sys.argv[2]}\\n")
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def up():
    while True:
        b = sys.stdin.buffer.raw.read(65536)
        if not b:
            s.shutdown(socket.SHUT_WR)
            return
        s.sendall(b)
threading.Thread(target=up, daemon=True).start()
while True:
    b = s.recv(65536)
    if not b:
        break
    sys.stdout.buffer.write(b)
    sys.stdout.buffer.flush()
"""


def test_ssh_config_alias_and_proxyjump(tmp_path, inventory, tiny_builds, sshd, monkeypatch):
    """host = an alias from ~/.ssh/config: HostName, User, Port, IdentityFile, ProxyJump and ProxyCommand (a
    relay that the device is reached through, with %h and %p expanded) apply."""
    relay = tmp_path / "relay.py"
    relay.write_text(RELAY)
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"""Host mypi
    HostName 127.0.0.1
    Port {sshd.port}
    User root
    IdentityFile {sshd.client_key}

Host viajump
    HostName 127.0.0.1
    Port {sshd.port}
    User root
    IdentityFile {sshd.client_key}
    ProxyJump root@127.0.0.1:{sshd.port}

Host viacommand
    HostName 127.0.0.1
    Port {sshd.port}
    User root
    IdentityFile {sshd.client_key}
    ProxyCommand {sys.executable} {relay} %h %p {tmp_path / "relayed"}
""")
    monkeypatch.setenv("EDGESLM_SSH_CONFIG", str(cfg))
    inv = tmp_path / "devices.toml"
    for alias in ("mypi", "viajump", "viacommand"):
        inv.write_text(f'[devices.{alias}]\nhost = "{alias}"\nknown_hosts = "{inventory.known_hosts}"\n'
                       f'target = "host"\nworkdir = "{tmp_path / alias}"\npython = "{sys.executable}"\n')
        inventory.known_hosts.write_text(sshd.known_hosts_line() + "\n")
        r = deploy(tiny_builds["v1"], alias, _dev(inv, alias), log=lambda m: None)
        assert r.sent_files > 0 and _current(tmp_path / alias) == f"versions/{r.version}"
    assert (tmp_path / "relayed").read_text().startswith(f"127.0.0.1:{sshd.port}\n")  # through the relay


def test_runner_runs_on_python_3_9(tmp_path, tiny_builds):
    """The device side needs only Python >= 3.9 and the standard library for everything but profiling."""
    from edgeslm.runner import RUNNER_PATH

    py39 = Path.home() / ".pyenv" / "versions" / "3.9.18" / "bin" / "python"
    assert py39.exists(), "this machine kind ships Python 3.9 under pyenv"
    probe = json.loads(subprocess.run([str(py39), str(RUNNER_PATH), "probe", "--workdir", str(tmp_path)],
                                      capture_output=True, text=True, check=True).stdout)
    assert probe["python"].startswith("3.9") and probe["runtimes"]["numpy"] is None
    ok = json.loads(subprocess.run([str(py39), str(RUNNER_PATH), "verify", str(tiny_builds["v1"])],
                                   capture_output=True, text=True, check=True).stdout)
    assert ok["ok"] and ok["files"] >= 5
    r = subprocess.run([str(py39), str(RUNNER_PATH), "profile", str(tiny_builds["v1"]), "--artifact", "onnx"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "pip install numpy" in json.loads(r.stdout)["error"]


def test_refused_authentication_and_missing_key(tmp_path, inventory, tiny_builds, sshd):
    from sshd import keygen

    keygen(tmp_path / "stranger")
    path = inventory(pi={})
    text = path.read_text()
    path.write_text(text.replace(str(sshd.client_key), str(tmp_path / "stranger")))
    with pytest.raises(UserError, match="authentication refused by root@127.0.0.1"):
        deploy(tiny_builds["v1"], "pi", _dev(path), log=lambda m: None)
    path.write_text(text.replace(str(sshd.client_key), str(tmp_path / "no-such-key")))
    with pytest.raises(UserError, match="identity_file .*no-such-key does not exist"):
        deploy(tiny_builds["v1"], "pi", _dev(path), log=lambda m: None)


def test_a_killed_host_ends_its_profile_on_the_device(tmp_path, inventory, tiny_builds):
    """The host is killed during a long profile: the SSH session ends, and with it the runner on the device
    (it writes nothing until it is done, and has no terminal, so nothing else would have stopped it). The
    measurement is cut short: no result lands on the device (a finished one would, ~15 s later)."""
    import shutil
    import signal
    import time

    inv = inventory(pi={})
    deploy(tiny_builds["v1"], "pi", _dev(inv), log=lambda m: None)
    exe = shutil.which("edgeslm", path=str(Path(sys.executable).parent)) or "edgeslm"
    runner, results = str(tmp_path / "wd-pi" / "runner"), tmp_path / "wd-pi" / "tinydeploy" / "results"

    def on_device() -> list[str]:
        ps = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True, timeout=30).stdout
        return [ln for ln in ps.splitlines() if runner in ln and " profile " in ln]

    host = subprocess.Popen([exe, "profile", str(tiny_builds["v1"]), "--device", "pi", "--artifact", "onnx",
                             "--min-seconds", "600"], env={**os.environ, "EDGESLM_DEVICES": str(inv)},
                            stdout=subprocess.DEVNULL, stderr=(tmp_path / "host.err").open("w"))
    try:
        deadline = time.monotonic() + 120
        while not on_device() and time.monotonic() < deadline and host.poll() is None:
            time.sleep(0.5)
        assert on_device(), f"the profile never started on the device: {(tmp_path / 'host.err').read_text()}"
        time.sleep(2)
        host.send_signal(signal.SIGKILL)
        host.wait(timeout=10)
        deadline = time.monotonic() + 60
        while on_device() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not on_device(), "the device is still measuring for a host that is gone"
        assert not list(results.glob("*.json")), "the profile ran to its end for a host that was gone"
    finally:
        host.kill()
        for line in on_device():  # only this test's runner (its own workdir)
            os.kill(int(line.split()[0]), signal.SIGKILL)
