"""The emulated aarch64 device: a real sshd on loopback whose sessions run under qemu-aarch64.

The image is cached under ~/.cache/edgeslm/emulate (or $EDGESLM_EMULATE_CACHE) so CI builds it once
(~25 s, ~250 MB with a warm network); with the cache warm this test takes ~15 s.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
from pathlib import Path

import numpy as np
import onnx
import paramiko
import pytest

from edgeslm.devtools.emulate import ensure_image, start_device

pytestmark = pytest.mark.slow


def _cache_dir() -> Path:
    env = os.environ.get("EDGESLM_EMULATE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgeslm" / "emulate"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_onnx(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """y = x @ W + b, with W and b as initializers; returns (W, b)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by any onnxruntime of the last years
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return w, b


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("emulated-device")
    image = ensure_image(_cache_dir())
    key = tmp / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with start_device(image, tmp / "dev", _free_port(), authorized_keys=key.with_suffix(".pub")) as dev:
        known = dev.write_known_hosts(tmp / "known_hosts")
        client = paramiko.SSHClient()
        client.load_host_keys(str(known))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect("127.0.0.1", port=dev.port, username=dev.user, key_filename=str(key),
                       allow_agent=False, look_for_keys=False, timeout=10)
        try:
            yield dev, client, tmp
        finally:
            client.close()
    assert dev.proc.poll() is not None, "stop() left sshd running"


def run(client, command: str, timeout: float = 60) -> str:
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out, err = stdout.read().decode(), stderr.read().decode()
    status = stdout.channel.recv_exit_status()
    assert status == 0, f"{command!r} exited {status}: {err}"
    return out


def test_host_key_is_verified(device):
    dev, _, tmp = device
    assert dev.host_public_key_line.startswith(f"[127.0.0.1]:{dev.port} ssh-ed25519 AAAA")
    stranger = paramiko.SSHClient()
    stranger.set_missing_host_key_policy(paramiko.RejectPolicy())  # no known_hosts loaded
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        stranger.connect("127.0.0.1", port=dev.port, username=dev.user,
                         key_filename=str(tmp / "id_ed25519"), allow_agent=False,
                         look_for_keys=False, timeout=10)
    stranger.close()


def test_session_looks_like_aarch64(device):
    dev, client, _ = device
    assert run(client, "uname -m").strip() == "aarch64"
    py = shlex.quote(str(dev.python_path))
    for python in ("python3", py):
        out = run(client, f"{python} -c 'import os, platform; "
                          f"print(platform.machine(), os.environ[\"EDGESLM_EMULATED\"])'")
        assert out.split() == ["aarch64", f"qemu-aarch64:{dev.cpu}"]
    assert run(client, "python3 -c 'print(open(\"/etc/edgeslm-emulated\").read())'").strip() \
        == "qemu-aarch64"
    out = run(client, "python3 -c 'import numpy, onnxruntime, executorch_numpy_runtime, psutil; "
                      "print(onnxruntime.get_available_providers())'")
    assert "CPUExecutionProvider" in out


def test_sftp_file_is_seen_by_emulated_python_and_onnx_runs(device):
    dev, client, tmp = device
    w, b = _tiny_onnx(tmp / "tiny.onnx")
    x = np.arange(8, dtype=np.float32).reshape(2, 4) / 7
    np.save(tmp / "x.npy", x)
    remote = tmp / "remote"
    remote.mkdir()
    sftp = client.open_sftp()
    try:
        for name in ("tiny.onnx", "x.npy"):
            sftp.put(str(tmp / name), str(remote / name))
        (tmp / "hello.txt").write_text("pushed over sftp\n")
        sftp.put(str(tmp / "hello.txt"), str(remote / "hello.txt"))
    finally:
        sftp.close()
    out = run(client, f"python3 -c 'print(open(\"{remote}/hello.txt\").read(), end=\"\")'")
    assert out == "pushed over sftp\n"
    script = (f"import platform, numpy as np, onnxruntime as ort; "
              f"s = ort.InferenceSession(\"{remote}/tiny.onnx\", providers=[\"CPUExecutionProvider\"]); "
              f"y, = s.run(None, {{\"x\": np.load(\"{remote}/x.npy\")}}); "
              f"np.save(\"{remote}/y.npy\", y); print(platform.machine())")
    assert run(client, f"python3 -c {shlex.quote(script)}").strip() == "aarch64"
    y = np.load(remote / "y.npy")
    np.testing.assert_allclose(y, x @ w + b, rtol=1e-5, atol=1e-6)


def test_cli_starts_and_stops_a_named_device_and_leaves_a_stranger_alone(tmp_path, monkeypatch):
    """`devices emulate start NAME --add-to devices.toml` gives a device `devices check` reaches as aarch64
    with its host key verified; started again, its entry is updated in place (one entry, the new port); `stop`
    ends it once and takes the entry out; a pid file that names some other process since (a reused pid) is
    not signalled."""
    import json
    import shutil

    from click.testing import CliRunner

    from edgeslm.cli import main
    from edgeslm.devtools.emulate import stop_named

    monkeypatch.setenv("EDGESLM_EMULATE_CACHE", str(_cache_dir()))  # the image the other tests built
    name, inventory = f"pytest-{os.getpid()}", tmp_path / "devices.toml"
    state = _cache_dir() / "devices" / name
    cli = CliRunner()
    try:
        for _ in range(2):
            r = cli.invoke(main, ["devices", "emulate", "start", name, "--add-to", str(inventory)])
            assert r.exit_code == 0, r.output
            assert "listening on 127.0.0.1:" in r.output and inventory.read_text().count(f"[devices.{name}]") == 1
        port = int(r.output.split("127.0.0.1:")[1].split()[0])
        assert f"port = {port}\n" in inventory.read_text()
        r = cli.invoke(main, ["devices", "check", name, "--devices", str(inventory), "--json"])
        assert r.exit_code == 0, r.output
        facts = json.loads(r.output)[0]
        assert facts["matches_target"] and facts["probe"]["arch"] == "aarch64" and facts["probe"]["emulated"], facts
    finally:
        stopped = cli.invoke(main, ["devices", "emulate", "stop", name]).output
    assert "stopped" in stopped and "entry removed from" in stopped and f"[devices.{name}]" not in inventory.read_text()
    assert "was not running" in cli.invoke(main, ["devices", "emulate", "stop", name]).output
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        (state / "pid").write_text(str(stranger.pid))
        assert not stop_named(name)[0] and stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
        shutil.rmtree(state)


def test_a_device_name_cannot_lead_out_of_the_emulator_folder(tmp_path):
    from edgeslm.devtools.emulate import EmulatorError, start_named, stop_named

    for bad in ("../outside", "a/b", ".hidden", ""):
        with pytest.raises(EmulatorError, match="emulated device name"):
            stop_named(bad, tmp_path)
        with pytest.raises(EmulatorError, match="emulated device name"):
            start_named(bad, home=tmp_path)
    assert list(tmp_path.iterdir()) == []
