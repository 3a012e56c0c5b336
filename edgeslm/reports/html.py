"""A single self-contained HTML report: inline CSS, inline SVG plots (matplotlib), no network."""

from __future__ import annotations

import html
import io
import re

from edgeslm.reports import markdown

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}.fail{color:#b00020;font-weight:bold}.pass{color:#1b7f3b}.flag{color:#a05a00}
.emu{background:#fff4d6;padding:6px 10px;border-left:4px solid #e0a800}figure{margin:1em 0}
figcaption,.units{font-size:13px;color:#555}.muted{color:#777;font-size:12px}"""


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)  # RDF boilerplate, not needed inline
    return text[text.index("<svg"):]


def latency_plot(rows: list[dict]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "path"  # glyphs as paths: no font files to fetch
    import matplotlib.pyplot as plt

    data = [(f"{r['recipe']}\n{r['artifact']} ({r['precision']})", r.get("samples_ms") or []) for r in rows]
    data = [d for d in data if d[1]]
    if not data:
        return None
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(data)), 3.6))
    ax.boxplot([d[1] for d in data], showfliers=True, whis=(1, 99))
    ax.set_xticks(range(1, len(data) + 1), [d[0] for d in data], fontsize=8)
    ax.set_ylabel("latency per run (ms)")
    ax.grid(axis="y", alpha=0.3)
    return _svg(fig)


MIN_SPAN = 0.10  # an axis spans at least its data's mean +-10%: a 1% difference must look like one


def _widen(ax, axis: str, values: list[float], cap: float | None = None) -> None:
    """Widen (never narrow) an axis to at least mean +-MIN_SPAN*mean of its data, so matplotlib's autoscaling
    does not blow a 1% difference up to the whole plot. Padding around the mean, rather than starting at zero,
    keeps close values readable and works for the task metric (85-92%) as for sizes and latencies. `cap`: a
    value the data cannot exceed (100%): the window slides below it rather than past it."""
    if not values:
        return
    mean = sum(values) / len(values)
    lo, hi = mean - MIN_SPAN * abs(mean), mean + MIN_SPAN * abs(mean)
    if cap is not None and hi > cap >= max(values):
        lo, hi = lo - (hi - cap), cap
    get, set_ = (ax.get_xlim, ax.set_xlim) if axis == "x" else (ax.get_ylim, ax.set_ylim)
    cur_lo, cur_hi = get()
    set_(min(cur_lo, lo), max(cur_hi, hi))


def _span_for(lim: tuple, anchors: list[tuple]) -> tuple:
    """The narrowest limits holding `lim` in which every anchor x has at least `below` of the span under it and
    `above` over it (fractions: its label's extent in pixels over the frame's). A label wider than the frame
    cannot fit and is left out."""
    lo, hi = lim
    span = hi - lo
    fits = [(x, b, a) for x, b, a in anchors if b + a < 1]
    for x, below, above in fits:  # lo = min(lo, x - below*span) and hi = lo + span must hold every label
        span = max(span, (x - lo) / (1 - above), (hi - x) / (1 - below))
        span = max([span, *((x - x2) / (1 - above - b2) for x2, b2, _ in fits if above + b2 < 1)])
    lo = min([lo, *(x - below * span for x, below, _ in fits)])
    return lo, lo + span


def _labels_inside(ax, labels: list, pad: float = 3.0) -> None:
    """Keep every annotation label inside the axes frame: a label crossing the right or top edge goes to the other
    side of its point, then the axis limits widen just enough for every label to fit (labels keep their size in
    pixels, so this is solved once rather than by zooming out round after round)."""
    fig = ax.figure
    fig.canvas.draw()
    frame = ax.get_window_extent()
    for t in labels:
        box = t.get_window_extent()
        dx, dy = t.xyann
        if box.x1 > frame.x1:
            t.set_horizontalalignment("right")
            dx = -abs(dx)
        if box.y1 > frame.y1:
            t.set_verticalalignment("top")
            dy = -abs(dy)
        t.xyann = (dx, dy)
    fig.canvas.draw()
    xs, ys = [], []
    for t in labels:
        box = t.get_window_extent()
        px, py = ax.transData.transform(t.xy)
        xs.append((t.xy[0], max(0.0, px - box.x0 + pad) / frame.width, max(0.0, box.x1 - px + pad) / frame.width))
        ys.append((t.xy[1], max(0.0, py - box.y0 + pad) / frame.height, max(0.0, box.y1 - py + pad) / frame.height))
    ax.set_xlim(_span_for(ax.get_xlim(), xs))
    ax.set_ylim(_span_for(ax.get_ylim(), ys))


