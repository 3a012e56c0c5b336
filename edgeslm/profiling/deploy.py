"""Deploy a build to a device: verified, idempotent, atomic, reversible.

On the device, `<workdir>/<recipe>/` holds `versions/<key>/` (complete, verified builds), `current` and
`previous` (symlinks switched atomically) and `.staging-<key>/` while a deploy uploads. The active model
changes only in the final rename of `current`; a deploy that fails before that leaves it untouched.

A build folder is input like any other: its manifest's names and paths are checked, and its files are
checked against their hashes here, before anything leaves this machine. What is on the device is judged
against the host's build (the runner hashes the device's files; the device's own manifest must be
byte-identical to the build's), never against what the device says about itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeslm.artifacts.manifest import MANIFEST_NAME, NAME_RE, Manifest, check_files, load_manifest, parse_manifest
from edgeslm.config.devices import LOCAL, Device
from edgeslm.formats import NUMPY_INSTALL, format_unit
from edgeslm.tasks import task_unit
from edgeslm.errors import ConfigError, UserError
from edgeslm.contract.answers import AnswerError, check
from edgeslm.contract.documents import MAX_ANSWER, DocumentError, loads
from edgeslm.profiling.remote import RemoteRunner, check_name, malformed
from edgeslm.transport import DeviceError, connect, printable

VERSION_RE = re.compile(r"^[0-9a-f]{16}$")


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


@dataclass
class HostBuild:
    """A build on this machine: the reference a device's copy is judged against."""

    folder: Path
    manifest: Manifest
    manifest_sha256: str

    @classmethod
    def load(cls, folder: Path) -> "HostBuild":
        manifest = load_manifest(folder)
        return cls(folder, manifest, hashlib.sha256((folder / MANIFEST_NAME).read_bytes()).hexdigest())


def find_host_build(out: Path | None, recipe: str, version: str, target: str | None = None) -> HostBuild | None:
    """The build of `recipe` whose version is `version`, under `out/<recipe>/*/` or in the build cache. Targets
    that get the same files share a version, each folder's manifest naming its own target: the one for `target`
    (the device's) is preferred, as it is the manifest that was deployed there."""
    from edgeslm.artifacts.cache import store_dir

    candidates = sorted((out / recipe).glob(f"*/{MANIFEST_NAME}")) if out else []
    candidates += sorted(store_dir().glob(f"{version}*/{MANIFEST_NAME}"))
    found = []
    for path in candidates:
        try:
            data = path.read_bytes()
            m = parse_manifest(data.decode(), str(path))
        except (OSError, UnicodeDecodeError, ConfigError):
            continue
        if m.version == version and m.recipe.name == recipe and m.status == "ok":
            found.append(HostBuild(path.parent, m, hashlib.sha256(data).hexdigest()))
    exact = next((b for b in found if b.manifest.target.get("name") == target), None)
    if exact is not None or not found or target is None:
        return exact or (found[0] if found else None)
    return _retargeted(found[0], target)


def _retargeted(build: HostBuild, target: str) -> HostBuild:
    """A build of the same files made for another target (the store keeps the first target's manifest): the
    manifest a folder built for `target` holds, as artifacts.cache.retarget writes it, and its sha256."""
    from edgeslm.config.catalog import load_target

    try:
        want = load_target(target).resolved().model_dump(mode="json")
    except UserError:
        return build
    manifest = build.manifest.model_copy(update={"target": want})
    return HostBuild(build.folder, manifest, hashlib.sha256(manifest.to_json().encode()).hexdigest())


def differences(verified: dict, build: HostBuild | None) -> str:
    """What a failed `verify` found, named against the host's build when there is one."""
    bad = [b for b in verified.get("bad") or [] if isinstance(b, dict)]
    actual = verified.get("actual")
    if build and isinstance(actual, dict):  # the device's manifest is not the build's: which files differ?
        bad = [{"path": "manifest.json", "problem": "differs"}] + [
            {"path": f.path, "problem": "missing" if actual.get(f.path) is None else "differs"}
            for f in build.manifest.files if actual.get(f.path) != f.sha256]
    return ", ".join(f"{printable(b.get('path'), 80)} ({printable(b.get('problem'), 80)})" for b in bad[:4]) or \
        "no details"


def device_version(name: str, value) -> str:
    """A version name a device answered with, checked before it is used here or sent back."""
    if not isinstance(value, str) or not VERSION_RE.fullmatch(value):
        raise DeviceError(f"device {name}: answered an invalid version {str(value)[:40]!r}")
    return value


@contextlib.contextmanager
def open_device(name: str, device: Device, accept_new_host_key: bool = False):
    """A connected RemoteRunner for the device; always closed."""
    conn = connect(name, device, accept_new_host_key=accept_new_host_key)
    try:
        yield RemoteRunner(conn, name, device)
    finally:
        conn.close()


