"""Versions on a device: left-overs of failed deploys are pruned, tampering is judged against the host's
build, rollback verifies, a profile pins its version, simultaneous deploys and a damaged runner file.
Real sshd, real runner processes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from deployhelp import cli, device, hold_lock, release, run_runner, variant, current_version, model_folder
from edgeslm.errors import EXIT_USER, UserError
from edgeslm.profiling.deploy import deploy, rollback
from edgeslm.profiling.profile import profile
from edgeslm.runner import RUNNER_PATH
from sshd import CuttingProxy

pytestmark = pytest.mark.slow
QUIET = {"log": lambda m: None}

_dev = device
_model = model_folder
_current = current_version


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- 4. staging left-overs
def test_failed_deploys_leave_no_staging_folders(tmp_path, inventory, tiny_builds, sshd):
    wd = tmp_path / "wd-pi"
    deploy(tiny_builds["v1"], "pi", _dev(inventory(pi={})), **QUIET)
    for k in "abc":  # three versions whose uploads are cut
        build = variant(tiny_builds["v1"], tmp_path / k, k, grow=300_000)
        proxy = CuttingProxy(sshd.port, limit=150_000)
        known = tmp_path / f"known-{k}"
        known.write_text(f"[127.0.0.1]:{proxy.port} {' '.join(sshd.host_pub.split()[:2])}\n")
        with pytest.raises(UserError):
            deploy(build, "pi", _dev(inventory(pi={"port": proxy.port, "known_hosts": known})), **QUIET)
        proxy.close()
        time.sleep(0.3)  # the cut session's lock holder exits
    # at most the last one stays, so that deploying that version again resumes its upload
    assert len(list(_model(wd).glob(".staging-*"))) <= 1
    deploy(tiny_builds["v2"], "pi", _dev(inventory(pi={"lock_wait": 10})), **QUIET)
    assert not list(_model(wd).glob(".staging-*")) and not list(_model(wd).glob(".trash-*"))
    assert sorted(p.name for p in (_model(wd) / "versions").iterdir()) == sorted(
        [_current(wd).split("/")[1], os.readlink(_model(wd) / "previous").split("/")[1]])


def test_a_staged_version_failing_verification_is_removed(tmp_path, tiny_builds):
    import sys

    version = "ab" * 8
    staging = tmp_path / "wd" / "tinydeploy" / f".staging-{version}"
    shutil.copytree(tiny_builds["v1"], staging)
    _flip(staging / "model.onnx")
    holder, held = hold_lock(sys.executable, tmp_path / "wd")
    rc, answer = run_runner(sys.executable, "commit", "--workdir", tmp_path / "wd", "tinydeploy", version,
                            "--lock", held["token"])
    release(holder)
    assert rc == 1 and "model.onnx (checksum mismatch); the staging folder was removed" in answer["error"]
    assert not staging.exists()


# ------------------------------------------------------------------------------------ 5. tampering
def test_tampered_model_is_caught_by_profile_and_replaced_by_deploy(tmp_path, inventory, tiny_builds):
    """A byte flip in current/model.onnx plus a matching edit of the device's manifest.json."""
    dev = _dev(inventory(pi={}))
    wd, build = tmp_path / "wd-pi", tiny_builds["v1"]
    first = deploy(build, "pi", dev, **QUIET)
    cur = _model(wd) / "current"
    _flip(cur / "model.onnx")
    m = json.loads((cur / "manifest.json").read_text())
    entry = next(f for f in m["files"] if f["path"] == "model.onnx")
    entry["sha256"] = _sha(cur / "model.onnx")
    (cur / "manifest.json").write_text(json.dumps(m, indent=2))
    assert run_runner(dev.python, "verify", cur)[1]["ok"]  # self-consistent: the device alone cannot tell

    out = tmp_path / "out"  # where the host keeps this build (a copy: results land beside it)
    shutil.copytree(build, out / "tinydeploy" / "host")
    with pytest.raises(UserError, match=rf"device pi: deployed tinydeploy version {first.version} does not match "
                                        r"the host's build .*\(manifest\.json \(differs\), model\.onnx \(differs\)\)"):
        profile("pi", dev, out, iters=2, warmup=1, artifacts=["onnx"], **QUIET)

    logged = []
    again = deploy(build, "pi", dev, log=logged.append)
    assert not again.already_there and again.sent_files == 1  # only the damaged file travels
    assert any("does not match this build (manifest.json (differs), model.onnx (differs))" in m for m in logged)
    assert _sha(cur / "model.onnx") == _sha(build / "model.onnx")
    assert _sha(cur / "manifest.json") == _sha(build / "manifest.json")
    assert deploy(build, "pi", dev, **QUIET).already_there
    r = profile("pi", dev, out, iters=2, warmup=1, artifacts=["onnx"], **QUIET)[0].result
    assert r.parity.passed and r.build.verified_against == "host build"


