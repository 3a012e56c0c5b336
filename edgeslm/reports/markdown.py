"""Markdown that reads well in a GitHub job summary or a pull-request comment."""

from __future__ import annotations


UNITS = "Sizes in MB (10^6 bytes), memory in MiB (2^20 bytes)."  # the one unit convention of every report


def mb(n) -> str:
    """A file size in bytes as MB (10^6 bytes)."""
    return "-" if n is None else f"{n / 1e6:.1f} MB"


def mib(kib) -> str:
    """A memory figure in KiB (peak RSS) as MiB (2^20 bytes)."""
    return "-" if kib is None else f"{kib / 1024:.0f} MiB"


def _num(v, fmt=".2f") -> str:
    return "-" if v is None else format(v, fmt)


def value(metric: str, v) -> str:
    """A compared value in its unit: latency ms, peak RSS MiB (from KiB), size MB, accuracy as is."""
    if v is None:
        return "-"
    return {"latency": lambda x: f"{x:.2f} ms", "rss": mib, "size": mb}.get(metric, lambda x: f"{x:.4f}")(v)


def change_cell(c: dict) -> str:
    """A check's change: relative in % (latency, rss, size), in points for accuracy; '-' when not compared."""
    if c["change"] is None:
        return "-"
    return f"{c['change']:+.2f} pt" if c["metric"] == "accuracy" else f"{c['change'] * 100:+.1f}%"


def limit_cell(c: dict) -> str:
    """A check's limit: the largest increase allowed in % (latency, rss, size), the drop in points for accuracy."""
    return f"{c['limit']:+.2f} pt" if c["metric"] == "accuracy" else f"+{c['limit'] * 100:.1f}%"


def task_cell(r: dict) -> str:
    """'0.9765 / 0.9765 acc ★' : task metric on the device / on the build host; ★ = on the Pareto front
    of task metric against latency on this device."""
    t = r.get("task") or {}
    if t.get("host") is None and t.get("device") is None:
        return "-"
    name = {"accuracy": "acc", "macro-f1": "F1"}.get(t.get("metric"), t.get("metric") or "")
    star = " ★" if (r.get("pareto") or {}).get("latency") else ""
    return f"{_num(t.get('device'), '.4f')} / {_num(t.get('host'), '.4f')} {name}{star}"


def partial(comp: dict) -> str:
    """' (on partial data: ...)' when result files of either side were skipped, else ''."""
    n = {side: len(files) for side, files in (comp.get("skipped") or {}).items() if files}
    if not n:
        return ""
    return " (on partial data: " + ", ".join(f"{k} {side} result file(s) skipped" for side, k in n.items()) + ")"


def skipped_files(report: dict) -> list[tuple[str, dict]]:
    """(side label, {file, why}) for every skipped result file: the report's own, and the baseline's."""
    comp = report.get("comparison") or {}
    base = (comp.get("skipped") or {}).get("baseline") or []
    return [("", s) for s in report.get("skipped") or []] + [("baseline: ", s) for s in base]


def limits_text(limits: dict) -> str:
    """'latency +10%, rss +5%, size +1%, accuracy -0.5 pt'"""
    return ", ".join(f"{m} {v:+.2f} pt" if m == "accuracy" else f"{m} +{v * 100:.0f}%" for m, v in limits.items())


def summary_rows(report: dict) -> list[list[str]]:
    """The summary table's cells (device, task, pick, p50, size, vs fp32, vs baseline), shared with HTML."""
    rows = []
    for s in report.get("summary") or []:
        b = s["best"]
        if b is None:
            rows.append([s["device"], s["task"], f"none: {s.get('why', '')}", "-", "-", "-", "-"])
            continue
        f = s.get("vs_fp32")
        if f:
            acc = "" if f["task_points"] is None else f", {f['task_points']:+.2f} pt"
            size = "" if f["size_ratio"] is None else f", {f['size_ratio']:.2f}x size"
            fp32 = f"{f['speedup']:.2f}x faster{size}{acc}"
        else:
            fp32 = "-"
        v = s.get("vs_baseline")
        base = "-" if not v else v["status"] + ("" if v["latency_change"] is None
                                                else f" (latency {v['latency_change'] * 100:+.1f}%)")
        rows.append([s["device"], s["task"], f"{b['artifact']} {b['precision']} ({b['key']})",
                     f"{b['p50_ms']:.2f} ms", mb(b["size"]), fp32, base])
    return rows


