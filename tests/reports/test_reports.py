"""Reports rendered from real build manifests and real profile results (committed: tests/reports/golden)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from edgeslm.cli import main
from edgeslm.errors import EXIT_USER
from edgeslm.reports.collect import collect, rows
from edgeslm.reports.model import build_report



def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_rows_join_profiles_with_their_manifest(profiled):
    r = rows(collect([profiled["build"]]))
    assert {x["artifact"] for x in r} == {"onnx", "executorch"}
    for x in r:
        assert x["device"] == "local" and x["recipe"] == "tinydeploy" and x["size"] > 10_000
        assert x["accuracy"]["cosine_min"] > 0.9999 and x["parity"]["passed"]
        assert x["recipe_sha256"] and x["tools"]["torch"].startswith("2.13") and x["fingerprint"]["cpu_model"]
        assert len(x["samples_ms"]) >= 60 and x["latency_ms"]["p50"] > 0


def test_markdown_report(profiled):
    r = cli("report", profiled["build"])
    assert r.exit_code == 0, r.output
    md = r.stdout
    assert "## local: " in md and "| tinydeploy | host | onnx | 1 | fp32 |" in md
    assert "parity on device" in md and "pass (1.0000)" in md
    assert "recipe sha256" in md and "torch 2.13" in md  # recipe hash and tool versions in every report


def test_json_report_schema(profiled, tmp_path):
    out = tmp_path / "r.json"
    assert cli("report", profiled["build"], "--format", "json", "--out", out).exit_code == 0
    data = json.loads(out.read_text())
    assert data["schema"] == "edgeslm.report/1" and data["comparison"] is None
    assert set(data["devices"]["local"]) >= {"arch", "cpu_model", "kernel", "runtimes"}
    row = data["results"][0]
    assert set(row) >= {"device", "recipe", "target", "artifact", "size", "latency_ms", "peak_rss_kb", "parity",
                        "accuracy", "flags", "cache_key"}
    assert "samples_ms" not in row


def test_unprofiled_builds_are_listed(tiny_builds):
    data = build_report(collect([tiny_builds["rpi4"]]))
    assert data["results"] == [] and {b["artifact"] for b in data["unprofiled_builds"]} == {"onnx", "executorch"}


def test_bad_inputs(tmp_path):
    r = CliRunner().invoke(main, ["report", str(tmp_path / "nope")])
    assert r.exit_code == EXIT_USER and "no such file" in r.output
    (tmp_path / "x.json").write_text('{"schema": "other"}')
    r = CliRunner().invoke(main, ["report", str(tmp_path / "x.json")])
    assert r.exit_code == EXIT_USER and "not an edgeslm manifest or profile result" in r.output
