"""An ARM target build deployed to the emulated aarch64 device (qemu-user behind a real sshd):
devices check reports aarch64, the on-device parity check passes for both formats, and the timings
are labelled emulated."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from edgeslm.config.devices import load_inventory
from edgeslm.devtools.emulate import ensure_image, start_device
from edgeslm.profiling.check import check
from edgeslm.profiling.deploy import deploy
from edgeslm.profiling.profile import profile
from sshd import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    cache = Path(os.environ.get("EDGESLM_EMULATE_CACHE", Path.home() / ".cache" / "edgeslm" / "emulate"))
    image = ensure_image(cache, cpu="cortex-a72")
    folder = tmp_path_factory.mktemp("emulated")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "id")], check=True)
    dev = start_device(image, folder / "device", free_port(), folder / "id.pub", cpu="cortex-a72")
    known = dev.write_known_hosts(folder / "known_hosts")
    inv = folder / "devices.toml"
    inv.write_text(f"""[devices.pi4emu]
host = "127.0.0.1"
port = {dev.port}
user = "{dev.user}"
identity_file = "{folder / 'id'}"
known_hosts = "{known}"
target = "rpi4"
workdir = "{folder / 'wd'}"
python = "python3"
connect_timeout = 20
""")
    yield load_inventory(inv).get("pi4emu")
    dev.stop()


def test_check_reports_aarch64_and_matches_rpi4(emulated):
    r = check("pi4emu", emulated)
    p = r["probe"]
    assert p["arch"] == "aarch64" and p["emulated"] == "qemu-aarch64:cortex-a72"
    assert r["matches_target"], r["problems"]
    assert p["runtimes"]["onnxruntime"] and p["runtimes"]["executorch"].startswith("executorch-numpy-runtime")


def test_arm_build_deploys_and_passes_parity_on_the_emulated_device(emulated, tiny_builds, tmp_path):
    d = deploy(tiny_builds["rpi4"], "pi4emu", emulated, log=lambda m: None)
    assert d.sent_files > 0 and not d.warnings
    results = [m.result for m in profile("pi4emu", emulated, tmp_path, iters=3, warmup=1, log=lambda m: None)]
    assert {r.artifact.name for r in results} == {"onnx", "executorch"}
    for r in results:
        assert r.parity.passed, r.parity
        assert r.device.arch == "aarch64" and "emulated" in r.flags
        assert r.parity.metric("cosine_min") > 0.9999
    runtimes = {r.artifact.name: r.artifact.runtime for r in results}
    assert runtimes["executorch"].startswith("executorch-numpy-runtime")


def test_x86_build_is_refused_by_the_aarch64_device(emulated, tiny_builds):
    from edgeslm.errors import UserError

    with pytest.raises(UserError, match="device pi4emu is aarch64 but build tinydeploy is for target host"):
        deploy(tiny_builds["v1"], "pi4emu", emulated, log=lambda m: None)


def test_a_decoder_generates_on_the_emulated_device_without_torch(emulated, tmp_path, decoder_8da4w_recipe):
    """The text-generation loop on aarch64: the runtime folder is cross-built here, uploaded once, and the
    program's teacher-forced check, TTFT and decode timing run in it (labelled emulated). The rpi4 build
    is the host's (conftest's 8da4w decoder): a decoder's artifacts are the same for every target."""
    from edgeslm.config.catalog import load_target
    from edgeslm.config.recipe import load_recipe
    from edgeslm.pipeline import build, plan

    recipe = load_recipe(decoder_8da4w_recipe)
    result = build(recipe, plan(recipe, [load_target("rpi4")])[0], tmp_path / "out")
    folder = result.folder
    assert result.manifest.target["name"] == "rpi4" and result.manifest.target["arch"] == "aarch64"
    logs = []
    deploy(folder, "pi4emu", emulated, log=logs.append)
    assert any("upload ExecuTorch runtime for aarch64" in m for m in logs), logs
    et, ort = (m.result for m in profile("pi4emu", emulated, tmp_path / "out", recipe="llama-8da4w", iters=2,
                                         warmup=1, new_tokens=8, log=logs.append, build=folder))
    for r in (et, ort):  # the .pte in edgeslm's runtime; the ONNX decoder in aarch64 onnxruntime, own loop
        assert r.parity.passed and r.parity.top1_vs_build_host > 0.8, r.parity
        assert r.device.arch == "aarch64" and "emulated" in r.flags
        assert r.generation.decode.tokens == 8 and r.generation.ttft[0].prompt_tokens == 32
        assert r.memory_kb.peak_rss < 200 * 1024
    assert et.artifact.runtime.startswith("edgeslm-et") and ort.artifact.runtime.startswith("onnxruntime")
    assert et.artifact.runtime.endswith("GGUF kernels neon")  # a Cortex-A72: NEON without dotprod


def test_the_wheel_deploys_a_decoder_to_the_pi_without_a_compiler(emulated, tmp_path, decoder_8da4w_recipe):
    """The wheel carries edgeslm's runtime folders for x86_64 and aarch64: a fresh environment with it (its
    dependencies taken from this one) deploys a decoder build to the emulated Pi and profiles its .pte there with
    no g++, no make and nothing in its cache: nothing is compiled or downloaded."""
    import json
    import sys
    import sysconfig

    from edgeslm.config.catalog import load_target
    from edgeslm.config.recipe import load_recipe
    from edgeslm.pipeline import build, plan

    root = Path(__file__).resolve().parents[2]
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(root)], check=True, capture_output=True, timeout=900)
    wheel = next(dist.glob("edgeslm-*.whl"))
    fresh = tmp_path / "fresh"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(fresh)], check=True, timeout=300)
    subprocess.run([str(fresh / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True,
                   capture_output=True, timeout=600)
    site = next((fresh / "lib").glob("python3*/site-packages"))
    (site / "host-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch, executorch, paramiko ...

    recipe = load_recipe(decoder_8da4w_recipe)
    folder = build(recipe, plan(recipe, [load_target("rpi4")])[0], tmp_path / "out").folder
    inventory = tmp_path / "devices.toml"
    device = {**emulated.model_dump(mode="json", exclude={"name"}), "workdir": str(tmp_path / "wd")}  # a clean one
    inventory.write_text("[devices.pi4emu]\n" + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in device.items() if v is not None and not isinstance(v, (dict, list))))
    cache = tmp_path / "cache"
    env = {"PATH": str(fresh / "bin"), "HOME": str(tmp_path), "EDGESLM_CACHE": str(cache), "LC_ALL": "C.UTF-8"}
    assert not any(Path(p, "g++").exists() for p in env["PATH"].split(":"))

    def edgeslm(*args):
        return subprocess.run([str(fresh / "bin" / "edgeslm"), *args, "--devices", str(inventory)], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=1800)

    d = edgeslm("deploy", str(folder), "--device", "pi4emu")
    assert d.returncode == 0, d.stderr
    assert "upload ExecuTorch runtime for aarch64" in d.stdout + d.stderr, d.stdout + d.stderr
    p = edgeslm("profile", str(folder), "--device", "pi4emu", "--artifact", "executorch", "--iters", "1", "--warmup",
                "0", "--new-tokens", "4", "--out", str(tmp_path / "prof"), "--json")
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    result = result[0] if isinstance(result, list) else result
    assert result["parity"]["passed"] and result["artifact"]["runtime"].startswith("edgeslm-et"), result["parity"]
    built = [d.name for d in cache.iterdir()] if cache.exists() else []
    assert "et-runtime" not in built and "executorch-wheels" not in built, built
