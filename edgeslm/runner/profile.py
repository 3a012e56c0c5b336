"""`profile`: load an artifact, check it, time it, measure its memory (the work is the task unit's)."""

from __future__ import annotations

import datetime
import json
import os
import platform

from edgeslm.contract import NOISY_CV, RUNNER_VERSION, artifact_size
from edgeslm.contract.results import ProfileResult, ResultError
from edgeslm.runner.budget import Budget, busy, default_max_seconds
from edgeslm.runner.errors import RunnerError
from edgeslm.runner.facts import cpu_model, emulation, runtimes, thermal
from edgeslm.runner.tasks import Job, task_unit


def profile(build_dir: str, artifact_name: str, threads: int, warmup: int, iters: int,
            min_seconds: float, seq_len: int | None, eval_rows: int | None = None,
            et_runtime: str | None = None, new_tokens: int = 64, prompt_lengths: tuple | None = None,
            max_seconds: float | None = None) -> dict:
    """The artifact's task unit checks and times it; this adds what every result carries (header,
    thermal state before and after, flags). `eval_rows`: None = no task evaluation, 0 = the whole eval
    split, N = its first N texts. `max_seconds`: the time budget (None: EMULATED_MAX_SECONDS on an emulated
    device, else none; 0: none); the timed runs end when it is spent, or when the host sends "stop", and
    the result is marked partial."""
    if iters < 1 or warmup < 0 or threads < 0 or min_seconds < 0 or (seq_len is not None and seq_len < 1) \
            or (max_seconds is not None and not 0 <= max_seconds < float("inf")):
        raise RunnerError("--iters must be >= 1; --warmup, --threads, --min-seconds and --max-seconds >= 0; "
                          "--seq-len >= 1")
    budget = Budget(default_max_seconds(max_seconds, bool(emulation())))

    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    threads = threads or os.cpu_count() or 1  # explicit, so the result states the threads really used
    with open(os.path.join(build_dir, "manifest.json")) as f:
        manifest = json.load(f)
    artifact = next((a for a in manifest["artifacts"] if a["name"] == artifact_name), None)
    if artifact is None:
        raise RunnerError(f"build has no artifact {artifact_name!r}: "
                          f"{', '.join(a['name'] for a in manifest['artifacts'])}")
    unit = task_unit(manifest.get("task"))
    job = Job(build_dir, manifest, artifact, threads, warmup, iters, min_seconds, seq_len, eval_rows, et_runtime,
              new_tokens, prompt_lengths, budget)
    thermal_before = thermal()
    body = unit.profile(job)
    thermal_after = thermal()
    runtime = body.pop("runtime")
    header = _header(manifest, artifact, runtime, started, body["latency_ms"]["cv"], body["parity"]["passed"],
                     thermal_before, thermal_after)
    if body.get("partial"):
        header["flags"].append("partial")
    if body.get("load") and busy(body["load"]):
        header["flags"].append("busy")
    try:  # the host reads it back as this record: a result it would refuse is refused here, with why
        return ProfileResult.from_dict({"schema": ProfileResult.SCHEMA, **header, **body}).to_dict()
    except ResultError as exc:
        raise RunnerError(f"the profile result of {artifact_name} is malformed ({exc})") from None


def _header(manifest, artifact, runtime_name, started, cv, parity_passed, thermal_before, thermal_after) -> dict:
    """What every profile result carries: schema, build, artifact, thermal, device and flags."""
    flags = []
    if cv > NOISY_CV:
        flags.append("noisy")
    if any((t.get("throttled") or {}).get("throttled_now") or (t.get("throttled") or {}).get("freq_capped")
           for t in (thermal_before, thermal_after)):
        flags.append("throttled")
    if emulation():
        flags.append("emulated")
    if not parity_passed:
        flags.append("parity-failed")
    return {
        "runner_version": RUNNER_VERSION, "started_at": started,
        "build": {"recipe": manifest["recipe"]["name"], "target": manifest["target"]["name"],
                  "cache_key": manifest["cache_key"], "task": manifest["task"]},
        "artifact": {"name": artifact["name"], "format": artifact["format"], "file": artifact["file"],
                     "precision": artifact["precision"], "runtime": runtime_name,
                     "size": artifact_size(manifest["files"], artifact["file"])},
        "thermal": {"before": thermal_before, "after": thermal_after},
        "device": {"arch": platform.machine(), "cpu_model": cpu_model(), "cores": os.cpu_count(),
                   "kernel": platform.release(), "python": platform.python_version(),
                   "runtimes": runtimes(), "emulated": emulation()},
        "flags": flags,
    }
