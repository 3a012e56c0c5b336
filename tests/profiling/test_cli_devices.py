"""devices / deploy / rollback / profile from the command line, against a real sshd."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeslm.cli import main
from edgeslm.config.devices import load_inventory
from edgeslm.errors import EXIT_FAILED, EXIT_USER
from sshd import free_port

pytestmark = pytest.mark.slow
EXE = shutil.which("edgeslm", path=str(Path(sys.executable).parent)) or "edgeslm"
ROOT = Path(__file__).resolve().parents[2]


def _env(**extra) -> dict:
    """The installed executable, running this checkout's code (it may be installed from another)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_deploy_profile_rollback(tmp_path, inventory, tiny_builds):
    inv = inventory(pi={})
    r = cli("deploy", tiny_builds["v1"], "--device", "pi", "--devices", inv, "--json")
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)[0]
    assert first["ok"] and first["sent_files"] > 0
    r = cli("deploy", tiny_builds["v2"], "-d", "pi", "--devices", inv, "--profile", "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert "ok pi: tinydeploy" in r.stdout and "profile:" in r.stdout
    r = cli("rollback", "--device", "pi", "--devices", inv)
    assert r.exit_code == 0 and f"now versions/{first['version']}" in r.stdout
    r = cli("profile", "--device", "pi", "--devices", inv, "--iters", 10, "--artifact", "onnx", "-o", tmp_path)
    assert r.exit_code == 0, r.output
    assert "parity on device: pass" in r.stdout and "p50" in r.stdout and "CV" in r.stdout
    assert len(list((tmp_path / "profiles" / "tinydeploy" / "pi").glob("*-onnx.json"))) == 1


def test_group_with_one_dead_device(tmp_path, inventory, tiny_builds):
    inv = inventory(good={"groups": ("lab",)}, dead={"groups": ("lab",), "port": free_port(), "timeout": 1})
    r = cli("deploy", tiny_builds["v1"], "--group", "lab", "--devices", inv)
    assert r.exit_code == EXIT_FAILED
    assert "ok good: tinydeploy" in r.stdout
    assert "FAILED dead: device dead: cannot connect to root@127.0.0.1" in r.stdout
    assert (tmp_path / "wd-good" / "tinydeploy" / "current").is_symlink()


def test_devices_check_json_and_unknown_device(inventory):
    inv = inventory(pi={})
    r = cli("devices", "check", "pi", "local", "--devices", inv, "--json")
    assert r.exit_code == 0, r.output
    rows = {x["device"]: x for x in json.loads(r.stdout)}
    assert rows["pi"]["probe"]["arch"] == rows["local"]["probe"]["arch"]
    assert rows["pi"]["matches_target"] and rows["pi"]["probe"]["runtimes"]["onnxruntime"]
    r = CliRunner().invoke(main, ["devices", "check", "pj", "--devices", str(inv)])
    assert r.exit_code == EXIT_USER and "did you mean pi" in r.output


def test_devices_check_names_missing_runtimes(tmp_path, inventory):
    bare = tmp_path / "bare"
    subprocess.run(["python3", "-m", "venv", "--without-pip", str(bare)], check=True)
    inv = inventory(pi={"python": str(bare / "bin" / "python")})
    r = cli("devices", "check", "pi", "--devices", inv)
    assert r.exit_code == EXIT_FAILED
    assert "missing onnxruntime: python3 -m pip install onnxruntime" in r.stdout


def test_installed_executable_deploys_to_local(tmp_path, tiny_builds):
    env = _env(EDGESLM_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([EXE, "profile", str(tiny_builds["v1"]), "--device", "local", "--iters", "10", "--json"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout)
    assert {x["artifact"]["name"] for x in results} == {"onnx", "executorch"}
    assert all(x["parity"]["passed"] and x["device"]["name"] == "local" for x in results)
    assert (tmp_path / "cache" / "local-device" / "tinydeploy" / "current").is_symlink()


def test_unreachable_host_is_one_line(tmp_path, inventory, tiny_builds):
    """One device named: its failure is the command's error (exit 2), as from profile and rollback."""
    inv = inventory(pi={"port": free_port(), "timeout": 1})
    r = subprocess.run([EXE, "deploy", str(tiny_builds["v1"]), "-d", "pi", "--devices", str(inv)],
                       capture_output=True, text=True, env=_env())
    assert r.returncode == EXIT_USER
    assert r.stderr.startswith("error: device pi: cannot connect to root@127.0.0.1") and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_deploy_and_report_do_not_import_torch(tmp_path, tiny_builds):
    code = ("import sys; from click.testing import CliRunner; from edgeslm.cli import main; "
            f"r = CliRunner().invoke(main, ['deploy', {str(tiny_builds['v1'])!r}, '-d', 'local']); "
            "assert r.exit_code == 0, r.output; "
            f"r = CliRunner().invoke(main, ['report', {str(tiny_builds['v1'])!r}]); "
            "assert r.exit_code == 0, r.output; "
            "print([m for m in ('torch', 'transformers', 'executorch') if m in sys.modules])")
    env = _env(EDGESLM_CACHE=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_profile_arguments_are_checked_before_the_device_is_touched(tmp_path, inventory, tiny_builds):
    inv = inventory(pi={})
    wd = tmp_path / "wd-pi"
    assert cli("deploy", tiny_builds["v1"], "-d", "pi", "--devices", inv).exit_code == 0
    active = os.readlink(wd / "tinydeploy" / "current")
    for args, says in ((["--artifact", "tflite"], "has no artifact 'tflite'; it has: onnx, executorch"),
                       (["--iters", "0"], "0 is not in the range 1<=x<=1000000"),
                       (["--warmup", "-1"], "-1 is not in the range 0<=x<=1000000"),
                       (["--seq-len", "100000"], "--seq-len 100000 is outside"),
                       (["--recipe", "../x"], "recipe '../x' is not a plain name")):
        r = CliRunner().invoke(main, ["profile", str(tiny_builds["v2"]), "-d", "pi", "--devices", str(inv),
                                      "-o", str(tmp_path / "out"), *args])
        assert r.exit_code == EXIT_USER and says in r.output, (args, r.output)
        assert "Traceback" not in r.output and "IndexError" not in r.output
        assert os.readlink(wd / "tinydeploy" / "current") == active  # nothing was deployed
    from edgeslm.errors import UserError
    from edgeslm.profiling.profile import profile

    with pytest.raises(UserError, match="--iters must be at least 1"):
        profile("pi", load_inventory(inv).get("pi"), tmp_path / "out", iters=0)


def test_devices_file_named_but_missing_and_device_names(tmp_path, monkeypatch):
    r = cli_raw("devices", "list", "--devices", tmp_path / "devcies.toml")
    assert r.exit_code == EXIT_USER and f"{tmp_path / 'devcies.toml'}: devices file not found" in r.output
    monkeypatch.setenv("EDGESLM_DEVICES", str(tmp_path / "nope.toml"))
    r = cli_raw("deploy", tmp_path, "-d", "pi")
    assert r.exit_code == EXIT_USER and "nope.toml: devices file not found" in r.output
    monkeypatch.delenv("EDGESLM_DEVICES")
    monkeypatch.chdir(tmp_path)  # no ./devices.toml: only `local`
    r = cli_raw("devices", "list", "--json")
    assert r.exit_code == 0 and [d["name"] for d in json.loads(r.stdout)] == ["local"]
    bad = tmp_path / "devices.toml"
    bad.write_text('[devices."../../pi"]\nhost = "h"\ntarget = "rpi4"\n')
    r = cli_raw("devices", "list")
    assert r.exit_code == EXIT_USER
    assert "devices.toml: devices.'../../pi': a device name becomes a folder name" in r.output


def cli_raw(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_targets_sharing_a_build_profile_against_their_own_manifest(tmp_path, inventory, tiny_model):
    """An fp32 build is the same files for every x86 target: host and x86-avx2 share one version, each folder's
    manifest naming its target. A device of target x86-avx2 is profiled against that folder's manifest (the one
    deployed), not the host folder's, which has the same version."""
    from tiny import write_recipe

    recipe = write_recipe(tmp_path / "r.toml", tiny_model("bert", "embedding"), "embedding", name="shared-fp32",
                          formats=("onnx",), targets=("host", "x86-avx2"))
    out = tmp_path / "out"
    from edgeslm.config.catalog import load_target
    from edgeslm.config.recipe import load_recipe
    from edgeslm.pipeline import build, plan

    loaded = load_recipe(recipe)
    build(loaded, plan(loaded, [load_target("host")])[0], out)
    inv = inventory(avx={"target": "x86-avx2"})
    r = cli("deploy", recipe, "--device", "avx", "--devices", inv, "-o", out)
    assert r.exit_code == 0, r.output
    hosts = {json.loads((out / "shared-fp32" / t / "manifest.json").read_text())["cache_key"] for t in ("host", "x86-avx2")}
    assert len(hosts) == 1  # one version for both targets
    r = cli("profile", "--device", "avx", "--devices", inv, "--iters", 5, "-o", out)
    assert r.exit_code == 0 and "parity on device: pass" in r.output, r.output
    assert list((out / "shared-fp32" / "x86-avx2" / "profiles" / "avx").glob("*-onnx.json"))
    # without that folder, the manifest deployed there is derived from another target's (or the store's) copy
    shutil.rmtree(out / "shared-fp32" / "x86-avx2")
    r = cli("profile", "--device", "avx", "--devices", inv, "--iters", 5, "-o", out)
    assert r.exit_code == 0 and "parity on device: pass" in r.output and "own manifest only" not in r.output, r.output
