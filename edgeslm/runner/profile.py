"""`profile`: load an artifact, check it, time it, measure its memory."""

from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import time

from edgeslm.contract import NOISY_CV, PROFILE_SCHEMA, RUNNER_VERSION, artifact_size
from edgeslm.contract.stats import stats
from edgeslm.runner.encoders import evaluate, parity
from edgeslm.runner.errors import RunnerError
from edgeslm.runner.facts import _reset_hwm, _status_kb, cpu_model, emulation, runtimes, thermal
from edgeslm.runner.sessions import Session, import_runtime
from edgeslm.runner.store import _inside


def profile(build_dir: str, artifact_name: str, threads: int, warmup: int, iters: int,
            min_seconds: float, seq_len: int | None, eval_rows: int | None = None,
            et_runtime: str | None = None, new_tokens: int = 64) -> dict:
    """`eval_rows`: None = no task evaluation, 0 = the whole eval split, N = its first N texts."""
    import numpy as np

    if iters < 1 or warmup < 0 or threads < 0 or min_seconds < 0 or (seq_len is not None and seq_len < 1):
        raise RunnerError("--iters must be >= 1; --warmup, --threads and --min-seconds >= 0; --seq-len >= 1")

    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    threads = threads or os.cpu_count() or 1  # explicit, so the result states the threads really used
    with open(os.path.join(build_dir, "manifest.json")) as f:
        manifest = json.load(f)
    artifact = next((a for a in manifest["artifacts"] if a["name"] == artifact_name), None)
    if artifact is None:
        raise RunnerError(f"build has no artifact {artifact_name!r}: "
                          f"{', '.join(a['name'] for a in manifest['artifacts'])}")
    if manifest.get("task") == "text-generation":
        return _generation_result(build_dir, manifest, artifact, threads, warmup, iters, new_tokens, et_runtime,
                                  started)
    shapes = manifest["shapes"]
    seq = seq_len or shapes["max_seq_len"]
    if not shapes["min_seq_len"] <= seq <= shapes["max_seq_len"]:
        raise RunnerError(f"--seq-len {seq} is outside the model's [{shapes['min_seq_len']}, {shapes['max_seq_len']}]")
    thermal_before = thermal()
    rss_start = _status_kb("VmRSS")
    t0 = time.perf_counter()
    runtime_name, loader = import_runtime(artifact["format"], et_runtime)
    import_ms = (time.perf_counter() - t0) * 1e3
    gc.collect()
    rss_before = _status_kb("VmRSS")
    t0 = time.perf_counter()
    session = Session(loader, _inside(build_dir, artifact["file"]), threads,
                      artifact.get("export", {}).get("input_order") or [i["name"] for i in manifest["inputs"]])
    load_ms = (time.perf_counter() - t0) * 1e3
    rss_loaded = _status_kb("VmRSS")
    hwm_after_load = _status_kb("VmHWM")
    check = parity(session, build_dir, manifest, artifact)
    task = evaluate(session, build_dir, manifest, artifact, eval_rows or None) if eval_rows is not None else None

    # benchmark input: reference sample 0's tokens repeated to `seq` tokens, batch from the manifest
    ref = np.load(_inside(build_dir, manifest["reference"]["file"]), allow_pickle=False)
    batch = shapes.get("batch_size", 1)
    feeds = {}
    for spec in manifest["inputs"]:
        base = ref[f"input/0/{spec['name']}"][0]
        feeds[spec["name"]] = np.ascontiguousarray(np.tile(np.resize(base, seq)[None, :], (batch, 1)).astype(np.int64))
    feeds["attention_mask"][:] = 1
    reset = _reset_hwm()
    first = time.perf_counter()
    session(feeds)
    first_ms = (time.perf_counter() - first) * 1e3
    for _ in range(max(0, warmup - 1)):
        session(feeds)
    samples = []
    t_start = time.perf_counter()
    while len(samples) < iters or (time.perf_counter() - t_start) < min_seconds:
        t = time.perf_counter()
        session(feeds)
        samples.append((time.perf_counter() - t) * 1e3)
        if len(samples) >= 100000:
            break
    hwm_run = _status_kb("VmHWM")
    rss_after = _status_kb("VmRSS")
    thermal_after = thermal()
    lat = stats(samples)
    return {
        **_header(manifest, artifact, runtime_name, started, lat["cv"], check["passed"], thermal_before,
                  thermal_after),
        "settings": {"threads": threads,
                     "warmup": warmup, "iters": iters, "min_seconds": min_seconds,
                     "seq_len": seq, "batch_size": batch},
        "parity": check,
        "task": task,
        "runtime_import_ms": import_ms, "load_ms": load_ms, "first_run_ms": first_ms,
        "latency_ms": lat, "samples_ms": samples,
        "memory_kb": {"rss_at_start": rss_start, "runtime_import_increase": (rss_before or 0) - (rss_start or 0),
                      "rss_before_load": rss_before, "rss_after_load": rss_loaded,
                      "load_increase": (rss_loaded or 0) - (rss_before or 0),
                      "peak_rss": max(hwm_after_load or 0, hwm_run or 0),
                      "peak_during_runs": hwm_run if reset else None,
                      "run_increase": ((hwm_run or 0) - (rss_loaded or 0)) if reset else None,
                      "rss_after_runs": rss_after},
    }


def _generation_result(build_dir, manifest, artifact, threads, warmup, iters, new_tokens, et_runtime,
                       started) -> dict:
    from edgeslm.runner.generation import profile_generation

    if new_tokens < 2:
        raise RunnerError("--new-tokens must be >= 2")
    thermal_before = thermal()
    gen = profile_generation(build_dir, manifest, artifact, threads, warmup, iters, new_tokens, et_runtime)
    thermal_after = thermal()
    return {
        **_header(manifest, artifact, gen["runtime"], started, gen["decode"]["step_ms"]["cv"],
                  gen["check"]["passed"], thermal_before, thermal_after),
        "settings": gen["settings"],
        "parity": {"passed": gen["check"]["passed"], **gen["check"]},
        "generation": {k: gen[k] for k in ("ttft", "decode")},
        # a decoder's latency is the time per generated token (what reports and the gate compare)
        "latency_ms": gen["decode"]["step_ms"], "latency_unit": "ms per generated token",
        "load_ms": gen["load_ms"], "samples_ms": gen["samples_ms"], "memory_kb": gen["memory_kb"],
    }


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
        "schema": PROFILE_SCHEMA, "runner_version": RUNNER_VERSION, "started_at": started,
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