def version_of(manifest: Manifest) -> str:
    return manifest.version


def checked_probe(name: str, probe) -> dict:
    """A device's probe answer, shaped as expected before anything reads it (RemoteRunner.call already checks
    it; this is for answers that come another way)."""
    try:
        return check("probe", probe)
    except AnswerError as exc:
        raise malformed(name, "probe", exc) from None


def compatibility(name: str, device: Device, probe: dict, manifest: Manifest) -> list[str]:
    """Raise for what cannot work (architecture, missing runtime); return warnings for the rest."""
    probe = checked_probe(name, probe)
    arch = manifest.target["arch"]
    if probe["arch"] != arch:
        raise DeviceError(f"device {name} is {probe['arch']} but build {manifest.recipe.name} is for "
                          f"target {manifest.target['name']} ({arch}); build for the device's target "
                          f"({device.target}) instead")
    missing = {} if probe["runtimes"].get("numpy") else {"numpy": NUMPY_INSTALL}
    for a in manifest.artifacts:
        rt = format_unit(a.format)
        package = rt.device_package(manifest.task)  # None: runs in edgeslm's own runtime folder (deploy uploads it)
        if package and not probe["runtimes"].get(package):
            missing.setdefault(package, rt.install)
    if missing:
        raise DeviceError(f"device {name} lacks {', '.join(missing)}: " + "; ".join(missing.values()))
    problem = task_unit(manifest.task).fit_problem(probe, manifest)
    if problem:
        raise DeviceError(f"device {name}: {manifest.recipe.name} will not fit: {problem}")
    warnings = []
    if device.target != manifest.target["name"] and name != LOCAL:
        warnings.append(f"build is for target {manifest.target['name']}, device {name} is {device.target}")
    return warnings


def needs_et_runtime(manifest: Manifest, artifact: str | None = None) -> bool:
    """A decoder .pte runs in edgeslm's ExecuTorch runtime folder, and an ONNX file with edgeslm's ops needs
    the op library in it (deploy uploads the folder)."""
    return any((format_unit(a.format).uploads_runtime(manifest.task) or bool((a.export or {}).get("custom_ops")))
               and artifact in (None, a.name) for a in manifest.artifacts)


def checked_build(build_folder: Path) -> HostBuild:
    """A build folder fit to deploy: valid manifest, verified build, files matching their hashes."""
    build = HostBuild.load(build_folder)
    if build.manifest.status != "ok":
        raise UserError(f"{build_folder}: build failed verification; refusing to deploy it")
    check_files(build_folder, build.manifest)
    return build


def deploy(build_folder: Path, name: str, device: Device, accept_new_host_key: bool = False,
           log=print, break_lock: bool = False) -> DeployResult:
    build = checked_build(build_folder)  # before anything of it leaves this machine
    manifest = build.manifest
    t0 = time.perf_counter()
    recipe, version = manifest.recipe.name, manifest.version
    with open_device(name, device, accept_new_host_key) as dev:
        probe = dev.call("probe", "--workdir", dev.workdir)
        result = DeployResult(name, recipe, version, warnings=compatibility(name, device, probe, manifest))
        result.model_dir = dev.model_dir(recipe)
        if break_lock:
            broke = dev.model("break-lock", recipe)
            if broke["broken"]:
                h = broke.get("holder") or {}
                log(f"broke the stale deploy lock of {printable(h.get('owner', 'an unknown host'), 120)} on {name}")
        if needs_et_runtime(manifest):  # the program runs in edgeslm's runtime: there before the model
            dev.et_runtime(probe["arch"], log=log)
        with dev.locked(recipe) as lock:
            _upload(dev, build, result, log, lock)
            switched = dev.model("activate", recipe, version, "--lock", lock)
            result.previous = switched.get("previous")
    result.seconds = time.perf_counter() - t0
    return result


