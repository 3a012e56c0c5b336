"""The CLI, through click's runner and through the installed `edgeslm` executable."""

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
from tiny import write_recipe

ROOT = Path(__file__).resolve().parents[2]
EXE = shutil.which("edgeslm", path=str(Path(sys.executable).parent)) or "edgeslm"


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("cmd", [[], ["build"], ["validate"], ["recipes"], ["targets"], ["explain"]])
def test_every_command_has_help(cmd):
    r = run(*cmd, "--help")
    assert r.exit_code == 0 and "Usage:" in r.output


def test_validate_ok_and_json():
    files = [str(p) for p in sorted((ROOT / "recipes").glob("*.toml"))] + [str(ROOT / "devices.toml")]
    r = run("validate", "--json", *files)
    assert r.exit_code == 0
    assert all(x["ok"] for x in json.loads(r.stdout))


def test_validate_bad_file_exits_user_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[model]\nsource = "a/b"\ntask = "embedding"\nbatch = 2\n')
    r = CliRunner().invoke(main, ["validate", str(bad)])
    assert r.exit_code == EXIT_USER
    assert "bad.toml: model.batch: unknown key" in r.output
    assert "Traceback" not in r.output


def test_recipes_and_targets_list_what_ships():
    r = json.loads(run("recipes", "--json").output)
    assert {"minilm-embedding", "minilm-embedding-int8", "mobilebert-classification"} <= {x["name"] for x in r}
    t = {x["name"]: x for x in json.loads(run("targets", "--json").output)}
    assert set(t) == {"host", "rpi4", "rpi5", "x86-avx2", "x86-avx512-vnni"}
    assert t["rpi4"]["preset"] == "arm-s8s8" and t["x86-avx2"]["preset"] == "x86-u8u8"


def test_explain_lists_every_recipe_key():
    out = run("explain", "recipe").output
    for key in ("model.source", "model.task", "inputs.max_seq_len", "export.onnx.opset",
                "export.executorch.dynamic_seq", "passes[].method", "passes[].calibration.samples",
                "verify.min_cosine", "targets"):
        assert f"\n{key}: " in out, key
    assert "inputs.max_seq_len: integer = 128" in out and "model.source: string (required)" in out
    assert "edgeslm.config" not in out and "Literal" not in out  # the user's words, not internal type names
    assert max(len(line) for line in out.splitlines()) <= 130  # meanings wrapped
    assert "devices.NAME.known_hosts" in run("explain", "devices").output


def test_unknown_recipe_and_target_are_user_errors(tmp_path, tiny_model):
    r = CliRunner().invoke(main, ["build", "minilm-embeding"])
    assert r.exit_code == EXIT_USER and "did you mean minilm-embedding" in r.output
    recipe = write_recipe(tmp_path / "r.toml", tmp_path / "nowhere", "embedding")
    r = CliRunner().invoke(main, ["build", str(recipe), "--target", "rpi4"])
    assert r.exit_code == EXIT_USER and "not listed by this recipe" in r.output


def test_missing_model_folder_is_a_user_error(tmp_path):
    recipe = write_recipe(tmp_path / "r.toml", tmp_path / "nowhere", "embedding")
    r = CliRunner().invoke(main, ["build", str(recipe), "-o", str(tmp_path / "out"), "-q"])
    assert r.exit_code == EXIT_USER
    assert "nowhere" in r.output and "does not exist" in r.output and "Traceback" not in r.output


def _env():
    return {**os.environ, "PYTHONWARNINGS": "ignore"}


def test_validate_does_not_import_torch():
    code = ("import sys; from click.testing import CliRunner; from edgeslm.cli import main; "
            "r = CliRunner().invoke(main, ['validate', 'recipes/minilm-embedding.toml', 'devices.toml']); "
            "assert r.exit_code == 0, r.output; "
            "heavy = [m for m in ('torch', 'transformers', 'onnxruntime', 'executorch', 'paramiko') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_installed_executable_builds_and_caches(tmp_path, tiny_model):
    recipe = write_recipe(tmp_path / "exe.toml", tiny_model("bert", "embedding"), "embedding", name="exe")
    out = tmp_path / "out"
    first = subprocess.run([EXE, "build", str(recipe), "-o", str(out), "--json"], capture_output=True,
                           text=True, env=_env())
    assert first.returncode == 0, first.stderr
    res = json.loads(first.stdout)[0]
    assert res["status"] == "ok" and {a["name"] for a in res["artifacts"]} == {"onnx", "executorch"}
    assert all(a["verification"]["passed"] for a in res["artifacts"])
    second = subprocess.run([EXE, "build", str(recipe), "-o", str(out)], capture_output=True, text=True,
                            env=_env())
    assert second.returncode == 0 and "taken from the cache in" in second.stdout
    assert "model.pte" in second.stdout and "pass" in second.stdout


@pytest.mark.slow
def test_installed_executable_failed_verification_exit_code(tmp_path, tiny_model):
    recipe = write_recipe(tmp_path / "strict.toml", tiny_model("distilbert", "embedding"), "embedding",
                          name="strict", formats=("onnx",), extra="[verify]\nmax_abs_error = 1e-12\n")
    r = subprocess.run([EXE, "build", str(recipe), "-o", str(tmp_path / "out"), "-q"], capture_output=True,
                       text=True, env=_env())
    assert r.returncode == EXIT_FAILED
    assert "verification failed" in r.stderr and "max_abs_error" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # the whole results table, so the user sees what passed as well as what failed
    assert "VERIFICATION FAILED" in r.stdout and "cosine min / p5" in r.stdout and "centred cos" in r.stdout
    assert "FAIL" in r.stdout and "model.onnx" in r.stdout


@pytest.mark.slow
def test_several_targets_get_their_own_int8_preset(tmp_path, tiny_model):
    recipe = write_recipe(tmp_path / "multi.toml", tiny_model("bert", "embedding"), "embedding", name="multi",
                          formats=("onnx",), targets=("host", "rpi4", "x86-avx2"),
                          # thresholds for a tiny random model with wide weights (see tiny.py), not a trained one
                          extra='[[passes]]\ntype = "quantize"\nmethod = "dynamic-int8"\n'
                                '[verify]\nmin_cosine = 0.9\nmin_centered_cosine = 0.75\n')
    r = run("build", str(recipe), "--target", "rpi4", "--target", "x86-avx2", "-o", str(tmp_path / "out"),
            "--json")
    assert r.exit_code == 0, r.output
    built = {x["target"]: x for x in json.loads(r.stdout)}
    assert set(built) == {"rpi4", "x86-avx2"}
    presets = {}
    for name, x in built.items():
        m = json.loads(Path(x["manifest"]).read_text())
        presets[name] = m["artifacts"][0]["quantization"]["preset"]
        assert m["target"]["name"] == name and x["artifacts"][0]["verification"]["passed"]
    assert presets == {"rpi4": "arm-s8s8", "x86-avx2": "x86-u8u8"}
    assert (tmp_path / "out/multi/rpi4/model.onnx").exists() and (tmp_path / "out/multi/x86-avx2/model.onnx").exists()
