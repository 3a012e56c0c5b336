"""The encoder tasks on the device: parity with the stored reference and the task metric on the eval split."""

from __future__ import annotations

import time

from edgeslm.contract.parity import compare_outputs, nearest_centroid, task_metric
from edgeslm.contract.stats import stats
from edgeslm.runner.errors import RunnerError
from edgeslm.runner.sessions import Session
from edgeslm.runner.store import _inside


def parity(session: Session, build_dir: str, manifest: dict, artifact: dict) -> dict:
    """Run the stored reference inputs here and compare with eager PyTorch (the same maths and
    thresholds as the build host) and with the build host's own run of this artifact."""
    import numpy as np

    ref = np.load(_inside(build_dir, manifest["reference"]["file"]), allow_pickle=False)
    out_name = manifest["outputs"][0]["name"]
    limits = manifest["reference"].get("thresholds", {})
    refs, outs, masks, host_err = [], [], [], 0.0
    for i in range(manifest["reference"]["samples"]):
        feeds = {spec["name"]: ref[f"input/{i}/{spec['name']}"] for spec in manifest["inputs"]}
        out = session(feeds)
        host = ref[f"host/{artifact['name']}/{i}/{out_name}"]
        if out.shape == host.shape:
            host_err = max(host_err, float(np.max(np.abs(out.astype(np.float64) - host))))
        refs.append(ref[f"output/{i}/{out_name}"])
        outs.append(out)
        masks.append(feeds["attention_mask"])
    result = compare_outputs(manifest["task"], refs, outs, masks, limits)
    result["metrics"].append({"name": "max_abs_diff_vs_build_host", "value": host_err, "threshold": None,
                              "kind": "info", "passed": None})
    return {"passed": result["passed"], "samples": len(refs), "rows": result["rows"],
            "against": "eager-pytorch-fp32", "metrics": result["metrics"]}


def evaluate(session: Session, build_dir: str, manifest: dict, artifact: dict, limit: int | None) -> dict:
    """The task metric measured here: the build's tokenized eval split through this artifact, scored
    with the same maths as on the build host; with the latency of each batch at its real length."""
    import numpy as np

    spec = manifest["reference"].get("eval")
    if not spec:
        raise RunnerError("this build carries no eval set: add [eval] (with on_device = true) to the recipe")
    ref = np.load(_inside(build_dir, manifest["reference"]["file"]), allow_pickle=False)
    rows = int(spec["rows"]) if not limit else min(int(limit), int(spec["rows"]))
    outs, times, lengths, done = [], [], [], 0
    for i in range(int(spec["batches"])):
        feeds = {s["name"]: ref[f"eval/{i}/{s['name']}"] for s in manifest["inputs"]}
        t = time.perf_counter()
        out = session(feeds)
        times.append((time.perf_counter() - t) * 1e3)
        outs.append(np.asarray(out, dtype=np.float64))
        lengths += [int(x) for x in feeds["attention_mask"].sum(-1)]
        done += out.shape[0]
        if done >= rows:
            break
    out = np.concatenate(outs)[:rows]
    if manifest["task"] == "embedding":
        pred = nearest_centroid(out, ref[f"eval/centroids/{artifact['name']}"])
    else:
        pred = out.argmax(-1)
    result = task_metric(spec["metric"], pred, ref["eval/targets"][:rows], int(spec["classes"]))
    host = (artifact.get("task_metric") or {}).get("value")
    result.update({"rows": rows, "of": int(spec["rows"]), "host_value": host if rows == int(spec["rows"]) else None,
                   "latency_ms": stats(times), "batch": int(manifest["shapes"].get("batch_size", 1)),
                   "tokens": {"median": float(np.median(lengths)), "max": int(max(lengths))}})
    return result