def tradeoff_figure(rows: list[dict]):
    """The figure of `tradeoff_plot` (None: nothing to draw)."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "path"
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r.get("size") and "emulated" not in r["flags"]]  # emulated: not latency
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.8))
    colors = {"fp32": "#1f77b4", "int8-dynamic": "#2ca02c", "int8-static": "#d62728"}
    markers = {"onnx": "o", "executorch": "s"}
    labels = []
    for r in pts:
        ax.scatter(r["size"] / 1e6, r["latency_ms"]["p50"], c=colors.get(r["precision"], "#555"),
                   marker=markers.get(r["format"], "^"), s=60)
        acc = r["accuracy"].get("cosine_min")
        label = f"{r['device']} {r['artifact']}" + (f"\ncos {acc:.4f}" if acc is not None else "")
        labels.append(ax.annotate(label, (r["size"] / 1e6, r["latency_ms"]["p50"]), fontsize=7, xytext=(4, 4),
                                  textcoords="offset points"))
    ax.set_xlabel("artifact size (MB)")
    ax.set_ylabel("p50 latency (ms)")
    ax.grid(alpha=0.3)
    _widen(ax, "x", [r["size"] / 1e6 for r in pts])
    _widen(ax, "y", [r["latency_ms"]["p50"] for r in pts])
    _labels_inside(ax, labels)
    handles = [plt.Line2D([], [], color=c, marker="o", linestyle="", label=p) for p, c in colors.items()]
    handles += [plt.Line2D([], [], color="#555", marker=m, linestyle="", label=f) for f, m in markers.items()]
    ax.legend(handles=handles, fontsize=7, loc="best")
    return fig


def tradeoff_plot(rows: list[dict]) -> str | None:
    fig = tradeoff_figure(rows)
    return None if fig is None else _svg(fig)


def accuracy_figure(rows: list[dict]):
    """The figure of `accuracy_plot` (None: nothing to draw)."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "path"
    import matplotlib.pyplot as plt

    from edgeslm.reports.collect import pareto, task_value

    pts = [r for r in rows if task_value(r) is not None]
    if len(pts) < 2:
        return None
    colors = {"fp32": "#1f77b4", "int8-dynamic": "#2ca02c", "int8-static": "#d62728"}
    markers = {"onnx": "o", "executorch": "s"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, cost, label in ((axes[0], "latency", "p50 latency (ms)"), (axes[1], "size", "artifact size (MB)")):
        use = [r for r in pts if cost == "size" or "emulated" not in r["flags"]]

        def x_of(r):
            return r["latency_ms"]["p50"] if cost == "latency" else (r.get("size") or 0) / 1e6

        front = pareto(use, cost)
        labels = []
        for r in use:
            ax.scatter(x_of(r), task_value(r) * 100, c=colors.get(r["precision"], "#555"),
                       marker=markers.get(r["format"], "^"), s=70 if r["key"] in front else 35,
                       edgecolors="black" if r["key"] in front else "none", zorder=3)
            labels.append(ax.annotate(r["recipe"], (x_of(r), task_value(r) * 100), fontsize=6, xytext=(4, 3),
                                      textcoords="offset points"))
        for device in sorted({r["device"] for r in use}):
            line = sorted((x_of(r), task_value(r) * 100) for r in use if r["key"] in front and r["device"] == device)
            if len(line) > 1:
                ax.step([x for x, _ in line], [y for _, y in line], where="post", color="#888", linestyle="--",
                        linewidth=1, zorder=2)
        ax.set_xlabel(label)
        ax.set_ylabel("task metric (%)")
        ax.grid(alpha=0.3)
        _widen(ax, "x", [x_of(r) for r in use])
        values = [task_value(r) * 100 for r in use]
        _widen(ax, "y", values, cap=100.0 if values and max(values) <= 100 else None)
        _labels_inside(ax, labels)
    handles = [plt.Line2D([], [], color=c, marker="o", linestyle="", label=k) for k, c in colors.items()]
    handles += [plt.Line2D([], [], color="#555", marker=m, linestyle="", label=f) for f, m in markers.items()]
    handles.append(plt.Line2D([], [], color="#888", linestyle="--", label="Pareto front"))
    axes[1].legend(handles=handles, fontsize=7, loc="best")
    return fig


def accuracy_plot(rows: list[dict]) -> str | None:
    """Task metric against p50 latency and against size, per variant, with the Pareto front drawn: the
    variants no other one beats on both axes (latency only on real devices; emulated timings are not
    latency)."""
    fig = accuracy_figure(rows)
    return None if fig is None else _svg(fig)


def training_plot(builds: dict) -> str | None:
    """Train and validation loss per epoch of each build's training steps, the kept epoch marked."""
    curves = [(f"{b['recipe']} {t['step']}", t) for b in builds.values() for t in b.get("training") or []
              if len(t["history"]) > 1]
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "path"
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for k, (label, t) in enumerate(curves):
        color = f"C{k % 10}"
        ep = [e["epoch"] for e in t["history"]]
        ax.plot(ep, [e["train_loss"] for e in t["history"]], color=color, linestyle="--", label=f"{label}: train")
        val = [e.get("validation_loss") for e in t["history"]]
        if all(v is not None for v in val):
            ax.plot(ep, val, color=color, marker="o", label=f"{label}: validation")
            if t.get("kept_epoch") in ep:
                i = ep.index(t["kept_epoch"])
                ax.scatter([ep[i]], [val[i]], s=120, facecolors="none", edgecolors="black", zorder=4)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (cross-entropy)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    return _svg(fig)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(report: dict) -> str:
    e = html.escape
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>edgeslm report</title>"
             f"<style>{CSS}</style></head><body><h1>edgeslm profiling report</h1>"]
    comp = report.get("comparison")
    if comp:
        limits = f"; limits: {markdown.limits_text(comp['limits'])}" if comp.get("limits") else ""
        parts.append(('<p>Gate: <span class="fail">FAILED</span>' if comp["failed"]
                      else '<p>Gate: <span class="pass">passed</span>') + e(markdown.partial(comp) + limits) + "</p>")
    if report.get("summary"):
        parts.append("<h2 id=summary>Summary</h2><p>Per device and task, the fastest artifact that passed its check "
                     "on the device (emulated devices: the smallest, their timings are not latency).</p>"
                     + _table(["device", "task", "pick", "p50", "size", "vs fp32", "vs baseline"],
                              [[e(c) for c in row] for row in markdown.summary_rows(report)]))
    by_device: dict[str, list[dict]] = {}
    for r in report["results"]:
        by_device.setdefault(r["device"], []).append(r)
    for device, rs in by_device.items():
        fp = report["devices"][device]
        parts.append(f"<h2 id='device-{e(device)}'>{e(device)}: {e(fp['arch'])}, {e(fp['cpu_model'])}, "
                     f"{fp['cores']} cores</h2>")
        if fp.get("emulated"):
            parts.append(f"<p class=emu>EMULATED ({e(fp['emulated'])}): functional results only; these "
                         "timings are not device latency.</p>")
        rows = []
        for r in rs:
            lat = r["latency_ms"]
            parity = ("<span class=pass>pass</span>" if r["parity"]["passed"] else "<span class=fail>FAIL</span>")
            if r["parity"]["cosine_min"] is not None:
                parity += f" ({r['parity']['cosine_min']:.4f})"
            acc = r["accuracy"]["cosine_min"]
            rows.append([e(r["recipe"]), e(r["target"]), e(r["artifact"]), e(str(r.get("threads", "-"))),
                         e(r["precision"]), markdown.mb(r["size"]),
                         f"{lat['p50']:.2f}", f"{lat['p90']:.2f}", f"{lat['p99']:.2f}", f"{lat['cv'] * 100:.1f}%",
                         markdown.mib(r["peak_rss_kb"]), parity, e(markdown.task_cell(r)),
                         "-" if acc is None else f"{acc:.4f}",
                         f"<span class=flag>{e(', '.join(r['flags']))}</span>" if r["flags"] else "-"])
        parts.append(_table(["recipe", "target", "artifact", "threads", "precision", "size", "p50 ms", "p90 ms", "p99 ms", "CV",
                             "peak RSS", "parity on device", "task metric (device / host)", "cosine (host)", "flags"],
                            rows))
        runtimes = ", ".join(f"{k} {v}" for k, v in (fp.get("runtimes") or {}).items() if v)
        parts.append(f"<p class=muted>kernel {e(str(fp['kernel']))}, Python {e(str(fp['python']))}, "
                     f"{e(runtimes)}</p>")
        svg = latency_plot(rs)
        if svg:
            parts.append(f"<figure class=plot data-plot=latency>{svg}<figcaption>Latency distribution per "
                         f"artifact on {e(device)} (box: quartiles, whiskers: 1st-99th percentile)</figcaption></figure>")
    svg = accuracy_plot(report["results"])
    if svg:
        parts.append(f"<h2>Task accuracy against latency and size</h2><figure class=plot data-plot=accuracy>{svg}"
                     "<figcaption>Task metric (measured on the device where it was, else on the build host) of "
                     "every variant against its p50 latency (real devices only) and its size; outlined points and "
                     "the dashed line: the Pareto front (nothing else is both cheaper and at least as accurate)"
                     "</figcaption></figure>")
    svg = tradeoff_plot(report["results"])
    if svg:
        parts.append(f"<h2>Size, latency and accuracy across variants and devices</h2><figure class=plot "
                     f"data-plot=tradeoff>{svg}<figcaption>p50 latency against artifact size; colour: precision, "
                     "shape: format, label: host cosine vs fp32 PyTorch (emulated devices left out)</figcaption></figure>")
    svg = training_plot(report["builds"])
    if svg:
        parts.append(f"<h2>Training</h2><figure class=plot data-plot=training>{svg}<figcaption>Loss per epoch of each "
                     "build's fine-tuning and recovery: dashed the train split, dots the validation split held out of "
                     "it; circled, the epoch kept (picked on the validation split; the eval split the tables report "
                     "picked nothing)</figcaption></figure>")
    if comp:
        rows = []
        for row in comp["rows"]:
            if not row["checks"]:
                rows.append([e(row["key"]), "-", "-", "-", "-", "-", e(row["status"])])
            for c in row["checks"]:
                status = f"<span class=fail>{c['status']}</span>" if c["status"] == "regressed" else e(c["status"])
                rows.append([e(row["key"]), e(c["metric"]), markdown.value(c["metric"], c["baseline"]),
                             markdown.value(c["metric"], c["current"]), markdown.change_cell(c),
                             markdown.limit_cell(c), status + (f" ({e(c['detail'])})" if c["detail"] else "")])
        parts.append("<h2>Comparison with the baseline</h2>" + _table(
            ["result", "metric", "baseline", "current", "change", "limit", "verdict"], rows))
        if comp["notes"]:
            parts.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in comp["notes"]) + "</ul>")
    skipped = markdown.skipped_files(report)
    if skipped:
        parts.append("<h2>Result files skipped</h2><p>Found in the given folders but not readable as results, so "
                     "left out of this report" + (" and the comparison" if comp else "") + ":</p><ul>" + "".join(
                         f"<li>{e(side)}<code>{e(s['file'])}</code>: {e(s['why'])}</li>" for side, s in skipped)
                     + "</ul>")
    rows = [[e(b["recipe"]), e(b["target"]), f"<code>{e(b['recipe_sha256'][:12])}</code>",
             e(", ".join(f"{k} {v}" for k, v in b["tools"].items()))] for b in report["builds"].values()]
    parts.append("<h2>Builds</h2>" + _table(["recipe", "target", "recipe sha256", "tools"], rows))
    parts.append(f"<p class=units>{e(markdown.UNITS)}</p>")
    parts.append(f"<p class=muted>edgeslm {e(report['edgeslm_version'])}, {e(report['generated_at'])}</p></body></html>")
    return "\n".join(parts)
