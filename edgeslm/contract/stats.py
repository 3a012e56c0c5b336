"""Latency statistics, computed the same way on the device and in reports."""

from __future__ import annotations

def stats(samples_ms: list) -> dict:
    import numpy as np

    a = np.asarray(samples_ms, dtype=np.float64)
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return {"n": int(a.size), "p10": float(np.percentile(a, 10)), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": mean, "stdev": std,
            "cv": std / mean if mean > 0 else 0.0, "min": float(a.min()), "max": float(a.max())}


def duration(seconds: float) -> str:
    """12 s, 7 min 30 s, 1 h 20 min."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"
