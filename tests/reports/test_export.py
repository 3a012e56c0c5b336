"""`report --format csv | junit | github` from real results (tests/reports/golden): what CI systems read back, with
the gate's verdicts, escaped whatever the names hold; the gate's exit code does not depend on the format."""

from __future__ import annotations

import copy
import csv
import io
import json
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner

from edgeslm.cli import main
from edgeslm.errors import EXIT_FAILED
from edgeslm.reports.collect import collect, rows
from edgeslm.reports.export import CSV_COLUMNS, gh_data, gh_property, to_csv, to_github, to_junit
from edgeslm.reports.gate import compare, parse_fail_on
from edgeslm.reports.model import build_report

FORMATS = ["md", "html", "json", "csv", "junit", "github"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def plain(profiled):
    return json.loads(json.dumps(build_report(collect([profiled["build"]]), keep_samples=False)))


@pytest.fixture(scope="module")
def gated(profiled):
    """A report whose every result is 50% slower than the baseline (latency regressed; size and accuracy ok)."""
    c = collect([profiled["build"]])
    base = rows(c)
    for b in base:
        b["samples_ms"] = [s / 1.5 for s in b["samples_ms"]]
        b["run_p50s"] = [p / 1.5 for p in b["run_p50s"]]
        b["latency_ms"]["p50"] /= 1.5
    comp = compare(rows(c), base, parse_fail_on("latency=+10%,size=+1%,accuracy=-0.5"))
    report = json.loads(json.dumps(build_report(c, comp, keep_samples=False)))
    assert [r["status"] for r in report["comparison"]["rows"]] == ["regressed", "regressed"]
    return report


def with_parity_failed(report: dict) -> dict:
    report = copy.deepcopy(report)
    report["results"][0]["parity"]["passed"] = False
    return report


def test_csv_parses_back_with_the_figures(plain, gated):
    for report, gate in ((plain, ["", ""]), (gated, ["regressed", "regressed"])):
        got = list(csv.DictReader(io.StringIO(to_csv(report))))
        assert list(got[0]) == list(CSV_COLUMNS) and [g["gate"] for g in got] == gate
        for g, r in zip(got, report["results"]):
            assert [g[k] for k in ("key", "device", "artifact", "format")] == [r[k] for k in ("key", "device",
                                                                                        "artifact", "format")]
            assert int(g["size_bytes"]) == r["size"] and int(g["threads"]) == r["threads"] == 1
            assert float(g["p50_ms"]) == r["latency_ms"]["p50"] and float(g["p99_ms"]) == r["latency_ms"]["p99"]
            assert float(g["cv"]) == r["latency_ms"]["cv"] and int(g["runs"]) == r["runs"]
            assert float(g["peak_rss_kib"]) == r["peak_rss_kb"] and g["parity_passed"] == "true"
            assert g["flags"] == ";".join(r["flags"]) == "noisy" and g["task_metric"] == g["task_host"] == ""
    odd = copy.deepcopy(plain)
    odd["results"][0].update(key='a,"b"\nc', flags=["noisy", "busy"])
    got = list(csv.DictReader(io.StringIO(to_csv(odd))))
    assert got[0]["key"] == 'a,"b"\nc' and got[0]["flags"] == "noisy;busy" and len(got) == 2


def junit(report: dict) -> dict:
    root = ET.fromstring(to_junit(report))
    assert root.tag == "testsuites"
    return {s.get("name"): s for s in root}, root


def cases(suite) -> dict:
    return {c.get("name"): c for c in suite.iter("testcase")}


def test_junit_has_a_failure_per_regression_and_failed_parity(plain, gated):
    suites, root = junit(plain)
    assert list(suites) == ["local"] and root.get("failures") == "0"
    assert set(cases(suites["local"])) == {f"{r['key']} parity" for r in plain["results"]}

    report = with_parity_failed(gated)
    assert report["comparison"]["rows"][0]["checks"][2]["metric"] == "accuracy"  # as the gate says a failed parity
    report["comparison"]["rows"][0]["checks"][2].update(status="regressed", change=None,
                                                        detail="on-device parity check failed")
    report["comparison"]["rows"][1]["checks"][0].update(status="inconclusive", detail="straddles")
    report["comparison"]["rows"][1]["checks"][1].update(status="n/a", change=None)
    suites, root = junit(report)
    local = suites["local"]
    c = cases(local)
    first, second = (r["key"] for r in report["results"])
    assert set(c) == {f"{k} {m}" for k in (first, second) for m in ("parity", "latency", "size", "accuracy")}
    fail = c[f"{first} latency"].find("failure")
    assert fail is not None and fail.get("type") == "regression"
    assert f"{first} latency +50.0% exceeds +10.0% (95% interval" in fail.get("message")
    assert c[f"{first} parity"].find("failure") is not None
    assert "on-device parity check failed" in c[f"{first} parity"].find("failure").get("message")
    assert c[f"{first} accuracy"].find("failure").get("message").startswith(f"{first} accuracy regressed")
    for name in (f"{second} latency", f"{second} size", f"{second} parity"):  # inconclusive, n/a: passing tests
        assert c[name].find("failure") is None and c[name].find("skipped") is None
        assert c[name].find("system-out").text
    assert "inconclusive" in c[f"{second} latency"].find("system-out").text
    assert "not compared" in c[f"{second} size"].find("system-out").text
    failures = sum(1 for x in c.values() if x.find("failure") is not None)
    assert failures == 3 and local.get("failures") == root.get("failures") == "3"
    assert local.get("tests") == root.get("tests") == str(len(c)) == "8"


def test_junit_escapes_what_names_hold(gated):
    report = copy.deepcopy(gated)
    bad = 'dev<&>"\x01\n'
    report["results"][0]["device"] = bad
    report["results"][0]["key"] = report["comparison"]["rows"][0]["key"] = bad + "/r"
    suites, _ = junit(report)
    assert "dev<&>\"\ufffd\n" in suites and "dev<&>\"\ufffd\n/r latency" in cases(suites["dev<&>\"\ufffd\n"])


def commands(text: str) -> list[str]:
    lines = text.split("\n")
    assert lines[-1] == "" and all(ln.startswith("::") for ln in lines[:-1]), text  # one command a line
    return lines[:-1]


def test_github_annotations(plain, gated):
    out = commands(to_github(plain))
    assert out[-1] == "::notice title=edgeslm report::2 result(s) on 1 device(s); no baseline given, not gated"
    assert sum(ln.startswith("::warning title=edgeslm noisy::") for ln in out) == 2  # both are flagged noisy
    assert not [ln for ln in out if ln.startswith("::error")]

    out = commands(to_github(with_parity_failed(gated)))
    first = gated["results"][0]["key"]
    errors = [ln for ln in out if ln.startswith("::error")]
    assert f"::error title=edgeslm parity::{first}: on-device parity check failed (cosine_min 1.0000)" in errors
    start = f"::error title=edgeslm gate::{first} latency +50.0%25 exceeds +10.0%25 ("
    gate = [ln for ln in errors if ln.startswith(start)]
    assert len(gate) == 1 and "95%25 interval" in gate[0]  # '%' escaped
    assert out[-1].startswith("::notice title=edgeslm gate::gate FAILED: regression in ")
    shaky = copy.deepcopy(gated)
    for row in shaky["comparison"]["rows"]:
        row["status"] = "inconclusive"
        row["checks"][0]["status"] = "inconclusive"
    out = commands(to_github(shaky))
    assert not [ln for ln in out if ln.startswith("::error")]
    assert sum(ln.startswith("::warning title=edgeslm gate::") and " inconclusive against +10.0%25" in ln
               for ln in out) == 2


def test_github_escapes_keys_and_details(gated):
    report = copy.deepcopy(gated)
    key = "local/50%\r\nevil::error title=x::y"
    report["results"][0]["key"] = report["comparison"]["rows"][0]["key"] = key
    report["comparison"]["rows"][0]["checks"][0]["detail"] = "100%\nsure, really: yes"
    report["comparison"]["notes"] = ["note\nwith a line break"]
    report["skipped"] = [{"file": "a\nb.json", "why": "50% cut"}]
    out = commands(to_github(with_parity_failed(report)))
    escaped = "local/50%25%0D%0Aevil::error title=x::y"
    assert any(ln.startswith(f"::error title=edgeslm gate::{escaped} latency +50.0%25 exceeds")
               and "100%25%0Asure, really: yes" in ln for ln in out), out
    assert f"::error title=edgeslm parity::{escaped}: on-device parity check failed (cosine_min 1.0000)" in out
    assert "::notice title=edgeslm gate::note%0Awith a line break" in out
    assert "::warning title=edgeslm skipped result::a%0Ab.json: 50%25 cut" in out
    assert gh_data("a%b\r\nc") == "a%25b%0D%0Ac" and gh_property("t: a, b%\n") == "t%3A a%2C b%25%0A"


def slowed(profiled, tmp_path, scale: float):
    folder = tmp_path / f"x{scale}"
    shutil.copytree(profiled["build"], folder)
    for f in (folder / "profiles").rglob("*.json"):
        data = json.loads(f.read_text())
        data["samples_ms"] = [s * scale for s in data["samples_ms"]]
        data["latency_ms"]["p50"] = float(np.median(data["samples_ms"]))
        f.write_text(json.dumps(data))
    return folder


def test_the_gate_exits_the_same_in_every_format(profiled, tmp_path):
    base = tmp_path / "baseline"
    assert cli("report", profiled["build"], "--save-baseline", base).exit_code == 0
    worse = slowed(profiled, tmp_path, 1.5)
    for fmt in FORMATS:
        r = cli("report", worse, "--baseline", base, "--fail-on", "latency=+10%", "--format", fmt)
        assert r.exit_code == EXIT_FAILED and "gate failed" in r.stderr, (fmt, r.output)
    for fmt in ("csv", "junit", "github"):
        r = cli("report", profiled["build"], "--baseline", base, "--format", fmt, "--out", tmp_path / f"r.{fmt}")
        assert r.exit_code == 0 and "gate passed" in r.stderr, (fmt, r.output)
    assert ET.parse(tmp_path / "r.junit").getroot().get("failures") == "0"
    assert {row["gate"] for row in csv.DictReader((tmp_path / "r.csv").open())} == {"ok"}
    r = cli("report", worse, "--baseline", base, "--fail-on", "latency=+10%", "--format", "github")
    assert all(ln.startswith("::") for ln in r.stdout.splitlines() if ln), r.stdout  # stdout: commands only


def test_help_describes_every_format():
    r = cli("report", "--help")
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    for fmt in FORMATS:
        assert f"{fmt}:" in text, fmt
    assert "--out" in text and "junit.xml" in text


def test_csv_keeps_a_formula_looking_name_as_text(plain):
    """A device or recipe name a spreadsheet would run as a formula comes out as text; figures stay numbers."""
    report = copy.deepcopy(plain)
    report["results"][0]["device"] = "=HYPERLINK(\"http://x\")"
    report["results"][0]["recipe"] = "-cmd"
    row = next(csv.DictReader(io.StringIO(to_csv(report))))
    assert row["device"] == "'=HYPERLINK(\"http://x\")" and row["recipe"] == "'-cmd"
    assert float(row["p50_ms"]) == report["results"][0]["latency_ms"]["p50"]
