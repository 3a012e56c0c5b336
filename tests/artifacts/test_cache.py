"""The build cache cannot be poisoned: build folders are copies, entries are verified by content."""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest

from edgeslm.artifacts import cache
from edgeslm.config.catalog import load_target
from edgeslm.config.recipe import load_recipe
from edgeslm.pipeline import build, plan
from tiny import write_recipe

pytestmark = pytest.mark.slow


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _build(tmp_path, source, force=False, name="cachetest"):
    recipe = load_recipe(write_recipe(tmp_path / f"{name}.toml", source, "embedding", name=name,
                                      formats=("onnx",)))
    return build(recipe, plan(recipe, [load_target("host")])[0], tmp_path / "out", force=force)


def test_editing_a_build_folder_never_changes_the_cache(tmp_path, tiny_model):
    first = _build(tmp_path, tiny_model("bert", "embedding"))
    model = first.folder / "model.onnx"
    good = _sha(model)
    entry = cache.store_dir() / first.manifest.cache_key
    assert os.stat(model).st_ino != os.stat(entry / "model.onnx").st_ino  # a copy, not a hard link

    with open(model, "r+b") as f:  # a byte changed in place
        f.seek(200)
        b = f.read(1)
        f.seek(200)
        f.write(bytes([b[0] ^ 0xFF]))
    assert _sha(entry / "model.onnx") == good  # the cache did not change with it
    again = _build(tmp_path, tiny_model("bert", "embedding"))
    assert again.cached and "modified since the build" in again.note and _sha(model) == good

    shutil.copyfile(first.folder / "reference.npz", model)  # another file copied over it
    fresh = build(load_recipe(tmp_path / "cachetest.toml"), plan(load_recipe(tmp_path / "cachetest.toml"),
                                                                [load_target("host")])[0], tmp_path / "other")
    assert fresh.cached and _sha(fresh.folder / "model.onnx") == good  # a fresh --out gets the good file


def test_a_corrupt_cache_entry_is_rebuilt_and_force_replaces_it(tmp_path, tiny_model):
    first = _build(tmp_path, tiny_model("bert", "embedding"), name="corrupt")
    entry = cache.store_dir() / first.manifest.cache_key
    good = _sha(entry / "model.onnx")
    os.chmod(entry / "model.onnx", 0o644)
    (entry / "model.onnx").write_bytes(b"garbage")
    shutil.rmtree(first.folder)
    rebuilt = _build(tmp_path, tiny_model("bert", "embedding"), name="corrupt")
    assert not rebuilt.cached and _sha(entry / "model.onnx") == good

    os.chmod(entry / "model.onnx", 0o644)
    with open(entry / "model.onnx", "r+b") as f:  # same size, other bytes: --force must replace it
        f.write(b"\0" * 16)
    forced = _build(tmp_path, tiny_model("bert", "embedding"), force=True, name="corrupt")
    assert not forced.cached and _sha(entry / "model.onnx") == _sha(forced.folder / "model.onnx")


def test_weights_are_keyed_by_content_not_size_and_mtime(tmp_path, tiny_model):
    src = tmp_path / "model"
    shutil.copytree(tiny_model("bert", "embedding"), src)
    first = _build(tmp_path, src, name="swap")
    weights = src / "model.safetensors"
    st = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-8:] = bytes(8)  # other weights, same size
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same modification time
    assert weights.stat().st_size == st.st_size and weights.stat().st_mtime_ns == st.st_mtime_ns
    second = _build(tmp_path, src, name="swap")
    assert not second.cached and second.manifest.cache_key != first.manifest.cache_key


def test_killed_builds_leave_no_work_folders(tmp_path, tiny_model):
    out = tmp_path / "out" / "stale"
    dead = out / ".host.build-999999"  # a pid that is not running
    dead.mkdir(parents=True)
    (dead / "model.onnx").write_bytes(b"half")
    alive = out / f".host.build-{os.getpid()}x"  # not our pattern: never touched
    alive.mkdir()
    _build(tmp_path, tiny_model("bert", "embedding"), name="stale")
    assert not dead.exists() and alive.exists()


def test_a_second_build_of_the_same_key_waits_for_the_first_and_a_stuck_one_is_named(tmp_path):
    """Two processes building the same recipe, model and target: the second waits on the key's lock (an
    flock, freed by the kernel when its holder ends) and says so; past its wait it stops with the holder's
    pid and what to do, instead of building the same thing twice."""
    import subprocess
    import sys
    import time

    from edgeslm.errors import UserError

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from edgeslm.artifacts import cache\n"
                               "with cache.key_lock('k1'):\n    print('held', flush=True); time.sleep(3)\n"],
                              stdout=subprocess.PIPE, text=True, env=os.environ)
    try:
        assert holder.stdout.readline().strip() == "held"
        said = []
        with pytest.raises(UserError, match=rf"another edgeslm process \(pid {holder.pid}\) has been building .*"
                                            "EDGESLM_BUILD_WAIT"):
            with cache.key_lock("k1", said.append, wait=0.5):
                pass
        assert said == [f"waiting for another edgeslm process (pid {holder.pid}) building the same artifacts"]
        t0 = time.monotonic()
        with cache.key_lock("k1", wait=30):  # freed when the holder ends
            assert time.monotonic() - t0 > 1.0 and holder.wait(timeout=10) == 0
        with cache.key_lock("k2", wait=0):  # another key is not held up
            pass
    finally:
        holder.kill()
        holder.wait()