def test_versions_share_no_inodes_and_rollback_verifies_first(tmp_path, inventory, tiny_builds):
    inv = inventory(pi={})
    dev = _dev(inv)
    wd = tmp_path / "wd-pi"
    first = deploy(tiny_builds["v1"], "pi", dev, **QUIET)
    second = deploy(tiny_builds["v2"], "pi", dev, **QUIET)
    assert second.sent_files == 0  # reused from the device, but as copies
    v1, v2 = _model(wd) / "versions" / first.version, _model(wd) / "versions" / second.version
    for f in v2.rglob("*"):
        if f.is_file() and f.name != "manifest.json":
            assert f.stat().st_ino != (v1 / f.relative_to(v2)).stat().st_ino, f

    _flip(v1 / "model.onnx")  # the previous version is damaged: no switching to it
    out = tiny_builds["v1"].parent.parent
    r = cli("rollback", "-d", "pi", "--devices", inv, "-o", out)
    assert r.exit_code == EXIT_USER
    assert (f"previous version {first.version} failed verification against the host build: model.onnx "
            "(checksum mismatch); not switching to it") in r.output, r.output
    assert _current(wd) == f"versions/{second.version}"
    assert _sha(v2 / "model.onnx") == _sha(tiny_builds["v2"] / "model.onnx")  # not hit through a shared inode

    _flip(v1 / "model.onnx")  # repaired: rollback switches, and says what it was judged against
    r = cli("rollback", "-d", "pi", "--devices", inv, "-o", out)
    assert r.exit_code == 0, r.output
    assert f"now versions/{first.version}" in r.output and "verified against the host's build" in r.output

    # versions this machine has no build of: judged against the device's own manifest, and said so
    a, b = variant(tiny_builds["v1"], tmp_path / "a", "a"), variant(tiny_builds["v1"], tmp_path / "b", "b")
    deploy(a, "pi", dev, **QUIET)
    deploy(b, "pi", dev, **QUIET)
    back = rollback("pi", dev, None, out=tmp_path / "nothing-here")
    assert back["current"] == "versions/" + "a" * 16
    assert back["verified_against"] == f"the device's own manifest (no build of {'a' * 16} on this machine)"


# ----------------------------------------------------------------------------- 6. profile pinning
def _runner_running(verb: str, marker: str) -> bool:
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            args = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (any(b"edgeslm-runner" in a for a in args) and verb.encode() in args
                and any(marker.encode() in a for a in args)):
            return True
    return False


def test_profile_pins_and_labels_its_version_while_deploys_come_and_go(tmp_path, inventory, tiny_builds):
    dev = _dev(inventory(pi={}))
    wd = tmp_path / "wd-pi"
    first = deploy(tiny_builds["v1"], "pi", dev, **QUIET)
    third = variant(tiny_builds["v1"], tmp_path / "v3", "d")
    box = {}

    def run():
        try:
            # min_seconds: long enough to outlast two deploys on a loaded machine (tests run two at once)
            box["results"] = profile("pi", dev, tmp_path / "out", artifacts=["onnx"], iters=5, warmup=1,
                                     min_seconds=20, **QUIET)
        except Exception as exc:  # noqa: BLE001 - inspected below
            box["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    deadline = time.monotonic() + 60
    while not _runner_running("profile", str(wd)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _runner_running("profile", str(wd)), box
    deploy(tiny_builds["v2"], "pi", dev, **QUIET)
    deploy(third, "pi", dev, **QUIET)  # v1 is neither current nor previous now
    assert _runner_running("profile", str(wd)), "the profile ended before the deploys did: raise min_seconds"
    assert (_model(wd) / "versions" / first.version / "model.onnx").is_file()  # pinned: not pruned
    worker.join(120)
    assert not worker.is_alive() and "error" not in box, box
    r = box["results"][0].result
    assert r.build.version == first.version and r.parity.passed
    assert r.build.cache_key.startswith(first.version)
    # the pin ended with the profile: the next deploy prunes that version
    deploy(tiny_builds["v2"], "pi", dev, **QUIET)
    assert not (_model(wd) / "versions" / first.version).exists()


# ------------------------------------------------------------- 7. deploys at once, a damaged runner
def test_simultaneous_deploys_to_a_fresh_device(tmp_path, inventory, tiny_builds):
    for name, settings in (("pi", {}), ("pj", {"lock_wait": 60})):
        dev = _dev(inventory(**{name: settings}), name)
        n = 5
        barrier = threading.Barrier(n)
        outcomes = []

        def one():
            barrier.wait()
            try:
                deploy(tiny_builds["v1"], name, dev, **QUIET)
                outcomes.append("ok")
            except UserError as exc:
                outcomes.append(str(exc))
            except Exception as exc:  # noqa: BLE001 - the bug this test is about
                outcomes.append(f"RAW {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(outcomes) == n and "ok" in outcomes, outcomes
        for o in outcomes:
            busy = f"device {name}: another deploy is in progress on this device (held by "
            assert o == "ok" or o.startswith(busy), o
        if settings:  # waiting for the lock: every one of them succeeds
            assert outcomes == ["ok"] * n, outcomes
        wd = tmp_path / f"wd-{name}"
        assert run_runner(dev.python, "verify", _model(wd) / "current")[1]["ok"]
        runners = list((wd / "runner").iterdir())
        assert [p.name for p in runners] == [RUNNER_PATH.name], runners


def test_damaged_runner_file_on_the_device_is_replaced(tmp_path, inventory, tiny_builds):
    dev = _dev(inventory(pi={}))
    wd = tmp_path / "wd-pi"
    deploy(tiny_builds["v1"], "pi", dev, **QUIET)
    runner = next((wd / "runner").glob("edgeslm-runner-*.pyz"))
    runner.write_bytes(runner.read_bytes()[:1000])  # truncated
    r = profile("pi", dev, tmp_path / "out", iters=2, warmup=1, artifacts=["onnx"], **QUIET)
    assert r[0].result.parity.passed and _sha(runner) == _sha(RUNNER_PATH)
    runner.write_text("print('not the runner')\n")  # edited, same name
    assert deploy(tiny_builds["v2"], "pi", dev, **QUIET).version
    assert _sha(runner) == _sha(RUNNER_PATH)
