#!/usr/bin/env python3
"""edgeslm device runner: probe a device, manage deployed versions, check and profile a model there.

Runs on the device with Python >= 3.9, the standard library, numpy, and one runtime: onnxruntime for
.onnx; for .pte `executorch.runtime` when installed, else the torch-free `executorch_numpy_runtime`.
It never imports torch itself and nothing from edgeslm: this file is copied to the device as is.

    python3 device_runner.py probe [--workdir DIR]
    python3 device_runner.py hash FILE...
    python3 device_runner.py verify DIR                     (sha256 of every file in DIR/manifest.json)
    python3 device_runner.py stage MODEL_DIR VERSION        (reuse files the device has; list the rest)
    python3 device_runner.py commit MODEL_DIR VERSION       (verify staged files, move into versions/)
    python3 device_runner.py activate MODEL_DIR VERSION     (atomic switch of MODEL_DIR/current)
    python3 device_runner.py rollback MODEL_DIR
    python3 device_runner.py hold-lock DIR                  (exclusive deploy lock while stdin is open)
    python3 device_runner.py profile BUILD_DIR --artifact NAME [--threads N --warmup N --iters N
                                     --min-seconds S --seq-len L] --out RESULT.json

Every command prints one JSON object on stdout; failures exit 1 with {"error": "..."}.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import json
import os
import platform
import shutil
import sys
import time

RUNNER_VERSION = "1"
PROFILE_SCHEMA = "edgeslm.profile/1"
PROBE_SCHEMA = "edgeslm.probe/1"
NOISY_CV = 0.10  # coefficient of variation above which a latency run is flagged noisy


class RunnerError(Exception):
    pass


# ---------------------------------------------------------------------------------------- probe
def _read(path: str, default: str = "") -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def _meminfo() -> dict:
    out = {}
    for line in _read("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0])
    return out


def cpu_model() -> str:
    text = _read("/proc/cpuinfo")
    for key in ("model name", "Model", "Hardware", "CPU part"):
        for line in text.splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_features() -> list:
    for line in _read("/proc/cpuinfo").splitlines():
        key = line.split(":", 1)[0].strip()
        if key in ("flags", "Features"):
            return sorted(set(line.split(":", 1)[1].split()))
    return []


def thermal() -> dict:
    """CPU temperature (C), frequency (kHz), governor, and Raspberry Pi throttling flags."""
    temps = {}
    base = "/sys/class/thermal"
    if os.path.isdir(base):
        for zone in sorted(os.listdir(base)):
            t = _read(os.path.join(base, zone, "temp"))
            if t.lstrip("-").isdigit():
                temps[_read(os.path.join(base, zone, "type"), zone)] = int(t) / 1000.0
    cpufreq = "/sys/devices/system/cpu/cpu0/cpufreq"
    freq = _read(os.path.join(cpufreq, "scaling_cur_freq"))
    out = {"temperatures_c": temps, "freq_khz": int(freq) if freq.isdigit() else None,
           "governor": _read(os.path.join(cpufreq, "scaling_governor")) or None, "throttled": None}
    vcgencmd = shutil.which("vcgencmd")
    if vcgencmd:
        import subprocess

        try:
            r = subprocess.run([vcgencmd, "get_throttled"], capture_output=True, text=True, timeout=5)
            value = int(r.stdout.strip().split("=")[-1], 16)
            out["throttled"] = {"raw": hex(value), "under_voltage": bool(value & 0x1),
                                "freq_capped": bool(value & 0x2), "throttled_now": bool(value & 0x4),
                                "soft_temp_limit": bool(value & 0x8), "throttled_since_boot": bool(value & 0x40000)}
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    return out


def runtimes() -> dict:
    """Which runtimes import here, without importing torch unless executorch.runtime is present."""
    import importlib.util

    out = {"numpy": None, "onnxruntime": None, "executorch": None, "psutil": None}
    for name in ("numpy", "onnxruntime", "psutil"):
        if importlib.util.find_spec(name) is not None:
            out[name] = _dist_version(name) or "installed"
    if _has_module("executorch.runtime"):
        out["executorch"] = "executorch.runtime " + (_dist_version("executorch") or "?")
    elif importlib.util.find_spec("executorch_numpy_runtime") is not None:
        out["executorch"] = "executorch-numpy-runtime " + (_dist_version("executorch-numpy-runtime") or "?")
    return out


def _has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _dist_version(name: str):
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8
        return None
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def emulation() -> str | None:
    return os.environ.get("EDGESLM_EMULATED") or None


def probe(workdir: str | None) -> dict:
    mem = _meminfo()
    disk = None
    if workdir:
        path = os.path.expanduser(workdir)
        probe_dir = path
        while not os.path.exists(probe_dir) and os.path.dirname(probe_dir) != probe_dir:
            probe_dir = os.path.dirname(probe_dir)
        st = os.statvfs(probe_dir)
        disk = {"path": path, "free_bytes": st.f_bavail * st.f_frsize, "total_bytes": st.f_blocks * st.f_frsize}
    osr = dict(line.split("=", 1) for line in _read("/etc/os-release").splitlines() if "=" in line)
    return {
        "schema": PROBE_SCHEMA, "runner_version": RUNNER_VERSION,
        "arch": platform.machine(), "cpu_model": cpu_model(), "cores": os.cpu_count(),
        "features": cpu_features(), "kernel": platform.release(),
        "os": osr.get("PRETTY_NAME", "").strip('"') or platform.system(),
        "python": platform.python_version(), "python_executable": sys.executable,
        "mem_total_kb": mem.get("MemTotal"), "mem_available_kb": mem.get("MemAvailable"),
        "disk": disk, "runtimes": runtimes(), "thermal": thermal(), "emulated": emulation(),
    }


# --------------------------------------------------------------------------------- files, versions
def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hash_files(paths: list) -> dict:
    return {p: (sha256(p) if os.path.isfile(p) else None) for p in paths}


def verify_dir(folder: str) -> dict:
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    bad = []
    for entry in manifest["files"]:
        p = os.path.join(folder, entry["path"])
        if not os.path.isfile(p):
            bad.append({"path": entry["path"], "problem": "missing"})
        elif os.path.getsize(p) != entry["size"] or sha256(p) != entry["sha256"]:
            bad.append({"path": entry["path"], "problem": "checksum mismatch"})
    return {"ok": not bad, "files": len(manifest["files"]), "bad": bad}


def stage(model_dir: str, version: str) -> dict:
    """Prepare .staging-VERSION (which already holds manifest.json): reuse files the device has with
    the same sha256 (from current or previous, hard-linked or copied) and list what must be sent."""
    staging = os.path.join(model_dir, f".staging-{version}")
    with open(os.path.join(staging, "manifest.json")) as f:
        manifest = json.load(f)
    known = {}
    for link in ("current", "previous"):
        folder = os.path.join(model_dir, link)
        try:
            with open(os.path.join(folder, "manifest.json")) as f:
                old = json.load(f)
        except (OSError, ValueError):
            continue
        for e in old.get("files", []):
            known.setdefault(e["sha256"], os.path.join(folder, e["path"]))
    need, reused, reused_bytes = [], 0, 0
    for e in manifest["files"]:
        dst = os.path.join(staging, e["path"])
        if os.path.isfile(dst) and os.path.getsize(dst) == e["size"] and sha256(dst) == e["sha256"]:
            reused += 1
            continue
        src = known.get(e["sha256"])
        if src and os.path.isfile(src) and sha256(src) == e["sha256"]:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
            reused += 1
            reused_bytes += e["size"]
            continue
        need.append(e["path"])
    os.makedirs(staging, exist_ok=True)
    st = os.statvfs(staging)
    return {"need": need, "reused": reused, "reused_bytes": reused_bytes,
            "free_bytes": st.f_bavail * st.f_frsize}


def commit(model_dir: str, version: str) -> dict:
    """Verify every file of the staged version, then move it into versions/ (an atomic rename)."""
    staging = os.path.join(model_dir, f".staging-{version}")
    check = verify_dir(staging)
    if not check["ok"]:
        bad = ", ".join(f"{b['path']} ({b['problem']})" for b in check["bad"][:3])
        raise RunnerError(f"staged files failed verification: {bad}")
    versions = os.path.join(model_dir, "versions")
    os.makedirs(versions, exist_ok=True)
    final = os.path.join(versions, version)
    if os.path.isdir(final):
        shutil.rmtree(final)
    os.rename(staging, final)
    return {"committed": final, "files": check["files"]}


def _switch(link: str, target: str) -> None:
    tmp = f"{link}.tmp-{os.getpid()}"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)  # atomic on POSIX: readers see the old or the new version, never neither


def activate(model_dir: str, version: str) -> dict:
    """current -> versions/VERSION; the old current becomes previous."""
    target = os.path.join("versions", version)
    if not os.path.isfile(os.path.join(model_dir, target, "manifest.json")):
        raise RunnerError(f"no complete version {version} in {model_dir}")
    current = os.path.join(model_dir, "current")
    old = os.readlink(current) if os.path.islink(current) else None
    if old and old != target:
        _switch(os.path.join(model_dir, "previous"), old)
    _switch(current, target)
    _prune(model_dir, keep={target, old})
    return {"current": target, "previous": old if old != target else _link(model_dir, "previous")}


def _link(model_dir: str, name: str):
    p = os.path.join(model_dir, name)
    return os.readlink(p) if os.path.islink(p) else None


def _prune(model_dir: str, keep: set) -> None:
    """Keep current and previous; remove older versions and stale staging folders."""
    keep = {k for k in keep if k} | {_link(model_dir, "previous"), _link(model_dir, "current")}
    versions = os.path.join(model_dir, "versions")
    for name in os.listdir(versions) if os.path.isdir(versions) else []:
        if os.path.join("versions", name) not in keep:
            shutil.rmtree(os.path.join(versions, name), ignore_errors=True)


def rollback(model_dir: str) -> dict:
    previous = _link(model_dir, "previous")
    if not previous or not os.path.isdir(os.path.join(model_dir, previous)):
        raise RunnerError(f"nothing to roll back to in {model_dir}: no previous version")
    current = _link(model_dir, "current")
    _switch(os.path.join(model_dir, "current"), previous)
    if current:
        _switch(os.path.join(model_dir, "previous"), current)
    return {"current": previous, "previous": current}


def hold_lock(folder: str) -> int:
    """Hold an exclusive flock on FOLDER/.deploy.lock until stdin closes (the deploying host's session
    ends, cleanly or because the link dropped); the kernel then releases it, so no stale locks."""
    import fcntl

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, ".deploy.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        owner = _read(path, "unknown owner")
        print(json.dumps({"error": f"another deploy is in progress on this device ({owner})"}), flush=True)
        return 1
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} since {datetime.datetime.now().isoformat(timespec='seconds')}".encode())
    print(json.dumps({"locked": path}), flush=True)
    try:
        sys.stdin.read()
    except (OSError, KeyboardInterrupt):
        pass
    return 0


# ------------------------------------------------------------------------------------- profiling
def _status_kb(key: str) -> int | None:
    for line in _read("/proc/self/status").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def _reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0) so the peak covers only what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def import_runtime(fmt: str):
    """Import the runtime for `fmt` (measured apart from loading the model). Returns (name, loader)."""
    if fmt == "onnx":
        import onnxruntime as ort

        def load_onnx(path, threads, order):
            so = ort.SessionOptions()
            if threads:
                so.intra_op_num_threads = threads
            so.log_severity_level = 3
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            names = [i.name for i in sess.get_inputs()]
            return lambda feeds: sess.run(None, {k: feeds[k] for k in names})[0]

        return "onnxruntime " + (_dist_version("onnxruntime") or "?"), load_onnx
    if fmt == "executorch":
        if _has_module("executorch.runtime"):
            import torch  # the official runtime speaks torch tensors
            from executorch.runtime import Runtime

            def load_et(path, threads, order):
                if threads:
                    try:
                        from executorch.extension.pybindings import portable_lib

                        portable_lib._unsafe_reset_threadpool(threads)
                    except (ImportError, AttributeError):
                        pass
                method = Runtime.get().load_program(path).load_method("forward")
                return lambda feeds: method.execute([torch.from_numpy(feeds[k]) for k in order])[0].numpy()

            return "executorch.runtime " + (_dist_version("executorch") or "?"), load_et
        if _has_module("executorch_numpy_runtime"):
            import executorch_numpy_runtime as en

            def load_np(path, threads, order):
                method = en.Runtime.get().load_program(path).load_method("forward")
                return lambda feeds: method([feeds[k] for k in order])[0]

            return "executorch-numpy-runtime " + (_dist_version("executorch-numpy-runtime") or "?"), load_np
        raise RunnerError("no ExecuTorch runtime on the device: pip install executorch-numpy-runtime "
                          "(Python >= 3.12, numpy only) or executorch")
    raise RunnerError(f"unknown format {fmt!r}")


class Session:
    """A loaded artifact: call with a dict of numpy arrays, get the first output."""

    def __init__(self, loader, path: str, threads: int, input_order: list):
        self._call = loader(path, threads, list(input_order))

    def __call__(self, feeds: dict):
        import numpy as np

        return np.asarray(self._call(feeds))


# ------------------------------------------------------------------------ output comparison (shared)
# The one implementation of "does this artifact compute what PyTorch computed": the build host
# (edgeslm.verify) and the device (parity below) both call compare_outputs, so they cannot disagree.
LOGIT_TASKS = ("sequence-classification", "fill-mask")
TOP1_MARGIN = 0.1  # top-1 is judged only where PyTorch's top-2 logits differ by at least this (nats;
# 0.1 is a 52.5% / 47.5% split of two classes): near-ties flip legitimately under int8


def output_rows(task: str, out, mask):
    """The vectors that are compared: one per batch row (embedding, classification) or one per real,
    unpadded token position (fill-mask)."""
    import numpy as np

    out = np.asarray(out, dtype=np.float64)
    if task == "fill-mask":
        keep = np.asarray(mask).astype(bool).reshape(-1)
        return out.reshape(-1, out.shape[-1])[keep]
    return out.reshape(-1, out.shape[-1])


def _row_cosines(a, b):
    import numpy as np

    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    both = (na > 0) & (nb > 0)
    out = np.where(both, dots / np.where(both, na * nb, 1.0), 0.0)
    same = (na == 0) & (nb == 0)
    return np.where(same, 1.0, out)


def _softmax(x):
    import numpy as np

    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def centered_cosine(ref, out) -> float:
    """Cosine between the artifact's and PyTorch's deviations from their own mean output over all rows:
    1 when the artifact responds to its inputs as PyTorch does, 0 for a constant (input-independent)
    output, whatever that constant is."""
    import numpy as np

    rc, oc = ref - ref.mean(axis=0), out - out.mean(axis=0)
    d = float(np.linalg.norm(rc) * np.linalg.norm(oc))
    if d == 0.0:
        return 1.0 if not np.any(rc) and not np.any(oc) else 0.0
    return float((rc * oc).sum() / d)


def compare_outputs(task: str, refs: list, outs: list, masks: list, limits: dict) -> dict:
    """Compare an artifact's outputs with PyTorch's over all samples. `limits` holds min_cosine,
    max_abs_error, min_top1_agreement, max_kl, min_centered_cosine and top1_margin (None = report only).
    Returns {"passed", "rows", "metrics": [{name, value, threshold, kind, passed}]}."""
    import numpy as np

    ref_rows, out_rows = [], []
    for ref, out, mask in zip(refs, outs, masks):
        ref, out = np.asarray(ref), np.asarray(out)
        if ref.shape != out.shape:
            raise RunnerError(f"output shape {tuple(out.shape)} differs from PyTorch's {tuple(ref.shape)}")
        ref_rows.append(output_rows(task, ref, mask))
        out_rows.append(output_rows(task, out, mask))
    r, o = np.concatenate(ref_rows), np.concatenate(out_rows)
    if not np.all(np.isfinite(o)):
        bad = int((~np.isfinite(o)).any(axis=1).sum())
        return {"passed": False, "rows": int(len(r)), "metrics": [
            _check("finite_outputs", 1.0 - bad / max(len(o), 1), 1.0, "min")]}
    cos = _row_cosines(r, o)
    metrics = [
        _check("cosine_min", float(cos.min()), limits.get("min_cosine"), "min"),
        _check("cosine_p5", float(np.percentile(cos, 5)), None, "min"),
        _check("cosine_mean", float(cos.mean()), None, "min"),
        _check("max_abs_error", float(np.abs(r - o).max()), limits.get("max_abs_error"), "max"),
    ]
    if len(r) >= 3:
        metrics.append(_check("centered_cosine", centered_cosine(r, o), limits.get("min_centered_cosine"), "min"))
    if task in LOGIT_TASKS:
        pr, po = _softmax(r), _softmax(o)
        kl = (pr * (np.log(np.clip(pr, 1e-30, None)) - np.log(np.clip(po, 1e-30, None)))).sum(axis=1)
        metrics += [_check("kl_max", float(kl.max()), limits.get("max_kl"), "max"),
                    _check("kl_mean", float(kl.mean()), None, "max"),
                    _check("prob_max_abs_error", float(np.abs(pr - po).max()), None, "max")]
        margin = limits.get("top1_margin")
        margin = TOP1_MARGIN if margin is None else margin
        top2 = np.sort(r, axis=1)[:, -2:] if r.shape[1] > 1 else np.concatenate([r, r - np.inf], axis=1)
        clear = (top2[:, 1] - top2[:, 0]) >= margin
        metrics.append(_check("top1_clear_rows", float(clear.sum()), None, "min"))
        if clear.any():
            agree = float((r[clear].argmax(1) == o[clear].argmax(1)).mean())
            metrics.append(_check("top1_agreement", agree, limits.get("min_top1_agreement"), "min"))
    return {"passed": all(m["passed"] is not False for m in metrics), "rows": int(len(r)), "metrics": metrics}


def _check(name: str, value: float, threshold, kind: str) -> dict:
    ok = None if threshold is None else bool(value >= threshold if kind == "min" else value <= threshold)
    return {"name": name, "value": float(value), "threshold": threshold, "kind": kind if threshold is not None
            else "info", "passed": ok}


def nearest_centroid(embeddings, centroids):
    """Class of each (normalised) embedding: the centroid with the highest cosine."""
    import numpy as np

    e = np.asarray(embeddings, dtype=np.float64)
    e = e / np.clip(np.linalg.norm(e, axis=1, keepdims=True), 1e-12, None)
    return (e @ np.asarray(centroids, dtype=np.float64).T).argmax(1)


def task_metric(metric: str, predicted, targets, classes: int) -> dict:
    """Accuracy and macro-F1 of class predictions; `value` is the one `metric` names."""
    import numpy as np

    pred, true = np.asarray(predicted).reshape(-1), np.asarray(targets).reshape(-1)
    acc = float((pred == true).mean()) if true.size else 0.0
    f1s = []
    for k in range(classes):
        tp = int(((pred == k) & (true == k)).sum())
        fp = int(((pred == k) & (true != k)).sum())
        fn = int(((pred != k) & (true == k)).sum())
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    macro = float(sum(f1s) / len(f1s)) if f1s else 0.0
    value = acc if metric == "accuracy" else macro
    return {"metric": metric, "value": value, "accuracy": acc, "macro_f1": macro, "n": int(true.size)}


def parity(session: Session, build_dir: str, manifest: dict, artifact: dict) -> dict:
    """Run the stored reference inputs here and compare with eager PyTorch (the same maths and
    thresholds as the build host) and with the build host's own run of this artifact."""
    import numpy as np

    ref = np.load(os.path.join(build_dir, manifest["reference"]["file"]))
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


