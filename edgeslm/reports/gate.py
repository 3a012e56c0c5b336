"""Compare current results with a baseline and decide, without crying wolf.

Latency uses the measured spread: a bootstrap 95% interval of the change in median latency from the
raw samples of both sides, widened by the run-to-run spread (samples within one run are correlated, so
the within-run interval alone is too narrow): the spread of per-run medians when both sides have
repeated runs, else RUN_NOISE. Over the threshold with the whole interval -> regression; under it ->
ok; straddling it -> inconclusive (reported, does not fail); a spread wider than the limit is said to be (such a
comparison can only fail on a change far above the limit). Latency measured on an emulated device is never
judged: its timings are not device latency. Size and peak RSS are
compared directly; accuracy in points (cosine or top-1 agreement x 100); a failed on-device parity check
always fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeslm.config.thresholds import DEFAULT_FAIL_ON, parse_fail_on  # noqa: F401 (re-exported)
from edgeslm.errors import UserError

RUN_NOISE = 0.05  # re-runs of one unchanged build on the CI machine differed by 1.5-4% in median latency

@dataclass
class Check:
    metric: str
    baseline: float | None
    current: float | None
    change: float | None  # relative for latency/rss/size, points for accuracy
    limit: float
    status: str  # ok | regressed | inconclusive | improved | n/a
    detail: str = ""


@dataclass
class Comparison:
    rows: list[dict] = field(default_factory=list)  # per key: {key, checks: [Check], status}
    notes: list[str] = field(default_factory=list)  # fingerprint/tool changes, missing entries, skipped files
    skipped: dict = field(default_factory=dict)  # {"current" | "baseline": [{file, why}]}: results not compared
    limits: dict = field(default_factory=dict)  # the thresholds judged against ({metric: limit})

    @property
    def failed(self) -> bool:
        return any(r["status"] == "regressed" for r in self.rows)

    @property
    def partial(self) -> bool:
        """Some result files of either side could not be read: the verdict stands on less data."""
        return any(self.skipped.values())

    def to_json(self) -> dict:
        return {"failed": self.failed, "partial": self.partial, "skipped": self.skipped, "notes": self.notes,
                "limits": self.limits,
                "rows": [{**r, "checks": [c.__dict__ for c in r["checks"]]} for r in self.rows]}


def bootstrap_median_change(cur: list[float], base: list[float], n: int = 2000, seed: int = 0):
    """95% interval of median(cur)/median(base) - 1 from resampling both sides."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(cur), np.asarray(base)
    ma = np.median(rng.choice(a, size=(n, a.size), replace=True), axis=1)
    mb = np.median(rng.choice(b, size=(n, b.size), replace=True), axis=1)
    ratios = ma / mb - 1.0
    return float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def _latency(cur: dict, base: dict, limit: float) -> Check:
    c50, b50 = cur["latency_ms"]["p50"], base["latency_ms"]["p50"]
    change = c50 / b50 - 1.0
    emulated = [side for side, r in (("current", cur), ("baseline", base)) if (r.get("fingerprint") or {}).get("emulated")]
    if emulated:
        return Check("latency", b50, c50, change, limit, "n/a",
                     f"not judged: the {' and '.join(emulated)} ran on an emulated device, whose timings are not "
                     "device latency")
    if len(cur["samples_ms"]) >= 10 and len(base["samples_ms"]) >= 10:
        lo, hi = bootstrap_median_change(cur["samples_ms"], base["samples_ms"])
    else:  # no raw samples: the coefficients of variation stand in
        spread = 2 * max(cur["latency_ms"]["cv"], base["latency_ms"]["cv"])
        lo, hi = change - spread, change + spread
    runs = run_to_run(cur, base)
    lo, hi = lo - runs, hi + runs
    detail = f"95% interval {lo * 100:+.1f}% .. {hi * 100:+.1f}% incl. +-{runs * 100:.1f}% run-to-run"
    half = (hi - lo) / 2
    if half >= limit:
        detail += (f"; the spread (+-{half * 100:.1f}%) is wider than the limit (+{limit * 100:.1f}%): this check cannot "
                   f"pass and fails only above +{(limit + half) * 100:.1f}%; measure on a quiet machine or with more runs")
    busy = sorted({f for r in (cur, base) for f in r.get("flags", ()) if f in ("busy", "partial", "noisy")})
    if busy:
        detail += f"; flagged {', '.join(busy)}"
    if lo > limit:
        status = "regressed"
    elif hi <= limit:
        status = "improved" if hi < -limit else "ok"
    else:
        status = "inconclusive"
    return Check("latency", b50, c50, change, limit, status, detail)


