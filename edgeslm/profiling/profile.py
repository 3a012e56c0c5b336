"""Profile what is deployed on a device: the runner checks parity, then measures; results come home."""

from __future__ import annotations

import datetime as dt
import json
import posixpath
from pathlib import Path

from edgeslm.config.devices import Device
from edgeslm.errors import UserError
from edgeslm.profiling.deploy import only_recipe, open_device
from edgeslm.runner import PROFILE_SCHEMA

RESULT_DIR = "profiles"


def store_for(out: Path, manifest: dict) -> Path:
    """Results live beside the build they measure: <out>/<recipe>/<target>/profiles when that local
    build is the deployed version, else <out>/profiles/<recipe>."""
    folder = out / manifest["recipe"]["name"] / manifest["target"]["name"]
    try:
        local = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        local = {}
    if local.get("cache_key") == manifest["cache_key"]:
        return folder / RESULT_DIR
    return out / RESULT_DIR / manifest["recipe"]["name"]


def profile(name: str, device: Device, out: Path, recipe: str | None = None, artifacts=(),
            threads: int = 0, iters: int = 100, warmup: int = 10, min_seconds: float = 0.0,
            seq_len: int | None = None, accept_new_host_key: bool = False, log=print) -> list[dict]:
    """Profile each artifact of the deployed `recipe`; results are stored beside the build (store_for)."""
    results = []
    with open_device(name, device, accept_new_host_key) as dev:
        recipe = recipe or only_recipe(dev, name)
        current = posixpath.join(dev.workdir, recipe, "current")
        ok = dev.call("verify", current)
        if not ok["ok"]:
            raise UserError(f"device {name}: deployed {recipe} failed its checksum check "
                            f"({ok['bad'][:2]}); deploy it again")
        remote_manifest = out / f".{name}-manifest.json"
        dev.get(posixpath.join(current, "manifest.json"), remote_manifest)
        manifest = json.loads(remote_manifest.read_text())
        remote_manifest.unlink()
        store = store_for(out, manifest)
        names = list(artifacts) or [a["name"] for a in manifest["artifacts"]]
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        for art in names:
            log(f"profiling {recipe}/{art} on {name}")
            remote = posixpath.join(dev.workdir, recipe, "results", f"{stamp}-{art}.json")
            args = ["profile", current, "--artifact", art, "--threads", str(threads), "--iters", str(iters),
                    "--warmup", str(warmup), "--min-seconds", str(min_seconds), "--out", remote]
            if seq_len:
                args += ["--seq-len", str(seq_len)]
            dev.call(*args, timeout=3600)
            local = store / name / f"{stamp}-{art}.json"
            dev.get(remote, local)
            result = json.loads(local.read_text())
            if result.get("schema") != PROFILE_SCHEMA:
                raise UserError(f"device {name}: runner answered schema {result.get('schema')}, "
                                f"expected {PROFILE_SCHEMA}")
            result["device"].update({"name": name, "target": device.target})
            result["build"]["version"] = posixpath.basename(
                dev.python_output("import os,sys; print(os.path.realpath(sys.argv[1]))", current).strip())
            local.write_text(json.dumps(result, indent=1))
            result["_path"] = str(local)
            results.append(result)
    return results
