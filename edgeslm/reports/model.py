"""The report as data (schema edgeslm.report/1): what the Markdown and HTML renderers draw from.

    schema, generated_at, edgeslm_version
    devices:  {name: fingerprint (arch, cpu_model, cores, kernel, python, runtimes, emulated)}
    builds:   {cache_key: {recipe, target, recipe_sha256, tools}}
    results:  [{key (device/recipe/target/artifact, + /<threads>t in a thread grid), device, recipe, target,
                artifact, threads, format, precision, runtime, size, latency_ms
                {n,p50,p90,p99,mean,stdev,cv,min,max}, runs, peak_rss_kb, load_ms, parity {passed,
                cosine_min}, accuracy {cosine_min, top1_agreement}, task {metric, host, device,
                device_p50_ms_real_lengths}, pareto {latency, size}, flags, cache_key, settings}]
    unprofiled_builds: [{recipe, target, artifact, precision, size, cosine_min, task {metric, host}, verified}]
    skipped:  [{file, why}]: result files found in the given folders that could not be read or reported
    comparison: null | {failed, partial, skipped {current, baseline: [{file, why}]}, notes, rows: [{key,
                status, checks: [{metric, baseline, current, change, limit, status, detail}]}]}
"""

from __future__ import annotations

import datetime as dt

from edgeslm import __version__
from edgeslm.reports.collect import REPORT_SCHEMA, Collected, builds_without_profiles, pareto, rows


def build_report(c: Collected, comparison=None, keep_samples: bool = True) -> dict:
    results = rows(c)
    fronts = {"latency": pareto(results, "latency"), "size": pareto(results, "size")}
    for r in results:
        r["pareto"] = {k: r["key"] in v for k, v in fronts.items()}
    devices = {r["device"]: r["fingerprint"] for r in results}
    builds = {k: {"recipe": m.recipe.name, "target": m.target["name"], "recipe_sha256": m.recipe.sha256,
                  "tools": m.tools} for k, m in c.manifests.items()}
    if not keep_samples:
        for r in results:
            r.pop("samples_ms", None)
    return {"schema": REPORT_SCHEMA, "edgeslm_version": __version__,
            "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "devices": devices, "builds": builds, "results": results,
            "unprofiled_builds": builds_without_profiles(c), "skipped": list(c.skipped),
            "comparison": comparison.to_json() if comparison is not None else None}
