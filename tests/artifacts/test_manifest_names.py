"""Names and paths that become paths: the host's validators and the device runner's agree."""

from __future__ import annotations

import pytest

from edgeslm.artifacts.manifest import plain_name, relative_path
from edgeslm.runner import store as runner

NAMES_OK = ["tinydeploy", "minilm-embedding-int8", "a.b_c-1", "0x"]
NAMES_BAD = ["", ".", "..", "../x", "a/b", "A", "-x", ".hidden", "x\n", "x\x00", "x y", "a" * 129, None]
PATHS_OK = ["model.onnx", "tokenizer/tokenizer.json", "a/b/c.d", "x..y"]
PATHS_BAD = ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a/.", "a\\b", "a\x00b", "a\nb", "a/", None]


@pytest.mark.parametrize("name", NAMES_OK)
def test_plain_names_pass_both_sides(name):
    assert plain_name(name) == name and runner._plain_name(name, "recipe") == name


@pytest.mark.parametrize("name", NAMES_BAD)
def test_other_names_are_refused_on_both_sides(name):
    with pytest.raises(ValueError, match="not a plain name"):
        plain_name(name)
    with pytest.raises(runner.RunnerError, match="not a plain name"):
        runner._plain_name(name, "recipe")


@pytest.mark.parametrize("path", PATHS_OK)
def test_plain_relative_paths_pass_both_sides(path):
    assert relative_path(path) == path and runner._rel_path(path) == path


@pytest.mark.parametrize("path", PATHS_BAD)
def test_other_paths_are_refused_on_both_sides(path):
    with pytest.raises(ValueError):
        relative_path(path)
    with pytest.raises(runner.RunnerError):
        runner._rel_path(path)


@pytest.mark.parametrize("version", ["0123456789abcdef\n", "..", "0123456789ABCDEF", "0123456789abcde", None])
def test_runner_versions_are_16_hex_digits(version):
    with pytest.raises(runner.RunnerError):
        runner.checked_version(version)
