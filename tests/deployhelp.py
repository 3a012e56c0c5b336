"""Helpers for deploy tests: build variants and the device runner as a real process."""

from __future__ import annotations

from pathlib import Path


def variant(build: Path, dest: Path, key: str, grow: int = 0, edit=None) -> Path:
    """A copy of `build` that is another version (cache key `key` * 64); with `grow`, model.onnx gets
    that many random bytes more (so it must be sent); `edit(manifest_dict)` may change the manifest."""
    import hashlib
    import json
    import os
    import shutil

    shutil.copytree(build, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["cache_key"] = key * 64
    for f in manifest["files"]:
        if f["path"] == "model.onnx" and grow:
            data = (dest / "model.onnx").read_bytes() + os.urandom(grow)
            (dest / "model.onnx").write_bytes(data)
            f["sha256"], f["size"] = hashlib.sha256(data).hexdigest(), len(data)
    if edit:
        edit(manifest)
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return dest


def run_runner(python: str, *args, stdin: str | None = None) -> tuple[int, dict]:
    """The device runner as a real process, as the host calls it: (exit code, its JSON answer)."""
    import json
    import subprocess

    from edgeslm.runner import RUNNER_PATH

    r = subprocess.run([python, str(RUNNER_PATH), *map(str, args)], capture_output=True, text=True,
                       input=stdin, timeout=60)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    return r.returncode, (json.loads(lines[-1]) if lines else {"stderr": r.stderr})


def cli(*args):
    """The CLI in process (click's runner), arguments as strings."""
    from click.testing import CliRunner

    from edgeslm.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def device(path: Path, name: str = "pi"):
    """The device entry `name` of the inventory at `path`."""
    from edgeslm.config.devices import load_inventory

    return load_inventory(path).get(name)


def hold_lock(python: str, workdir: Path, recipe: str = "tinydeploy", expire: float = 300,
              owner: str = "ci@builder (edgeslm pid 42)"):
    """A device runner holding the deploy lock, as a real process: (process, its answer). Heartbeats are
    not sent (use a long `expire`); closing its stdin releases the lock."""
    import json
    import subprocess

    from edgeslm.runner import RUNNER_PATH

    p = subprocess.Popen([python, str(RUNNER_PATH), "hold", "--workdir", str(workdir), recipe, "--owner", owner,
                          "--expire", str(expire)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return p, json.loads(p.stdout.readline())


def release(holder) -> None:
    holder.stdin.close()
    holder.wait(timeout=10)


def model_folder(wd: Path, recipe: str = "tinydeploy") -> Path:
    """The deployed recipe's folder in a device's workdir."""
    return wd / recipe


def current_version(wd: Path, recipe: str = "tinydeploy") -> str:
    """Where the device's `current` link points (versions/<version>)."""
    import os

    return os.readlink(model_folder(wd, recipe) / "current")

