"""Compare current results with a baseline and decide, without crying wolf.

Latency uses the measured spread: a bootstrap 95% interval of the change in median latency from the
raw samples of both sides, widened by the run-to-run spread (samples within one run are correlated, so
the within-run interval alone is too narrow): the spread of per-run medians when both sides have
repeated runs, else RUN_NOISE. Over the threshold with the whole interval -> regression; under it ->
ok; straddling it -> inconclusive (reported, does not fail). Size and peak RSS are
compared directly; accuracy in points (cosine or top-1 agreement x 100); a failed on-device parity check
always fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

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
    notes: list[str] = field(default_factory=list)  # fingerprint/tool changes, missing entries

    @property
    def failed(self) -> bool:
        return any(r["status"] == "regressed" for r in self.rows)

    def to_json(self) -> dict:
        return {"failed": self.failed, "notes": self.notes,
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
    if len(cur["samples_ms"]) >= 10 and len(base["samples_ms"]) >= 10:
        lo, hi = bootstrap_median_change(cur["samples_ms"], base["samples_ms"])
    else:  # no raw samples: the coefficients of variation stand in
        spread = 2 * max(cur["latency_ms"]["cv"], base["latency_ms"]["cv"])
        lo, hi = change - spread, change + spread
    runs = run_to_run(cur, base)
    lo, hi = lo - runs, hi + runs
    detail = f"95% interval {lo * 100:+.1f}% .. {hi * 100:+.1f}% incl. +-{runs * 100:.1f}% run-to-run"
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


def compare(current: list[dict], baseline: list[dict], limits: dict[str, float]) -> Comparison:
    base = {r["key"]: r for r in baseline}
    cur = {r["key"]: r for r in current}
    if not set(base) & set(cur):
        raise UserError("the baseline has no result for any of the current (device/recipe/target/artifact) "
                        f"entries: baseline {sorted(base)[:3]}, current {sorted(cur)[:3]}; "
                        "record one with --save-baseline")
    out = Comparison()
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
        for what, cv, bv in (("device fingerprint", c["fingerprint"], b["fingerprint"]),
                             ("tool versions", c["tools"], b["tools"])):
            if cv != bv:
                diff = sorted(k for k in set(cv) | set(bv) if cv.get(k) != bv.get(k))
                out.notes.append(f"{key}: {what} changed ({', '.join(diff)}): compare with care")
        if c["recipe_sha256"] != b["recipe_sha256"]:
            out.notes.append(f"{key}: recipe changed since the baseline")
    for key in sorted(set(base) - set(cur)):
        out.notes.append(f"{key}: in the baseline but not in this run")
    return out


from edgeslm.contract import BASELINE_SCHEMA, MANIFEST_SCHEMA  # noqa: E402
from edgeslm.reports.collect import BASELINE_MARKER  # noqa: E402



def is_baseline(folder: Path) -> bool:
    try:
        return json.loads((folder / BASELINE_MARKER).read_text()).get("schema") == BASELINE_SCHEMA
    except (OSError, ValueError, AttributeError):
        return False


def save_baseline(sources: list[str], folder: Path) -> Path:
    """Store the given result and manifest files as the new baseline in `folder`.

    Only a folder edgeslm made as a baseline (it holds the marker file) is ever replaced; a plain file,
    a build folder or any other folder is refused and left as it is. The new baseline is written to a
    temporary sibling and swapped in, so an interrupted save leaves the old one intact."""
    import datetime as dt

    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise UserError(f"--save-baseline {folder}: is a file, not a baseline folder; give a new folder "
                        "name (nothing was written)")
    if folder.exists() and not is_baseline(folder):
        if any(folder.iterdir()):
            raise UserError(f"--save-baseline {folder}: exists and is not an edgeslm baseline (no {BASELINE_MARKER}); "
                            "edgeslm only replaces baselines it made: give a new folder name (nothing was written)")
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for i, src in enumerate(sources):
            data = json.loads(Path(src).read_text())
            if data.get("schema") == MANIFEST_SCHEMA:
                name = f"manifest-{data['cache_key'][:16]}.json"
            else:
                b, d, a = data["build"], data["device"], data["artifact"]
                name = f"profile-{d.get('name')}-{b['recipe']}-{b['target']}-{a['name']}-{i}.json"
            name = re.sub(r"[^A-Za-z0-9._-]", "_", name)  # names in results are input: a plain file name
            shutil.copyfile(src, tmp / name)
        (tmp / BASELINE_MARKER).write_text(json.dumps({
            "schema": BASELINE_SCHEMA, "files": len(sources),
            "saved_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}))
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        if folder.exists():
            os.replace(folder, old)  # only an edgeslm baseline or an empty folder gets here
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