def _upload(dev: RemoteRunner, build: HostBuild, result: DeployResult, log, lock: str) -> None:
    """Stage, upload and commit the build's version (unless the device has it), under the deploy lock whose
    token is `lock`: the device changes nothing if this deploy no longer holds it."""
    manifest, recipe, version = build.manifest, result.recipe, result.version
    final = posixpath.join(result.model_dir, "versions", version)
    verified = dev.call("verify", final, "--manifest-sha256", build.manifest_sha256)
    if verified["ok"]:
        result.already_there = True
        result.reused_files = len(manifest.files)
        return
    bad = verified["bad"]
    if bad and bad[0]["problem"] != "missing":
        log(f"version {version} on {result.device} does not match this build ({differences(verified, build)}): "
            "replacing it")
    staging = posixpath.join(result.model_dir, f".staging-{version}")
    dev.put(build.folder / MANIFEST_NAME, posixpath.join(staging, MANIFEST_NAME))
    plan = dev.model("stage", recipe, version, "--lock", lock)
    sizes = {f.path: f.size for f in manifest.files}
    need = plan["need"]
    if any(p not in sizes for p in need):
        raise DeviceError(f"device {result.device}: stage asked for files this build does not list; refusing")
    result.reused_files = plan["reused"]
    needed_bytes = sum(sizes[p] for p in need)
    if needed_bytes > plan["free_bytes"]:
        raise DeviceError(f"device {result.device}: not enough disk in {result.model_dir}: need "
                          f"{needed_bytes / 1e6:.1f} MB, {plan['free_bytes'] / 1e6:.1f} MB free "
                          "(free space or set another workdir)")
    todo = sorted(set(need), key=lambda p: sizes[p])
    meter = UploadMeter(sum(sizes[p] for p in todo), log)
    for i, path in enumerate(todo, 1):
        log(f"upload [{i}/{len(todo)}] {path} ({sizes[path] / 1e6:.1f} MB)")
        dev.put(build.folder / path, posixpath.join(staging, path), meter.file(path))
        result.sent_files += 1
        result.sent_bytes += sizes[path]
    # the device hashes every file against this build's manifest before it becomes a version
    dev.model("commit", recipe, version, "--manifest-sha256", build.manifest_sha256, "--lock", lock)


class UploadMeter:
    """Progress of a deploy's uploads: every EVERY seconds, the bytes sent of all, the rate and an ETA."""
    EVERY = 5.0

    def __init__(self, total: int, log):
        self.total, self.log, self.done = total, log, 0
        self.start = self.last = time.monotonic()

    def file(self, path: str):
        base = self.done

        def progress(sent: int, size: int) -> None:
            self.done = base + sent
            now = time.monotonic()
            if now - self.last < self.EVERY or sent >= size:
                return
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else 0
            self.log(f"  {path}: {self.done / 1e6:.1f} of {self.total / 1e6:.1f} MB sent, {rate / 1e6:.1f} MB/s, "
                     f"about {left:.0f} s left")

        return progress


def rollback(name: str, device: Device, recipe: str | None, accept_new_host_key: bool = False,
             out: Path | None = None) -> dict:
    """Switch back to the previous version after verifying it: against the host's build of that version
    when one is under `out` or in the build cache, else against the device's own manifest."""
    with open_device(name, device, accept_new_host_key) as dev:
        recipe = check_name(recipe) if recipe else only_recipe(dev, name)
        with dev.locked(recipe) as lock:
            previous = dev.model("status", recipe)["previous"]
            if previous is None:
                raise UserError(f"device {name}: nothing to roll back to for {recipe}: no previous version")
            previous = device_version(name, previous)
            host = find_host_build(out, recipe, previous, device.target)
            extra = ["--manifest-sha256", host.manifest_sha256] if host else []
            r = dev.model("rollback", recipe, "--expect", previous, *extra, "--lock", lock)
    against = (f"the host's build {host.folder}" if host else
               f"the device's own manifest (no build of {previous} on this machine)")
    return {"device": name, "recipe": recipe, "current": r.get("current"), "previous": r.get("previous"),
            "verified_against": against}


LIST_RECIPES = ("import os,sys,json; w=sys.argv[1]; print(json.dumps(sorted(d for d in os.listdir(w) "
                "if os.path.islink(os.path.join(w, d, 'current')))))")


def deployed_recipes(dev: RemoteRunner) -> list[str]:
    """Recipes deployed on the device (names that are not plain names are not ours: ignored)."""
    return recipes_answer(dev.name, dev.python_output(LIST_RECIPES, dev.workdir))


def recipes_answer(name: str, text: str) -> list[str]:
    """LIST_RECIPES' answer: a JSON list of names (those that are not plain names are not ours: ignored)."""
    try:
        found = check("recipes", loads(text.strip(), "the answer", MAX_ANSWER))
    except (DocumentError, AnswerError) as exc:
        raise malformed(name, "the list of deployed recipes", exc, "is the device's Python (python in "
                        "devices.toml) a working python3?") from None
    return [n for n in found if NAME_RE.fullmatch(n)]


def only_recipe(dev: RemoteRunner, name: str) -> str:
    found = deployed_recipes(dev)
    if not found:
        raise UserError(f"device {name} has no deployed model yet; deploy one first "
                        f"(edgeslm deploy RECIPE --device {name}) or give a build or recipe to profile")
    if len(found) != 1:
        raise UserError(f"device {name} has {len(found)} deployed recipes ({', '.join(found) or 'none'}); "
                        "name one with --recipe")
    return found[0]