def stats(samples_ms: list) -> dict:
    import numpy as np

    a = np.asarray(samples_ms, dtype=np.float64)
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return {"n": int(a.size), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": mean, "stdev": std,
            "cv": std / mean if mean > 0 else 0.0, "min": float(a.min()), "max": float(a.max())}


def profile(build_dir: str, artifact_name: str, threads: int, warmup: int, iters: int,
            min_seconds: float, seq_len: int | None) -> dict:
    import numpy as np

    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    threads = threads or os.cpu_count() or 1  # explicit, so the result states the threads really used
    with open(os.path.join(build_dir, "manifest.json")) as f:
        manifest = json.load(f)
    artifact = next((a for a in manifest["artifacts"] if a["name"] == artifact_name), None)
    if artifact is None:
        raise RunnerError(f"build has no artifact {artifact_name!r}: "
                          f"{', '.join(a['name'] for a in manifest['artifacts'])}")
    shapes = manifest["shapes"]
    seq = seq_len or shapes["max_seq_len"]
    if not shapes["min_seq_len"] <= seq <= shapes["max_seq_len"]:
        raise RunnerError(f"--seq-len {seq} is outside the model's [{shapes['min_seq_len']}, {shapes['max_seq_len']}]")
    thermal_before = thermal()
    rss_start = _status_kb("VmRSS")
    t0 = time.perf_counter()
    runtime_name, loader = import_runtime(artifact["format"])
    import_ms = (time.perf_counter() - t0) * 1e3
    gc.collect()
    rss_before = _status_kb("VmRSS")
    t0 = time.perf_counter()
    session = Session(loader, os.path.join(build_dir, artifact["file"]), threads,
                      artifact.get("export", {}).get("input_order") or [i["name"] for i in manifest["inputs"]])
    load_ms = (time.perf_counter() - t0) * 1e3
    rss_loaded = _status_kb("VmRSS")
    hwm_after_load = _status_kb("VmHWM")
    check = parity(session, build_dir, manifest, artifact)

    # benchmark input: reference sample 0's tokens repeated to `seq` tokens, batch from the manifest
    ref = np.load(os.path.join(build_dir, manifest["reference"]["file"]))
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
    flags = []
    if lat["cv"] > NOISY_CV:
        flags.append("noisy")
    throttled = any((t.get("throttled") or {}).get("throttled_now") or (t.get("throttled") or {}).get("freq_capped")
                    for t in (thermal_before, thermal_after))
    if throttled:
        flags.append("throttled")
    if emulation():
        flags.append("emulated")
    if not check["passed"]:
        flags.append("parity-failed")
    return {
        "schema": PROFILE_SCHEMA, "runner_version": RUNNER_VERSION, "started_at": started,
        "build": {"recipe": manifest["recipe"]["name"], "target": manifest["target"]["name"],
                  "cache_key": manifest["cache_key"], "task": manifest["task"]},
        "artifact": {"name": artifact["name"], "format": artifact["format"], "file": artifact["file"],
                     "precision": artifact["precision"], "runtime": runtime_name,
                     "size": next((f["size"] for f in manifest["files"] if f["path"] == artifact["file"]), None)},
        "settings": {"threads": threads,
                     "warmup": warmup, "iters": iters, "min_seconds": min_seconds,
                     "seq_len": seq, "batch_size": batch},
        "parity": check,
        "runtime_import_ms": import_ms, "load_ms": load_ms, "first_run_ms": first_ms,
        "latency_ms": lat, "samples_ms": samples,
        "memory_kb": {"rss_at_start": rss_start, "runtime_import_increase": (rss_before or 0) - (rss_start or 0),
                      "rss_before_load": rss_before, "rss_after_load": rss_loaded,
                      "load_increase": (rss_loaded or 0) - (rss_before or 0),
                      "peak_rss": max(hwm_after_load or 0, hwm_run or 0),
                      "peak_during_runs": hwm_run if reset else None,
                      "run_increase": ((hwm_run or 0) - (rss_loaded or 0)) if reset else None,
                      "rss_after_runs": rss_after},
        "thermal": {"before": thermal_before, "after": thermal_after},
        "device": {"arch": platform.machine(), "cpu_model": cpu_model(), "cores": os.cpu_count(),
                   "kernel": platform.release(), "python": platform.python_version(),
                   "runtimes": runtimes(), "emulated": emulation()},
        "flags": flags,
    }