def run_to_run(cur: dict, base: dict) -> float:
    """Relative spread of per-run medians (2 sd), from repeated runs on both sides, else RUN_NOISE."""
    spreads = []
    for side in (cur, base):
        meds = np.asarray(side.get("run_p50s") or [])
        if meds.size < 2:
            return RUN_NOISE
        spreads.append(2 * float(meds.std(ddof=1) / meds.mean()))
    return max(spreads)


def _relative(metric: str, cur: float | None, base: float | None, limit: float) -> Check:
    if not cur or not base:
        return Check(metric, base, cur, None, limit, "n/a")
    change = cur / base - 1.0
    status = "regressed" if change > limit else ("improved" if change < -limit else "ok")
    return Check(metric, base, cur, change, limit, status)


def _accuracy(cur: dict, base: dict, limit: float) -> Check:
    """The task metric when both sides have one (measured on the device where both were), else
    agreement with PyTorch (top-1, or cosine for embeddings)."""
    from edgeslm.reports.collect import task_value

    ct, bt = cur.get("task") or {}, base.get("task") or {}
    if ct.get("device") is not None and bt.get("device") is not None:
        name, c, b = f"{ct.get('metric')} on the device", ct["device"], bt["device"]
    elif task_value(cur) is not None and task_value(base) is not None:
        name, c, b = f"{ct.get('metric')} (host)", ct.get("host"), bt.get("host")
    else:
        name = "top1_agreement" if cur["accuracy"].get("top1_agreement") is not None else "cosine_min"
        c, b = cur["accuracy"].get(name), base["accuracy"].get(name)
    if not cur["parity"]["passed"]:
        return Check("accuracy", b, c, None, limit, "regressed", "on-device parity check failed")
    if c is None or b is None:
        return Check("accuracy", b, c, None, limit, "n/a")
    points = (c - b) * 100
    status = "regressed" if points < limit else ("improved" if points > -limit else "ok")
    return Check("accuracy", b, c, points, limit, status, name)


def compare(current: list[dict], baseline: list[dict], limits: dict[str, float], skipped: dict | None = None) -> Comparison:
    """Each current result against the baseline's of the same key. `skipped` ({"current" | "baseline": [{file,
    why}]}, collect's): result files that could not be read; they do not fail the gate (one damaged file
    would block every later run), but the comparison says it stands on partial data and names each one (a
    key whose every result was skipped shows as new or missing)."""
    base = {r["key"]: r for r in baseline}
    cur = {r["key"]: r for r in current}
    if not set(base) & set(cur):
        raise UserError("the baseline has no result for any of the current (device/recipe/target/artifact) "
                        f"entries: baseline {sorted(base)[:3]}, current {sorted(cur)[:3]}; "
                        "record one with --save-baseline")
    out = Comparison(limits=dict(limits))
    for key, c in cur.items():
        b = base.get(key)
        if b is None:
            out.rows.append({"key": key, "checks": [], "status": "new"})
            out.notes.append(f"{key}: no baseline entry (new)")
            continue
        checks = []
        if "latency" in limits:
            checks.append(_latency(c, b, limits["latency"]))
        if "rss" in limits:
            checks.append(_relative("rss", c["peak_rss_kb"], b["peak_rss_kb"], limits["rss"]))
        if "size" in limits:
            checks.append(_relative("size", c["size"], b["size"], limits["size"]))
        if "accuracy" in limits:
            checks.append(_accuracy(c, b, limits["accuracy"]))
        statuses = {x.status for x in checks}
        status = "regressed" if "regressed" in statuses else "inconclusive" if "inconclusive" in statuses else "ok"
        out.rows.append({"key": key, "checks": checks, "status": status})
        for x in checks:
            if x.metric == "latency" and "wider than the limit" in x.detail:
                out.notes.append(f"{key}: latency spread too wide for the +{x.limit * 100:.0f}% limit (this check "
                                 "cannot pass); re-measure on a quiet machine or with more runs")
        for what, cv, bv in (("device fingerprint", c["fingerprint"], b["fingerprint"]),
                             ("tool versions", c["tools"], b["tools"])):
            if cv != bv:
                diff = sorted(k for k in set(cv) | set(bv) if cv.get(k) != bv.get(k))
                out.notes.append(f"{key}: {what} changed ({', '.join(diff)}): compare with care")
        if c["recipe_sha256"] != b["recipe_sha256"]:
            out.notes.append(f"{key}: recipe changed since the baseline")
    for key in sorted(set(base) - set(cur)):
        out.notes.append(f"{key}: in the baseline but not in this run")
    out.skipped = {side: list(files) for side, files in (skipped or {}).items() if files}
    for side, files in out.skipped.items():
        for s in files:
            out.notes.append(skipped_note(side, s))
    return out


def skipped_note(side: str, s: dict) -> str:
    """The comparison's note for a result file of `side` ("current" | "baseline") that could not be read."""
    return f"{side} result skipped (unreadable, not compared): {s['file']}: {s['why']}"
