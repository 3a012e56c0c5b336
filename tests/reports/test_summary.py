"""The report's summary (the artifact to pick per device and task, against fp32 and the baseline), a gate that
never judges emulated latency and says when the spread is wider than its limit, and pooling that keeps runs
of other settings apart and flags disagreeing runs."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from edgeslm.cli import main
from edgeslm.reports.collect import collect, rows
from edgeslm.reports.gate import compare, parse_fail_on
from edgeslm.reports.model import build_report
from test_gate import variant


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _edit_runs(scale_by_artifact: dict, precision: dict):
    def edit(r):
        art = r["artifact"]["name"]
        r["samples_ms"] = [s * scale_by_artifact[art] for s in r["samples_ms"]]
        for k in ("p50", "p90", "p99", "mean", "min", "max", "stdev"):
            r["latency_ms"][k] *= scale_by_artifact[art]
        r["artifact"]["precision"] = precision[art]
        if precision[art] != "fp32":
            r["artifact"]["size"] = r["artifact"]["size"] // 4
    return edit


def test_summary_picks_the_fastest_passing_artifact_against_fp32_and_the_baseline(profiled, tmp_path):
    folder = variant(profiled, tmp_path, "int8", _edit_runs({"onnx": 0.5, "executorch": 1.0},
                                                              {"onnx": "int8-dynamic", "executorch": "fp32"}))
    # the fp32 reference must share the pick's format: give the ONNX row an fp32 twin at another recipe
    twin = variant(profiled, tmp_path, "fp32", _edit_runs({"onnx": 1.0, "executorch": 1.0},
                                                            {"onnx": "fp32", "executorch": "fp32"}))
    for f in (twin / "profiles").rglob("*.json"):
        d = json.loads(f.read_text())
        d["build"]["recipe"] = "tinydeploy-fp32"
        f.write_text(json.dumps(d))
    report = build_report(collect([folder, twin]))
    (s,) = report["summary"]
    assert s["device"] == "local" and s["task"] == "embedding" and s["ranked_by"] == "p50 latency"
    assert s["best"]["artifact"] == "onnx" and s["best"]["precision"] == "int8-dynamic"
    assert abs(s["vs_fp32"]["speedup"] - 2.0) < 0.05 and abs(s["vs_fp32"]["size_ratio"] - 0.25) < 0.01
    r = cli("report", folder, twin)
    head = r.stdout.split("## Summary", 1)[1].split("##", 1)[0]
    assert "| local | embedding | onnx int8-dynamic" in head and "2.00x faster, 0.25x size" in head


def test_emulated_latency_is_never_gated_and_a_wide_spread_is_called_out(profiled, tmp_path):
    base = rows(collect([profiled["build"]]))
    slow = json.loads(json.dumps(base))
    for r in slow:
        r["samples_ms"] = [s * 3 for s in r["samples_ms"]]
        r["latency_ms"]["p50"] *= 3
        r["fingerprint"]["emulated"] = "qemu-aarch64:cortex-a72"
    c = compare(slow, base, parse_fail_on("latency=+10%"))
    assert not c.failed and {x.status for row in c.rows for x in row["checks"]} == {"n/a"}
    assert "emulated device, whose timings are not device latency" in c.rows[0]["checks"][0].detail

    rng = np.random.default_rng(0)
    noisy = json.loads(json.dumps(base))
    for b, n in zip(base, noisy):
        med = np.median(b["samples_ms"])
        for side in (b, n):
            side["samples_ms"] = list(rng.normal(med, med * 0.5, 30).clip(min=med * 0.1))
            side["latency_ms"]["p50"] = float(np.median(side["samples_ms"]))
    c = compare(noisy, base, parse_fail_on("latency=+10%"))
    detail = c.rows[0]["checks"][0].detail
    assert "is wider than the limit (+10.0%): this check cannot pass" in detail
    assert any("spread too wide for the +10% limit" in n for n in c.notes)
    assert c.to_json()["limits"] == {"latency": 0.1}


def test_runs_of_other_settings_are_not_pooled_and_disagreeing_runs_are_flagged(profiled, tmp_path):
    folder = variant(profiled, tmp_path, "pooled", lambda r: None)
    runs = sorted((folder / "profiles").rglob("*-onnx.json"))
    d = json.loads(runs[0].read_text())
    for i, (scale, seq) in enumerate(((1.6, 64), (1.0, 32))):  # a slower re-run, and a run at another length
        e = json.loads(json.dumps(d))
        e["started_at"] = f"2026-12-0{i + 1}T00:00:00+00:00"
        e["samples_ms"] = [s * scale for s in e["samples_ms"]]
        e["latency_ms"]["p50"] *= scale
        e["settings"]["seq_len"] = seq
        e["flags"] = []
        (runs[0].parent / f"extra-{i}-onnx.json").write_text(json.dumps(e))
    (row,) = [r for r in rows(collect([folder])) if r["artifact"] == "onnx"]
    assert row["runs"] == 2 and row["runs_not_pooled"] == 1 and row["settings"]["seq_len"] == 64
    assert "noisy" in row["flags"]
