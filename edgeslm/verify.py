"""Compare an artifact's outputs with eager PyTorch: cosine, max abs error, top-1 agreement."""

from __future__ import annotations

import numpy as np

from edgeslm.artifacts.manifest import Metric, Verification
from edgeslm.config.recipe import VerifySpec
from edgeslm.config.tasks import TASKS

FLOAT_DEFAULTS = {"min_cosine": 0.9999, "max_abs_error": 1e-3, "min_top1_agreement": 1.0}
INT8_DEFAULTS = {"min_cosine": 0.99, "max_abs_error": None, "min_top1_agreement": 0.9}


def thresholds(spec: VerifySpec, quantized: bool) -> dict[str, float | None]:
    base = INT8_DEFAULTS if quantized else FLOAT_DEFAULTS
    return {k: (getattr(spec, k) if getattr(spec, k) is not None else v) for k, v in base.items()}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom > 0 else float(np.array_equal(a, b))


def compare(task: str, reference: list[np.ndarray], actual: list[np.ndarray],
            masks: list[np.ndarray], limits: dict[str, float | None], runtime: str) -> Verification:
    """One sample per list entry. For fill-mask, only real (unpadded) positions count."""
    cos, top1_hits, top1_total, max_err = [], 0, 0, 0.0
    for ref, out, mask in zip(reference, actual, masks):
        if out.shape != ref.shape:
            raise ValueError(f"output shape {out.shape} differs from PyTorch's {ref.shape}")
        if task == "fill-mask":
            keep = mask.astype(bool).reshape(-1)
            ref, out = ref.reshape(-1, ref.shape[-1])[keep], out.reshape(-1, out.shape[-1])[keep]
        cos.append(min(_cosine(r, o) for r, o in zip(ref, out)) if task == "fill-mask" else _cosine(ref, out))
        max_err = max(max_err, float(np.max(np.abs(ref.astype(np.float64) - out))))
        if "top1_agreement" in TASKS[task].metrics:
            r1, o1 = ref.reshape(-1, ref.shape[-1]).argmax(-1), out.reshape(-1, out.shape[-1]).argmax(-1)
            top1_hits += int((r1 == o1).sum())
            top1_total += r1.size
    metrics = [
        _metric("cosine_min", min(cos), limits.get("min_cosine"), "min"),
        _metric("cosine_mean", float(np.mean(cos)), None, "info"),
        _metric("max_abs_error", max_err, limits.get("max_abs_error"), "max"),
    ]
    if top1_total:
        metrics.append(_metric("top1_agreement", top1_hits / top1_total, limits.get("min_top1_agreement"), "min"))
    passed = all(m.passed is not False for m in metrics)
    return Verification(passed=passed, samples=len(reference), seq_lens=[int(m.sum()) for m in masks],
                        metrics=metrics, runtime=runtime)


def _metric(name: str, value: float, threshold: float | None, kind: str) -> Metric:
    if threshold is None:
        return Metric(name=name, value=value, kind="info")
    ok = value >= threshold if kind == "min" else value <= threshold
    return Metric(name=name, value=value, threshold=threshold, kind=kind, passed=bool(ok))


def describe_failure(v: Verification) -> str:
    bad = [m for m in v.metrics if m.passed is False]
    return ", ".join(f"{m.name} {m.value:.5g} {'<' if m.kind == 'min' else '>'} {m.threshold:g}" for m in bad)
