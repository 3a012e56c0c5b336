"""A build folder is input, and so is what a device answers: every name or path that becomes a path is
checked on the host and again by the runner; nothing is written or deleted outside the device's
workdir, and nothing host-only is uploaded. Real sshd, real runner processes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from deployhelp import hold_lock, release, run_runner, variant
from edgeslm.config.devices import load_inventory
from edgeslm.errors import UserError
from edgeslm.profiling.deploy import deploy
from edgeslm.profiling.profile import profile

pytestmark = pytest.mark.slow
QUIET = {"log": lambda m: None}


def _dev(path: Path, name: str = "pi"):
    return load_inventory(path).get(name)


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (os.readlink(p) if p.is_symlink() else
                                         hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("right_sha", [True, False])
def test_file_path_escaping_the_build_is_refused_before_the_device_is_touched(tmp_path, inventory, tiny_builds,
                                                                               right_sha):
    dev = _dev(inventory(pi={}))
    build = tmp_path / "host" / "a" / "b" / "bad"
    secret = tmp_path / "host" / "x" / "escaped.txt"  # = build/../../../x/escaped.txt, a host-only file
    secret.parent.mkdir(parents=True)
    secret.write_text("host-only secret")

    def edit(m):
        digest = hashlib.sha256(secret.read_bytes()).hexdigest() if right_sha else "0" * 64
        m["files"].append({"path": "../../../x/escaped.txt", "sha256": digest, "size": 16, "role": "other"})

    variant(tiny_builds["v1"], build, "a", edit=edit)
    with pytest.raises(UserError, match=r"bad/manifest\.json: files\[5\]\.path: path '\.\./\.\./\.\./x/escaped\.txt' "
                                        r"is not a plain relative path.*rebuild it"):
        deploy(build, "pi", dev, **QUIET)
    assert not (tmp_path / "x").exists()  # where it would have landed on the device
    assert not (tmp_path / "wd-pi").exists()  # the device was not even touched


@pytest.mark.parametrize("path", ["/etc/hostname", "tokenizer/../../x", "a\\b", "./model.onnx", "a//b"])
def test_other_non_plain_paths_are_refused(tmp_path, inventory, tiny_builds, path):
    dev = _dev(inventory(pi={}))
    build = variant(tiny_builds["v1"], tmp_path / "bad", "a", edit=lambda m: m["files"][0].update(path=path))
    with pytest.raises(UserError, match=r"files\[0\]\.path: .*not a plain relative path"):
        deploy(build, "pi", dev, **QUIET)
    assert not (tmp_path / "wd-pi").exists()


def test_symlink_to_a_host_file_is_not_uploaded(tmp_path, inventory, tiny_builds):
    dev = _dev(inventory(pi={}))
    secret = tmp_path / "id_ed25519"
    secret.write_text("host-only secret")

    def edit(m):
        m["files"].append({"path": "tokenizer/extra.txt", "sha256": hashlib.sha256(secret.read_bytes()).hexdigest(),
                           "size": 16, "role": "tokenizer"})

    build = variant(tiny_builds["v1"], tmp_path / "bad", "a", edit=edit)
    (build / "tokenizer" / "extra.txt").symlink_to(secret)
    with pytest.raises(UserError, match=r"tokenizer/extra\.txt .* resolves outside the build folder"):
        deploy(build, "pi", dev, **QUIET)
    assert not list((tmp_path).glob("wd-pi/**/extra.txt"))


def test_wrong_sha256_fails_before_anything_is_written(tmp_path, inventory, tiny_builds):
    dev = _dev(inventory(pi={}))
    build = variant(tiny_builds["v1"], tmp_path / "bad", "a",
                    edit=lambda m: next(f for f in m["files"] if f["path"] == "model.onnx").update(sha256="1" * 64))
    with pytest.raises(UserError, match=r"model\.onnx does not match its size/sha256 in manifest\.json"):
        deploy(build, "pi", dev, **QUIET)
    assert not (tmp_path / "wd-pi").exists()


@pytest.mark.parametrize("key,edit", [
    ("cache_key", lambda m: m.update(cache_key="..")),
    ("recipe.name", lambda m: m["recipe"].update(name="..")),
    ("target.name", lambda m: m["target"].update(name="../../t")),
    ("artifacts[0].name", lambda m: m["artifacts"][0].update(name="../onnx")),
    ("artifacts[0].file", lambda m: m["artifacts"][0].update(file="../model.onnx")),
    ("reference.file", lambda m: m["reference"].update(file="/etc/passwd")),
])
def test_names_that_become_paths_are_refused_and_the_device_keeps_everything(tmp_path, inventory, tiny_builds,
                                                                             key, edit):
    """`cache_key: ".."` once made a failed deploy delete versions/.. (every version), and
    `recipe.name: ".."` the workdir's parent."""
    dev = _dev(inventory(pi={}))
    deploy(tiny_builds["v1"], "pi", dev, **QUIET)
    deploy(tiny_builds["v2"], "pi", dev, **QUIET)
    (tmp_path / "sentinel").write_text("the workdir's parent")
    before = _snapshot(tmp_path / "wd-pi")

    def hostile(m):
        edit(m)
        next(f for f in m["files"] if f["path"] == "model.onnx")["sha256"] = "2" * 64  # and it fails

    build = variant(tiny_builds["v1"], tmp_path / "bad", "c", edit=hostile)
    with pytest.raises(UserError, match=rf"manifest\.json: {key.split('.')[0].split('[')[0]}.*"):
        deploy(build, "pi", dev, **QUIET)
    assert (tmp_path / "sentinel").exists()
    assert _snapshot(tmp_path / "wd-pi") == before