def render(report: dict) -> str:
    out = ["# edgeslm profiling report", ""]
    comp = report.get("comparison")
    if comp:
        verdict = "**FAILED**: regression beyond the thresholds" if comp["failed"] else "passed"
        limits = f"; limits: {limits_text(comp['limits'])}" if comp.get("limits") else ""
        out += [f"Gate: {verdict}{partial(comp)}{limits}", ""]
    if report.get("summary"):
        out += ["## Summary", "", "Per device and task, the fastest artifact that passed its check on the device "
                "(emulated devices: the smallest, their timings are not latency).", "",
                "| device | task | pick | p50 | size | vs fp32 | vs baseline |", "|---|---|---|---|---|---|---|",
                *["| " + " | ".join(row) + " |" for row in summary_rows(report)], ""]
    by_device: dict[str, list[dict]] = {}
    for r in report["results"]:
        by_device.setdefault(r["device"], []).append(r)
    for device, rs in by_device.items():
        fp = report["devices"][device]
        emu = f" — EMULATED ({fp['emulated']}): timings are not device latency" if fp.get("emulated") else ""
        out += [f"## {device}: {fp['arch']}, {fp['cpu_model']}, {fp['cores']} cores{emu}", "",
                "| recipe | target | artifact | threads | precision | size | p50 ms | p90 ms | p99 ms | CV | peak RSS | "
                "parity on device | task metric (device / host) | vs PyTorch (host) | flags |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rs:
            lat = r["latency_ms"]
            parity = ("pass" if r["parity"]["passed"] else "**FAIL**") + (
                f" ({r['parity']['cosine_min']:.4f})" if r["parity"]["cosine_min"] is not None else "")
            acc = r["accuracy"]
            accuracy = (f"cos {acc['cosine_min']:.4f}" if acc["cosine_min"] is not None else "-") + (
                f", top-1 {acc['top1_agreement']:.3f}" if acc.get("top1_agreement") is not None else "")
            out.append(f"| {r['recipe']} | {r['target']} | {r['artifact']} | {r.get('threads', '-')} | {r['precision']} | "
                       f"{mb(r['size'])} | "
                       f"{lat['p50']:.2f} | {lat['p90']:.2f} | {lat['p99']:.2f} | {lat['cv'] * 100:.1f}% | "
                       f"{mib(r['peak_rss_kb'])} | {parity} | {task_cell(r)} | {accuracy} | "
                       f"{', '.join(r['flags']) or '-'} |")
        gens = [r for r in rs if r.get("generation")]
        if gens:
            out += ["", "Decoders (latency above: ms per generated token):", "",
                    "| recipe | target | artifact | threads | time to first token p50 (prompt tokens) | decode tok/s "
                    "(p10-p90) | perplexity vs PyTorch (device) | top-5 vs PyTorch |", "|---|---|---|---|---|---|---|---|"]
            for r in gens:
                g = r["generation"]
                ttft = ", ".join(f"{v:.0f} ms ({k})" for k, v in g["ttft_ms"].items()) or "-"
                lo, hi = g["decode_tok_s_p10_p90"]
                ppl = "-" if g["perplexity_increase"] is None else f"{g['perplexity_increase']:+.1%}"
                top5 = "-" if g["top5_agreement"] is None else f"{g['top5_agreement']:.3f}"
                out.append(f"| {r['recipe']} | {r['target']} | {r['artifact']} | {r.get('threads', '-')} | {ttft} | "
                           f"{g['decode_tok_s']:.1f} ({lo:.1f}-{hi:.1f}) | {ppl} | {top5} |")
        runtimes = ", ".join(f"{k} {v}" for k, v in (fp.get("runtimes") or {}).items() if v)
        out += ["", f"Device: kernel {fp['kernel']}, Python {fp['python']}, {runtimes}.", ""]
        for r in rs:
            if r.get("runs_not_pooled"):
                st = r.get("settings") or {}
                shown = ", ".join(f"{k} {st[k]}" for k in ("seq_len", "batch_size", "new_tokens") if st.get(k))
                out.append(f"- {r['key']}: {r['runs']} run(s) pooled ({shown}); {r['runs_not_pooled']} run(s) of this "
                           "artifact under other settings or of another build left out")
        if any(r.get("runs_not_pooled") for r in rs):
            out.append("")
        if any((r.get("pareto") or {}).get("latency") for r in rs) and len(rs) > 1:
            out += ["★ on the Pareto front: no other variant on this device is both faster and at least as accurate "
                    "(task metric measured on the device where it was, else on the build host).", ""]
    if comp:
        out += ["## Comparison with the baseline", "",
                "| result | metric | baseline | current | change | limit | verdict |", "|---|---|---|---|---|---|---|"]
        for row in comp["rows"]:
            if not row["checks"]:
                out.append(f"| {row['key']} | - | - | - | - | - | {row['status']} |")
            for c in row["checks"]:
                verdict = f"**{c['status']}**" if c["status"] == "regressed" else c["status"]
                detail = f" ({c['detail']})" if c["detail"] else ""
                out.append(f"| {row['key']} | {c['metric']} | {value(c['metric'], c['baseline'])} | "
                           f"{value(c['metric'], c['current'])} | {change_cell(c)} | {limit_cell(c)} | "
                           f"{verdict}{detail} |")
        if comp["notes"]:
            out += ["", *[f"- {n}" for n in comp["notes"]]]
        out.append("")
    if report["unprofiled_builds"]:
        out += ["## Builds not profiled on a device", "", "| recipe | target | artifact | precision | size | "
                "cosine (host) | task metric (host) | verified |", "|---|---|---|---|---|---|---|---|"]
        for b in report["unprofiled_builds"]:
            out.append(f"| {b['recipe']} | {b['target']} | {b['artifact']} | {b['precision']} | {mb(b['size'])} | "
                       f"{_num(b['cosine_min'], '.4f')} | {_num((b.get('task') or {}).get('host'), '.4f')} | "
                       f"{'yes' if b['verified'] else 'no'} |")
        out.append("")
    skipped = skipped_files(report)
    if skipped:
        out += ["## Result files skipped", "", "Found in the given folders but not readable as results, so left out of "
                "this report" + (" and the comparison" if comp else "") + ":", "",
                *[f"- {side}`{s['file']}`: {s['why']}" for side, s in skipped], ""]
    out += ["## Builds", "", "| recipe | target | recipe sha256 | tools |", "|---|---|---|---|"]
    for key, b in report["builds"].items():
        tools = ", ".join(f"{k} {v}" for k, v in b["tools"].items() if k in ("torch", "executorch", "onnxruntime",
                                                                              "transformers", "python"))
        out.append(f"| {b['recipe']} | {b['target']} | `{b['recipe_sha256'][:12]}` | {tools} |")
    out += ["", UNITS, "", f"_edgeslm {report['edgeslm_version']}, {report['generated_at']}_", ""]
    return "\n".join(out)
