"""Deploy a build to a device: verified, idempotent, atomic, reversible.

On the device, `<workdir>/<recipe>/` holds `versions/<key>/` (complete, verified builds), `current` and
`previous` (symlinks switched atomically) and `.staging-<key>/` while a deploy uploads. The active model
changes only in the final rename of `current`; a deploy that fails before that leaves it untouched.
"""

from __future__ import annotations

import contextlib
import posixpath
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeslm.artifacts.manifest import MANIFEST_NAME, Manifest, read_manifest
from edgeslm.config.devices import LOCAL, Device
from edgeslm.errors import UserError
from edgeslm.profiling.remote import RemoteRunner
from edgeslm.transport import connect
from edgeslm.transport.ssh import DeviceError

RUNTIME_FOR = {"onnx": "onnxruntime", "executorch": "executorch"}
INSTALL = {"onnxruntime": "python3 -m pip install onnxruntime numpy",
           "executorch": "python3 -m pip install executorch-numpy-runtime numpy  (Python >= 3.12)",
           "numpy": "python3 -m pip install numpy"}


@dataclass
class DeployResult:
    device: str
    recipe: str
    version: str
    sent_files: int = 0
    sent_bytes: int = 0
    reused_files: int = 0
    already_there: bool = False
    seconds: float = 0.0
    model_dir: str = ""
    previous: str | None = None
    warnings: list[str] = field(default_factory=list)


@contextlib.contextmanager
def open_device(name: str, device: Device, accept_new_host_key: bool = False):
    """A connected RemoteRunner for the device; always closed."""
    conn = connect(name, device, accept_new_host_key=accept_new_host_key)
    try:
        yield RemoteRunner(conn, name, device.python, device.workdir)
    finally:
        conn.close()


def version_of(manifest: Manifest) -> str:
    return manifest.cache_key[:16]


def compatibility(name: str, device: Device, probe: dict, manifest: Manifest) -> list[str]:
    """Raise for what cannot work (architecture, missing runtime); return warnings for the rest."""
    arch = manifest.target["arch"]
    if probe["arch"] != arch:
        raise DeviceError(f"device {name} is {probe['arch']} but build {manifest.recipe['name']} is for "
                          f"target {manifest.target['name']} ({arch}); build for the device's target "
                          f"({device.target}) instead")
    missing = []
    if not probe["runtimes"].get("numpy"):
        missing.append("numpy")
    for a in manifest.artifacts:
        rt = RUNTIME_FOR[a.format]
        if not probe["runtimes"].get(rt) and rt not in missing:
            missing.append(rt)
    if missing:
        raise DeviceError(f"device {name} lacks {', '.join(missing)}: " + "; ".join(INSTALL[m] for m in missing))
    warnings = []
    if device.target != manifest.target["name"] and name != LOCAL:
        warnings.append(f"build is for target {manifest.target['name']}, device {name} is {device.target}")
    return warnings


def deploy(build_folder: Path, name: str, device: Device, accept_new_host_key: bool = False,
           log=print) -> DeployResult:
    manifest = read_manifest(build_folder)
    if manifest is None:
        raise UserError(f"{build_folder}: not a build folder (no valid {MANIFEST_NAME}); run `edgeslm build` first")
    if manifest.status != "ok":
        raise UserError(f"{build_folder}: build failed verification; refusing to deploy it")
    t0 = time.perf_counter()
    recipe, version = manifest.recipe["name"], version_of(manifest)
    with open_device(name, device, accept_new_host_key) as dev:
        probe = dev.call("probe", "--workdir", dev.workdir)
        result = DeployResult(name, recipe, version, warnings=compatibility(name, device, probe, manifest))
        model_dir = result.model_dir = posixpath.join(dev.workdir, recipe)
        with dev.locked(model_dir):
            _upload(dev, build_folder, manifest, model_dir, version, result, log)
            switched = dev.call("activate", model_dir, version)
            result.previous = switched.get("previous")
    result.seconds = time.perf_counter() - t0
    return result


def _upload(dev: RemoteRunner, build_folder: Path, manifest: Manifest, model_dir: str, version: str,
            result: DeployResult, log) -> None:
    final = posixpath.join(model_dir, "versions", version)
    try:
        if dev.call("verify", final)["ok"]:
            result.already_there = True
            result.reused_files = len(manifest.files)
            return
    except DeviceError:
        pass  # not there (or broken): stage it
    staging = posixpath.join(model_dir, f".staging-{version}")
    dev.put(build_folder / MANIFEST_NAME, posixpath.join(staging, MANIFEST_NAME))
    plan = dev.call("stage", model_dir, version)
    need = set(plan["need"])
    result.reused_files = plan["reused"]
    sizes = {f.path: f.size for f in manifest.files}
    needed_bytes = sum(sizes[p] for p in need)
    if needed_bytes > plan["free_bytes"]:
        raise DeviceError(f"device {result.device}: not enough disk in {model_dir}: need "
                          f"{needed_bytes / 1e6:.1f} MB, {plan['free_bytes'] / 1e6:.1f} MB free "
                          "(free space or set another workdir)")
    for path in sorted(need, key=lambda p: sizes[p]):
        log(f"upload {path} ({sizes[path] / 1e6:.1f} MB)")
        dev.put(build_folder / path, posixpath.join(staging, path))
        result.sent_files += 1
        result.sent_bytes += sizes[path]
    dev.call("commit", model_dir, version)  # verifies every sha256 on the device first


def rollback(name: str, device: Device, recipe: str | None, accept_new_host_key: bool = False) -> dict:
    with open_device(name, device, accept_new_host_key) as dev:
        recipe = recipe or only_recipe(dev, name)
        model_dir = posixpath.join(dev.workdir, recipe)
        with dev.locked(model_dir):
            out = dev.call("rollback", model_dir)
    return {"device": name, "recipe": recipe, **out}


LIST_RECIPES = ("import os,sys,json; w=sys.argv[1]; print(json.dumps(sorted(d for d in os.listdir(w) "
                "if os.path.islink(os.path.join(w, d, 'current')))))")


def deployed_recipes(dev: RemoteRunner) -> list[str]:
    import json

    return json.loads(dev.python_output(LIST_RECIPES, dev.workdir))


def only_recipe(dev: RemoteRunner, name: str) -> str:
    found = deployed_recipes(dev)
    if not found:
        raise UserError(f"device {name} has no deployed model yet; deploy one first "
                        f"(edgeslm deploy RECIPE --device {name}) or give a build or recipe to profile")
    if len(found) != 1:
        raise UserError(f"device {name} has {len(found)} deployed recipes ({', '.join(found) or 'none'}); "
                        "name one with --recipe")
    return found[0]
