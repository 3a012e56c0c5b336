"""`run` and `profile`: every argument is checked before anything touches a device. A bad one is exit 2 and
nothing is deployed: the device's working folder does not even exist afterwards."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgeslm.cli import main
from edgeslm.errors import EXIT_USER

pytestmark = pytest.mark.slow


@pytest.fixture
def device_home(tmp_path, monkeypatch):
    """The built-in `local` device with its working folder under tmp_path (it must stay absent)."""
    monkeypatch.setenv("EDGESLM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "local-device"


@pytest.fixture(scope="module")
def generation_build(tiny_builds, tmp_path_factory):
    """A build folder that `run` takes for a text-generation build (the tiny encoder build with its task
    renamed): without the checks it would be deployed, then fail on the device."""
    folder = tmp_path_factory.mktemp("gen") / "tinygen" / "host"
    shutil.copytree(tiny_builds["v1"], folder)
    m = json.loads((folder / "manifest.json").read_text())
    m["task"] = "text-generation"
    (folder / "manifest.json").write_text(json.dumps(m))
    return folder


def refused(r, device_home, *words):
    assert r.exit_code == EXIT_USER, r.output
    assert "Traceback" not in r.output and "internal error" not in r.output, r.output
    for w in words:
        assert w in r.output, r.output
    assert not device_home.exists(), "the device was touched"


@pytest.mark.parametrize("args, words", [
    (["--temperature", "nan"], ["--temperature", "not a finite number"]),
    (["--top-p", "nan"], ["--top-p", "not a finite number"]),
    (["--temperature", "inf"], ["--temperature"]),
    (["--seed", "-1"], ["--seed", "-1"]),
    (["--threads", "100000"], ["--threads", "100000"]),
    (["--max-new-tokens", "100000"], ["--max-new-tokens"]),
])
def test_run_refuses_bad_sampling_and_bounds_before_deploying(generation_build, device_home, args, words):
    r = CliRunner().invoke(main, ["run", str(generation_build), "hello", *args])
    refused(r, device_home, *words)


@pytest.mark.parametrize("prompt, words", [("", ["PROMPT is empty"]),
                                           ("caf\udcc3\udca9 \udcff", ["PROMPT is not UTF-8", "byte 0xc3"])])
def test_run_refuses_an_empty_or_undecodable_prompt_before_deploying(generation_build, device_home, prompt, words):
    r = CliRunner().invoke(main, ["run", str(generation_build), prompt, "--no-chat"])
    refused(r, device_home, *words)


def test_run_refuses_non_utf8_bytes_from_the_shell(generation_build, tmp_path):
    """The real path: bytes in argv that are not UTF-8 ($'\\xff' in a shell) reach click as lone surrogates."""
    import os

    env = {**os.environ, "EDGESLM_CACHE": str(tmp_path / "cache"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    r = subprocess.run([sys.executable, "-c", "import sys; from edgeslm.cli import main; main()", "run",
                        str(generation_build), b"\xff", "--no-chat"], capture_output=True, text=True, env=env)
    assert r.returncode == EXIT_USER, r.stderr
    assert r.stderr.strip() == ("error: PROMPT is not UTF-8 text (byte 0xff at position 0); give the prompt as "
                                "UTF-8 (check the terminal's encoding, e.g. LANG=C.UTF-8)"), r.stderr
    assert not (tmp_path / "cache" / "local-device").exists()


@pytest.mark.parametrize("args, words", [
    (["--eval-limit", "3"], ["--eval-limit needs --eval"]),
    (["--threads", "100000"], ["--threads", "100000"]),
    (["--min-seconds", "nan"], ["--min-seconds", "not a finite number"]),
    (["--iters", "100000000"], ["--iters"]),
    (["--new-tokens", "100000000"], ["--new-tokens"]),
])
def test_profile_refuses_bad_arguments_before_deploying(tiny_builds, device_home, args, words):
    r = CliRunner().invoke(main, ["profile", str(tiny_builds["v1"]), *args])
    refused(r, device_home, *words)
