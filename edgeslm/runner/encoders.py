"""The encoder tasks on the device (embedding, sequence-classification, fill-mask: one forward pass, one
output): parity with the stored reference, the task metric on the eval split, and the latency and memory
of one input at a chosen length."""

from __future__ import annotations

import gc
import time

from edgeslm.contract import reference
from edgeslm.contract.parity import compare_outputs, nearest_centroid, task_metric
from edgeslm.contract.stats import stats
from edgeslm.contract.tasks import TASKS
from edgeslm.runner.budget import load_between, load_sample
from edgeslm.runner.errors import RunnerError
from edgeslm.runner.facts import reset_hwm, status_kb
from edgeslm.runner.runtimes import open_runtime
from edgeslm.runner.store import inside


class Session:
    """A loaded artifact: call with a dict of numpy arrays, get the first output as an array."""

    def __init__(self, run):
        self._run = run

    def __call__(self, feeds: dict):
        import numpy as np

        return np.asarray(self._run(feeds))


def profile(job) -> dict:
    """Import the runtime, load the artifact, check it against the stored reference (and score the eval
    split when asked), then time `job.iters` runs of reference sample 0 repeated to the chosen length."""
    import numpy as np

    manifest, artifact, build_dir, budget = job.manifest, job.artifact, job.build_dir, job.budget
    shapes = manifest["shapes"]
    seq = job.seq_len or shapes["max_seq_len"]
    if not shapes["min_seq_len"] <= seq <= shapes["max_seq_len"]:
        raise RunnerError(f"--seq-len {seq} is outside the model's [{shapes['min_seq_len']}, {shapes['max_seq_len']}]")
    rss_start = status_kb("VmRSS")
    budget.tick("load", 0)
    t0 = time.perf_counter()
    runtime = open_runtime(artifact["format"], job.et_runtime)
    import_ms = (time.perf_counter() - t0) * 1e3
    gc.collect()
    rss_before = status_kb("VmRSS")
    t0 = time.perf_counter()
    session = Session(runtime.encoder(inside(build_dir, artifact["file"]), job.threads,
                                      artifact.get("export", {}).get("input_order")
                                      or [i["name"] for i in manifest["inputs"]]))
    load_ms = (time.perf_counter() - t0) * 1e3
    rss_loaded = status_kb("VmRSS")
    hwm_after_load = status_kb("VmHWM")
    budget.tick("parity", 0)
    check = parity(session, build_dir, manifest, artifact)
    if job.eval_rows is not None:
        budget.tick("eval", 0)
    task = evaluate(session, build_dir, manifest, artifact, job.eval_rows or None) if job.eval_rows is not None else None

    # benchmark input: reference sample 0's tokens repeated to `seq` tokens, batch from the manifest
    arrays = reference.load(inside(build_dir, manifest["reference"]["file"]))
    batch = shapes.get("batch_size", 1)
    feeds = {}
    for spec in manifest["inputs"]:
        base = arrays[reference.sample_input(0, spec["name"])][0]
        feeds[spec["name"]] = np.ascontiguousarray(np.tile(np.resize(base, seq)[None, :], (batch, 1)).astype(np.int64))
    feeds["attention_mask"][:] = 1
    reset = reset_hwm()
    budget.tick("warm-up", 0, job.warmup)
    load_before = load_sample()
    first = time.perf_counter()
    session(feeds)
    first_ms = (time.perf_counter() - first) * 1e3
    for i in range(max(0, job.warmup - 1)):
        if budget.over():
            break
        session(feeds)
        budget.tick("warm-up", i + 2, job.warmup)
    samples = []
    t_start = time.perf_counter()
    budget.tick("timed runs", 0, job.iters)
    while len(samples) < job.iters or (time.perf_counter() - t_start) < job.min_seconds:
        if samples and budget.over():  # at least one run, whatever the budget
            break
        t = time.perf_counter()
        session(feeds)
        samples.append((time.perf_counter() - t) * 1e3)
        budget.tick("timed runs", len(samples), job.iters)
        if len(samples) >= 100000:
            break
    load = load_between(load_before, load_sample())
    hwm_run = status_kb("VmHWM")
    rss_after = status_kb("VmRSS")
    return {
        "runtime": runtime.name,
        "settings": {"threads": job.threads, "warmup": job.warmup, "iters": job.iters,
                     "min_seconds": job.min_seconds, "max_seconds": budget.max_seconds, "seq_len": seq,
                     "batch_size": batch},
        "parity": check,
        "task": task,
        "runtime_import_ms": import_ms, "load_ms": load_ms, "first_run_ms": first_ms,
        "latency_ms": stats(samples), "samples_ms": samples, "load": load,
        "partial": budget.partial(len(samples), job.iters),
        "memory_kb": {"rss_at_start": rss_start, "runtime_import_increase": (rss_before or 0) - (rss_start or 0),
                      "rss_before_load": rss_before, "rss_after_load": rss_loaded,
                      "load_increase": (rss_loaded or 0) - (rss_before or 0),
                      "peak_rss": max(hwm_after_load or 0, hwm_run or 0),
                      "peak_during_runs": hwm_run if reset else None,
                      "run_increase": ((hwm_run or 0) - (rss_loaded or 0)) if reset else None,
                      "rss_after_runs": rss_after},
    }


