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
from edgeslm.errors import EXIT_FAILED, EXIT_USER
from sshd import free_port

pytestmark = pytest.mark.slow
EXE = shutil.which("edgeslm", path=str(Path(sys.executable).parent)) or "edgeslm"


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
    env = {**os.environ, "EDGESLM_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([EXE, "profile", str(tiny_builds["v1"]), "--device", "local", "--iters", "10", "--json"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout)
    assert {x["artifact"]["name"] for x in results} == {"onnx", "executorch"}
    assert all(x["parity"]["passed"] and x["device"]["name"] == "local" for x in results)
    assert (tmp_path / "cache" / "local-device" / "tinydeploy" / "current").is_symlink()


def test_unreachable_host_is_one_line(tmp_path, inventory, tiny_builds):
    inv = inventory(pi={"port": free_port(), "timeout": 1})
    r = subprocess.run([EXE, "deploy", str(tiny_builds["v1"]), "-d", "pi", "--devices", str(inv)],
                       capture_output=True, text=True)
    assert r.returncode == EXIT_FAILED
    assert "FAILED pi: device pi: cannot connect to root@127.0.0.1" in r.stdout and "Traceback" not in r.stderr


def test_deploy_and_report_do_not_import_torch(tmp_path, tiny_builds):
    code = ("import sys; from click.testing import CliRunner; from edgeslm.cli import main; "
            f"r = CliRunner().invoke(main, ['deploy', {str(tiny_builds['v1'])!r}, '-d', 'local']); "
            "assert r.exit_code == 0, r.output; "
            f"r = CliRunner().invoke(main, ['report', {str(tiny_builds['v1'])!r}]); "
            "assert r.exit_code == 0, r.output; "
            "print([m for m in ('torch', 'transformers', 'executorch') if m in sys.modules])")
    env = {**os.environ, "EDGESLM_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