# -------------------------------------------------------------------------------------------- cli
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="device_runner.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probe")
    p.add_argument("--workdir")
    p = sub.add_parser("hash")
    p.add_argument("files", nargs="*")
    for name in ("verify", "hold-lock", "rollback"):
        sub.add_parser(name).add_argument("dir")
    for name in ("activate", "stage", "commit"):
        p = sub.add_parser(name)
        p.add_argument("dir")
        p.add_argument("version")
    p = sub.add_parser("profile")
    p.add_argument("build_dir")
    p.add_argument("--artifact", required=True)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--min-seconds", type=float, default=0.0)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--out")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "probe":
            result = probe(args.workdir)
        elif args.cmd == "hash":
            result = hash_files(args.files)
        elif args.cmd == "verify":
            result = verify_dir(args.dir)
        elif args.cmd == "activate":
            result = activate(args.dir, args.version)
        elif args.cmd == "stage":
            result = stage(args.dir, args.version)
        elif args.cmd == "commit":
            result = commit(args.dir, args.version)
        elif args.cmd == "rollback":
            result = rollback(args.dir)
        elif args.cmd == "hold-lock":
            return hold_lock(args.dir)
        else:
            result = profile(args.build_dir, args.artifact, args.threads, args.warmup, args.iters,
                             args.min_seconds, args.seq_len)
            if args.out:
                os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
                tmp = args.out + ".tmp"
                with open(tmp, "w") as f:
                    json.dump(result, f)
                os.replace(tmp, args.out)
                result = {"written": args.out, "flags": result["flags"], "parity": result["parity"]["passed"]}
    except RunnerError as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    except ImportError as exc:
        print(json.dumps({"error": f"missing Python package on the device: {exc.name or exc} "
                                   f"(install it: {sys.executable} -m pip install {_pip_name(exc.name)})"}))
        return 1
    except OSError as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result))
    return 0


def _pip_name(module) -> str:
    return {"executorch_numpy_runtime": "executorch-numpy-runtime", None: "numpy"}.get(module, module)


if __name__ == "__main__":
    sys.exit(main())