def parity(session: Session, build_dir: str, manifest: dict, artifact: dict) -> dict:
    """Run the stored reference inputs here and compare with eager PyTorch (the same maths and
    thresholds as the build host) and with the build host's own run of this artifact."""
    import numpy as np

    arrays = reference.load(inside(build_dir, manifest["reference"]["file"]))
    out_name = manifest["outputs"][0]["name"]
    limits = manifest["reference"].get("thresholds", {})
    refs, outs, masks, host_err = [], [], [], 0.0
    for i in range(manifest["reference"]["samples"]):
        feeds = {spec["name"]: arrays[reference.sample_input(i, spec["name"])] for spec in manifest["inputs"]}
        out = session(feeds)
        host = arrays[reference.host_output(artifact["name"], i, out_name)]
        if out.shape == host.shape:
            host_err = max(host_err, float(np.max(np.abs(out.astype(np.float64) - host))))
        refs.append(arrays[reference.eager_output(i, out_name)])
        outs.append(out)
        masks.append(feeds["attention_mask"])
    result = compare_outputs(manifest["task"], refs, outs, masks, limits)
    result["metrics"].append({"name": "max_abs_diff_vs_build_host", "value": host_err, "threshold": None,
                              "kind": "info", "passed": None})
    return {"passed": result["passed"], "samples": len(refs), "rows": result["rows"],
            "against": ("build-host-run" if manifest["reference"].get("imported") else "eager-pytorch-fp32"),
            "metrics": result["metrics"]}


def evaluate(session: Session, build_dir: str, manifest: dict, artifact: dict, limit: int | None) -> dict:
    """The task metric measured here: the build's tokenized eval split through this artifact, scored
    with the same maths as on the build host; with the latency of each batch at its real length."""
    import numpy as np

    spec = manifest["reference"].get("eval")
    if not spec:
        raise RunnerError("this build carries no eval set: add [eval] (with on_device = true) to the recipe")
    arrays = reference.load(inside(build_dir, manifest["reference"]["file"]))
    rows = int(spec["rows"]) if not limit else min(int(limit), int(spec["rows"]))
    outs, times, lengths, done = [], [], [], 0
    for i in range(int(spec["batches"])):
        feeds = {s["name"]: arrays[reference.eval_input(i, s["name"])] for s in manifest["inputs"]}
        t = time.perf_counter()
        out = session(feeds)
        times.append((time.perf_counter() - t) * 1e3)
        outs.append(np.asarray(out, dtype=np.float64))
        lengths += [int(x) for x in feeds["attention_mask"].sum(-1)]
        done += out.shape[0]
        if done >= rows:
            break
    out = np.concatenate(outs)[:rows]
    if TASKS[manifest["task"]].head == "embedding":  # scored by the nearest class centroid
        pred = nearest_centroid(out, arrays[reference.eval_centroids(artifact["name"])])
    else:
        pred = out.argmax(-1)
    result = task_metric(spec["metric"], pred, arrays[reference.EVAL_TARGETS][:rows], int(spec["classes"]))
    host = (artifact.get("task_metric") or {}).get("value")
    result.update({"rows": rows, "of": int(spec["rows"]), "host_value": host if rows == int(spec["rows"]) else None,
                   "latency_ms": stats(times), "batch": int(manifest["shapes"].get("batch_size", 1)),
                   "tokens": {"median": float(np.median(lengths)), "max": int(max(lengths))}})
    return result
