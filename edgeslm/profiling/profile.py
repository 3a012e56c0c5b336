"""Profile what is deployed on a device: the runner checks parity, then measures; results come home.

The version profiled is pinned on the device for the whole run (a deploy meanwhile does not delete it)
and labels the results. Before measuring, the device's files are hashed there and judged against the
host's build of that version when this machine has it, else against the device's own manifest.
Where results land here is decided only by host-side names (recipe, target, device), each checked.
A result comes home under a temporary name that reports never read (it does not end in .json), no larger
than `inputs.LIMITS["result"]` (its size is checked on the device before it is downloaded); only once it
parses (size and depth caps) and is a ProfileResult is the checked result written into place. A result
that cannot be read is never stored.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import posixpath
import uuid
from dataclasses import dataclass
from pathlib import Path

from edgeslm.artifacts.manifest import Manifest, parse_manifest
from edgeslm.config.devices import Device
from edgeslm.errors import ConfigError, UserError
from edgeslm.profiling.deploy import (HostBuild, device_version, differences, find_host_build,
                                      needs_et_runtime, only_recipe, open_device)
from edgeslm.profiling.remote import check_name, ends_with_host, malformed
from edgeslm.contract.documents import DocumentError, loads
from edgeslm.config.devices import LOCAL
from edgeslm.contract.results import Load, ProfileResult, ResultError
from edgeslm.contract.stats import duration
from edgeslm.runner.budget import PROGRESS, load_between, load_sample
from edgeslm.transport.base import Listen
from edgeslm.inputs import LIMITS
from edgeslm.tasks import task_unit
from edgeslm.transport import DeviceError

RESULT_DIR = "profiles"


def check_settings(iters: int | None, warmup: int | None, threads: int, min_seconds: float,
                   seq_len: int | None) -> None:
    if iters is not None and iters < 1:
        raise UserError(f"--iters must be at least 1 (got {iters})")
    if (warmup or 0) < 0 or threads < 0 or min_seconds < 0:
        raise UserError("--warmup, --threads and --min-seconds cannot be negative")
    if seq_len is not None and seq_len < 1:
        raise UserError(f"--seq-len must be at least 1 (got {seq_len})")


def check_request(manifest: Manifest, artifacts, seq_len: int | None, where: str,
                  prompt_lengths: tuple | None = None, new_tokens: int = 64) -> list[str]:
    """The artifacts to profile (default: all), the sequence length and (decoders) the prompt lengths, checked
    against a build."""
    have = [a.name for a in manifest.artifacts]
    for a in artifacts:
        if a not in have:
            raise UserError(f"{where} has no artifact {a!r}; it has: {', '.join(have)}")
    lo, hi = manifest.shapes.get("min_seq_len"), manifest.shapes.get("max_seq_len")
    if seq_len is not None and isinstance(lo, int) and isinstance(hi, int) and not lo <= seq_len <= hi:
        raise UserError(f"--seq-len {seq_len} is outside {where}'s range [{lo}, {hi}]")
    if prompt_lengths:
        context = manifest.shapes.get("max_context")
        if not task_unit(manifest.task).generates or not isinstance(context, int):
            raise UserError(f"--prompt-lengths applies to text-generation builds; {where} is {manifest.task}")
        too_long = [n for n in prompt_lengths if n + new_tokens > context]
        if too_long:
            raise UserError(f"--prompt-lengths {','.join(map(str, too_long))}: with --new-tokens {new_tokens} that "
                            f"does not fit {where}'s KV cache ({context} positions); give shorter prompts or "
                            "fewer new tokens")
    return list(artifacts) or have


def store_for(out: Path, recipe: str, manifest: Manifest) -> Path:
    """Results live beside the build they measure: <out>/<recipe>/<target>/profiles when that local
    build is the deployed version, else <out>/profiles/<recipe>."""
    folder = out / check_name(recipe) / check_name(manifest.target["name"], "target")
    try:
        local = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        local = {}
    if isinstance(local, dict) and local.get("cache_key") == manifest.cache_key:
        return folder / RESULT_DIR
    return out / RESULT_DIR / recipe


def profile(name: str, device: Device, out: Path, recipe: str | None = None, artifacts=(),
            threads: int | list = 0, iters: int | None = None, warmup: int | None = None, min_seconds: float = 0.0,
            seq_len: int | None = None, accept_new_host_key: bool = False, log=print,
            build: Path | None = None, eval_rows: int | None = None, new_tokens: int = 64,
            prompt_lengths: tuple | None = None, max_seconds: float | None = None) -> list[Measured]:
    """Profile each artifact of the deployed `recipe` (default: the only one) on its active version, at each
    thread count of `threads` (a list profiles the grid, as llama-bench's -t; 0 = all cores). `build`: the
    host's build folder of that version, when the caller knows it. `eval_rows`: also score the eval split on
    the device (0 = all of it, N = the first N texts; None = not). `iters`, `warmup`: None takes the task's own
    (encoders 100 and 10; decoders 5 prompts per length and 1). `prompt_lengths` (decoders): the prompt lengths
    timed (default: 32, 128, 512 where they fit). `max_seconds`: each artifact's time budget on the device
    (None: the runner's default, 600 s on an emulated device and none elsewhere; 0: none); what was measured
    when it is spent, or at the first Ctrl-C, is kept and marked partial."""
    grid = list(threads) if isinstance(threads, (list, tuple)) else [threads]
    for t in grid:
        check_settings(iters, warmup, t, min_seconds, seq_len)
    for a in artifacts:
        check_name(a, "artifact")
    given = HostBuild.load(build) if build else None
    if given and recipe is None:
        recipe = given.manifest.recipe.name
    results = []
    with open_device(name, device, accept_new_host_key) as dev:
        recipe = check_name(recipe) if recipe else only_recipe(dev, name)
        with dev.pinned(recipe) as pinned:
            version = device_version(name, pinned)
            host = given if given and given.manifest.version == version else find_host_build(out, recipe, version, device.target)
            vdir = posixpath.join(dev.model_dir(recipe), "versions", version)
            ok = dev.call("verify", vdir, *(["--manifest-sha256", host.manifest_sha256] if host else []))
            against = "host build" if host else "device manifest"
            if not ok["ok"]:
                bad = differences(ok, host)
                judged = f"the host's build {host.folder}" if host else "its own manifest"
                raise DeviceError(f"device {name}: deployed {recipe} version {version} does not match {judged} "
                                  f"({bad}); deploy it again")
            if host:
                manifest = host.manifest
            else:
                log(f"no build of {recipe} {version} on this machine: {name}'s files were checked against "
                    "the device's own manifest only")
                manifest = _device_manifest(dev, name, recipe, version, vdir, out)
            names = check_request(manifest, artifacts, seq_len, f"{recipe} {version} on {name}", prompt_lengths,
                                  new_tokens)
            store = store_for(out, recipe, manifest)
            stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            for t, art in ((t, art) for t in grid for art in names):
                label = {"recipe": recipe, "target": manifest.target["name"], "cache_key": manifest.cache_key,
                         "version": version, "verified_against": against}
                unit = task_unit(manifest.task)
                extra = unit.profile_args(new_tokens, prompt_lengths)
                n, w = (x if x is not None else d for x, d in zip((iters, warmup), unit.repeats))
                if needs_et_runtime(manifest, art):
                    extra += ["--et-runtime", dev.et_runtime(dev.arch(), log=log)]
                log(f"profiling {recipe}/{art} ({version}) on {name}" + (f", {t or 'all'} threads" if len(grid) > 1 else ""))
                name_part = art if len(grid) == 1 else f"{art}-t{t}"
                if max_seconds is not None:
                    extra += ["--max-seconds", f"{max_seconds:g}"]
                if results and results[-1].stopped:
                    log(f"not profiled after Ctrl-C: {art}" + (f" at {t or 'all'} threads" if len(grid) > 1 else ""))
                    continue
                results.append(_run(dev, name, device, vdir, art, stamp, store, label,
                                    t, n, w, min_seconds, seq_len, eval_rows, extra, name_part, log))
    return results


def _device_manifest(dev, name: str, recipe: str, version: str, vdir: str, out: Path) -> Manifest:
    """The device's own manifest of the pinned version, checked like a build folder's."""
    local = out / f".{name}-manifest.part-{uuid.uuid4().hex[:12]}"  # not *.json: reports never read it
    try:
        dev.get(posixpath.join(vdir, "manifest.json"), local, limit=LIMITS["manifest"])
        text = local.read_bytes().decode("utf-8", errors="replace")
    finally:
        local.unlink(missing_ok=True)
    try:
        manifest = parse_manifest(text, f"{recipe}/versions/{version}/manifest.json")
    except ConfigError as exc:
        raise DeviceError(f"device {name}: {exc}; deploy the build again") from None
    if manifest.recipe.name != recipe or manifest.version != version:
        raise DeviceError(f"device {name}: {recipe}/versions/{version}/manifest.json describes "
                          f"{manifest.recipe.name} {manifest.version}; deploy the build again")
    return manifest


@dataclass
class Measured:
    """A profile result as stored on this host (`path`), typed."""
    result: ProfileResult
    path: Path
    stopped: bool = False  # the user pressed Ctrl-C while it was measured: the artifacts after it are not


def _run(dev, name, device, vdir, art, stamp, store, label, threads, iters, warmup, min_seconds, seq_len,
         eval_rows=None, extra=(), file_part: str | None = None, log=print) -> Measured:
    remote = posixpath.join(dev.model_dir(label["recipe"]), "results", f"{stamp}-{file_part or art}.json")
    args = ["profile", vdir, "--artifact", art, "--threads", str(threads), "--iters", str(iters),
            "--warmup", str(warmup), "--min-seconds", str(min_seconds), "--out", remote, "--workdir", dev.workdir]
    if seq_len:
        args += ["--seq-len", str(seq_len)]
    if eval_rows is not None:
        args += ["--eval", str(int(eval_rows))]
    args += [*extra, *ends_with_host(device.profile_timeout)]
    host_before = load_sample()
    listen = progress_listener(f"{art} on {name}", log)
    answer = dev.call(*args, timeout=device.profile_timeout, listen=listen)
    if answer["written"] != remote:
        raise malformed(name, "profile", f"written names {answer['written'][:120]!r}, not {remote}")
    local = store / name / f"{stamp}-{file_part or art}.json"
    result = fetch_result(dev, name, remote, local)
    if result.partial:
        log(f"partial result of {art} on {name}: {result.partial.reason} after {result.partial.runs} of "
            f"{result.partial.planned_runs} timed runs (kept, flagged 'partial')")
    result.device.name, result.device.target = name, device.target
    if name != LOCAL:  # the host is another machine (an emulated device runs here: its load is the device's)
        result.host_load = Load.read(load_between(host_before, load_sample()), "host_load.")
    for key, value in label.items():  # what was pinned and verified, not what the device says
        setattr(result.build, key, value)
    _write(local, json.dumps(result.to_dict(), indent=1))
    return Measured(result, local, stopped=listen.interrupted)


def progress_line(label: str, data: dict) -> str | None:
    """A runner progress line (runner.budget.Budget.tick) as the terminal shows it; None if it is not one."""
    try:
        phase, done, of = str(data["phase"])[:60], data["done"], data.get("of")
        elapsed, eta, budget = float(data["elapsed_s"]), data.get("eta_s"), data.get("budget_s")
        count = f" {int(done)}/{int(of)}" if of else ""
        left = f", about {duration(float(eta))} left" if eta is not None and of else ""
        cap = f" (budget {duration(float(budget))})" if budget else ""
    except (KeyError, TypeError, ValueError):
        return None
    return f"{label}: {phase}{count}, {duration(elapsed)}{left}{cap}"


def progress_listener(label: str, log) -> Listen:
    """What `profile` shows while a device measures: its progress lines, and on the first Ctrl-C it asks the
    device to stop measuring and keep what it has (a second Ctrl-C ends at once, keeping nothing)."""
    def on_line(text: str) -> None:
        try:
            data = json.loads(text)
        except ValueError:
            return
        line = progress_line(label, data) if isinstance(data, dict) else None
        if line:
            log(line)

    return Listen(PROGRESS, on_line, interrupt=b"stop\n",
                  on_interrupt=lambda: log(f"{label}: stopping; the runs measured so far are kept as a partial "
                                           "result (Ctrl-C again to end now, keeping nothing)"))


def fetch_result(dev, name: str, remote: str, local: Path) -> ProfileResult:
    """The profile result at `remote` on the device, checked: downloaded beside `local` under a temporary name
    that reports never read (refused before downloading when larger than the limit), parsed with the size
    and depth caps and read as a ProfileResult. Whatever fails, the temporary file is removed and nothing
    is stored; the caller writes the checked result into place."""
    tmp = local.with_name(f".{local.name}.part-{uuid.uuid4().hex[:12]}")
    try:
        dev.get(remote, tmp, limit=LIMITS["result"])
        return read_result(name, tmp.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)


def read_result(name: str, data: bytes) -> ProfileResult:
    """A profile result's bytes as the typed record, or one DeviceError naming what is wrong."""
    try:
        return ProfileResult.from_dict(loads(data, "the result", LIMITS["result"]))
    except (DocumentError, ResultError) as exc:
        raise DeviceError(f"device {name}: the runner's profile result is malformed ({str(exc)[:160]}); "
                          "is the device's runner intact? (nothing was stored)") from None


def _write(path: Path, text: str) -> None:
    """Write a file whole or not at all (a temporary name reports never read, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