def test_runner_refuses_hostile_arguments_and_its_own_manifest(tmp_path, tiny_builds):
    """The runner trusts neither its arguments nor the manifest.json files on the device."""
    import sys

    wd = tmp_path / "wd"
    py = sys.executable
    version = "ab" * 8
    for args in (["stage", "--workdir", wd, "..", version], ["commit", "--workdir", wd, "tinydeploy", ".."],
                 ["activate", "--workdir", wd, "../x", version], ["hold", "--workdir", wd, "/etc"],
                 ["rollback", "--workdir", wd, "."]):
        rc, answer = run_runner(py, *args)
        assert rc == 1 and "refusing" in answer["error"], (args, answer)

    # a staging manifest (planted on the device) that points outside the version folder
    staging = wd / "tinydeploy" / f".staging-{version}"
    staging.mkdir(parents=True)
    holder, held = hold_lock(py, wd)  # the commands that change the model folder need the deploy lock
    lock = ["--lock", held["token"]]
    onnx = tiny_builds["v1"] / "model.onnx"
    entry = {"path": "../../../planted.onnx", "sha256": hashlib.sha256(onnx.read_bytes()).hexdigest(),
             "size": onnx.stat().st_size, "role": "model"}
    (staging / "manifest.json").write_text(json.dumps({"files": [entry]}))
    rc, answer = run_runner(py, "stage", "--workdir", wd, "tinydeploy", version, *lock)
    assert rc == 1 and "not a plain relative path" in answer["error"]
    assert not (tmp_path / "planted.onnx").exists() and not staging.exists()

    # the model folder must be a real folder inside the workdir, not a symlink out of it
    outside = tmp_path / "outside"
    (outside / "versions" / version).mkdir(parents=True)
    (outside / "versions" / version / "manifest.json").write_text('{"files": []}')
    (wd / "evil").symlink_to(outside)
    rc, answer = run_runner(py, "activate", "--workdir", wd, "evil", version, *lock)
    assert rc == 1 and "symlink" in answer["error"] and not (outside / "current").exists()

    # prune never follows a version folder that is a symlink out of the model folder
    model = wd / "tinydeploy"
    for v in (version, "cd" * 8):
        (model / "versions" / v).mkdir(parents=True)
        (model / "versions" / v / "manifest.json").write_text('{"files": []}')
    (outside / "keep.txt").write_text("not the runner's")
    (model / "versions" / ("ef" * 8)).symlink_to(outside)
    rc, answer = run_runner(py, "activate", "--workdir", wd, "tinydeploy", version, *lock)
    release(holder)
    assert rc == 0 and answer["pruned"] == ["cd" * 8], answer
    assert (outside / "keep.txt").exists() and (model / "versions" / ("ef" * 8)).is_symlink()


def test_hostile_device_manifest_cannot_choose_where_results_land(tmp_path, inventory, tiny_builds):
    dev = _dev(inventory(pi={}))
    build = variant(tiny_builds["v1"], tmp_path / "b" / "tinydeploy" / "host", "e")  # a build not kept here
    deploy(build, "pi", dev, **QUIET)
    current = tmp_path / "wd-pi" / "tinydeploy" / "current" / "manifest.json"
    m = json.loads(current.read_text())
    m["recipe"]["name"], m["target"]["name"] = "../../../escaped", "../../escaped"
    m["artifacts"][0]["name"] = "../../escaped-artifact"
    current.write_text(json.dumps(m))
    out = tmp_path / "o1" / "o2" / "o3" / "out"
    with pytest.raises(UserError, match=r"device pi: .*manifest\.json: .*not a plain name"):
        profile("pi", dev, out, iters=2, warmup=1, **QUIET)
    written = [p for p in tmp_path.rglob("*.json")
               if not p.is_relative_to(tmp_path / "wd-pi") and not p.is_relative_to(tmp_path / "b")]
    assert all(p.is_relative_to(out) for p in written), written


def test_hostile_build_folder_is_one_error_before_any_device_of_a_group(tmp_path, inventory, tiny_builds):
    from click.testing import CliRunner

    from edgeslm.cli import main

    inv = inventory(pi={"groups": ("lab",)}, pj={"groups": ("lab",)})
    build = variant(tiny_builds["v1"], tmp_path / "bad", "a", edit=lambda m: m.update(cache_key=".."))
    r = CliRunner().invoke(main, ["deploy", str(build), "-g", "lab", "--devices", str(inv)])
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.strip() == (f"error: {build}/manifest.json: cache_key: cache key '..' is not a lower-case hex "
                                "digest (refusing this build folder; rebuild it)")
    assert not (tmp_path / "wd-pi").exists() and not (tmp_path / "wd-pj").exists()
