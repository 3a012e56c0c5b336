"""The report as data (schema edgeslm.report/1): what the Markdown and HTML renderers draw from.

    schema, generated_at, edgeslm_version
    summary:  [{device, task, ranked_by, best {key, artifact, format, precision, threads, p50_ms, size,
                peak_rss_kb, task_value} | null, why (when null), vs_fp32 {key, speedup, size_ratio, task_points} |
                null, vs_baseline {status, latency_change} | null}]: per device and task, the fastest artifact
                that passed its on-device check (on an emulated device: the smallest)
    devices:  {name: fingerprint (arch, cpu_model, cores, kernel, python, runtimes, emulated)}
    builds:   {cache_key: {recipe, target, recipe_sha256, tools, training [{step, kept_epoch, picked_on, cached,
                history [{epoch, train_loss, validation_loss, validation_accuracy}]}]}}
    results:  [{key (device/recipe/target/artifact, + /<threads>t in a thread grid), device, recipe, target,
                artifact, threads, format, precision, runtime, size, latency_ms
                {n,p50,p90,p99,mean,stdev,cv,min,max}, runs, peak_rss_kb, load_ms, parity {passed,
                cosine_min}, accuracy {cosine_min, top1_agreement}, task {metric, host, device,
                device_p50_ms_real_lengths}, pareto {latency, size}, flags, cache_key, settings, runs_not_pooled
                (runs of the build under other settings, left out), model_task}]
    unprofiled_builds: [{recipe, target, artifact, precision, size, cosine_min, task {metric, host}, verified}]
    skipped:  [{file, why}]: result files found in the given folders that could not be read or reported
    comparison: null | {failed, partial, limits {metric: limit}, skipped {current, baseline: [{file, why}]}, notes, rows: [{key,
                status, checks: [{metric, baseline, current, change, limit, status, detail}]}]}
"""

from __future__ import annotations

import datetime as dt

from edgeslm import __version__
from edgeslm.reports.collect import REPORT_SCHEMA, Collected, builds_without_profiles, pareto, rows, task_value


def build_report(c: Collected, comparison=None, keep_samples: bool = True) -> dict:
    results = rows(c)
    fronts = {"latency": pareto(results, "latency"), "size": pareto(results, "size")}
    for r in results:
        r["pareto"] = {k: r["key"] in v for k, v in fronts.items()}
    devices = {r["device"]: r["fingerprint"] for r in results}
    # targets that get the same files share a build (one cache key): the row names each target it was for
    builds = {k: {"recipe": m.recipe.name, "target": ", ".join(sorted({m.target["name"]} | {
                      r["target"] for r in results if r["cache_key"] == k})),
                  "recipe_sha256": m.recipe.sha256, "tools": m.tools, "training": training(m)}
              for k, m in c.manifests.items()}
    if not keep_samples:
        for r in results:
            r.pop("samples_ms", None)
    comp = comparison.to_json() if comparison is not None else None
    return {"schema": REPORT_SCHEMA, "edgeslm_version": __version__,
            "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "summary": summary(results, comp),
            "devices": devices, "builds": builds, "results": results,
            "unprofiled_builds": builds_without_profiles(c), "skipped": list(c.skipped),
            "comparison": comp}


def training(m) -> list[dict]:
    """The curves of a build's training steps (fine-tuning, recovery after pruning): per epoch the train loss
    and, where a validation split picked the epoch, its loss and accuracy."""
    out = []
    for p in m.passes:
        for step, facts in (("finetune", p if p.get("type") == "finetune" else None),
                            ("recovery", p.get("recovery") if isinstance(p.get("recovery"), dict) else None)):
            if facts and facts.get("history"):
                out.append({"step": step, "kept_epoch": facts.get("kept_epoch"), "picked_on": facts.get("picked_on"),
                            "cached": bool(p.get("cached")),
                            "history": [{k: e.get(k) for k in ("epoch", "train_loss", "validation_loss",
                                                               "validation_accuracy")} for e in facts["history"]]})
    return out


def summary(results: list[dict], comparison: dict | None) -> list[dict]:
    """Per device and task, the artifact to pick: the fastest (on an emulated device, whose timings are not
    latency, the smallest) of those that passed their on-device check; against the fastest fp32 artifact of the
    same format and threads there, and against the baseline when there is one."""
    base = {row["key"]: row for row in (comparison or {}).get("rows", [])}
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["device"], r.get("model_task") or "?"), []).append(r)
    out = []
    for (device, task), rs in sorted(groups.items()):
        ok = [r for r in rs if r["parity"]["passed"]]
        emulated = any("emulated" in r["flags"] for r in rs)
        entry = {"device": device, "task": task,
                 "ranked_by": "size (emulated device: timings are not latency)" if emulated else "p50 latency",
                 "best": None, "vs_fp32": None, "vs_baseline": None}
        if not ok:
            out.append({**entry, "why": "no artifact passed its on-device check"})
            continue

        def rank(r):
            return (r.get("size") or float("inf")) if emulated else r["latency_ms"]["p50"]

        best = min(ok, key=rank)
        entry["best"] = {"key": best["key"], "artifact": best["artifact"], "format": best["format"],
                         "precision": best["precision"], "threads": best.get("threads"),
                         "p50_ms": best["latency_ms"]["p50"], "size": best.get("size"),
                         "peak_rss_kb": best["peak_rss_kb"], "task_value": task_value(best)}
        fp32 = [r for r in ok if r["precision"] == "fp32" and r["format"] == best["format"]
                and r.get("threads") == best.get("threads") and r is not best]
        if fp32 and best["precision"] != "fp32":
            ref = min(fp32, key=rank)
            tv, rv = task_value(best), task_value(ref)
            entry["vs_fp32"] = {"key": ref["key"], "speedup": ref["latency_ms"]["p50"] / best["latency_ms"]["p50"],
                                "size_ratio": (best["size"] / ref["size"]) if best.get("size") and ref.get("size") else None,
                                "task_points": (tv - rv) * 100 if tv is not None and rv is not None else None}
        row = base.get(best["key"])
        if row is not None:
            lat = next((c for c in row["checks"] if c["metric"] == "latency"), None)
            entry["vs_baseline"] = {"status": row["status"], "latency_change": lat["change"] if lat else None}
        out.append(entry)
    return out
