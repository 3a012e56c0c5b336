"""The report (edgeslm.report/1, model.build_report) for machines: CSV rows, JUnit XML, GitHub Actions commands.

    csv     one row per result, the columns of CSV_COLUMNS in that order (always all of them: `gate` is empty
            without a baseline)
    junit   one <testsuite> per device: a <testcase> per result for its on-device parity check and, with a
            baseline, one per gate check ("<key> latency"); regressed checks and failed parity are <failure>s,
            inconclusive and n/a checks pass and say why in <system-out>
    github  workflow commands (::error / ::warning / ::notice) that GitHub Actions turns into annotations

Each renders from the report dict alone; none decides the gate (the command's exit code does, the same for
every format).
"""

from __future__ import annotations

import csv
import io
import re

from edgeslm.contract import NOISY_CV
from edgeslm.reports import markdown

CSV_COLUMNS = ("key", "device", "recipe", "target", "artifact", "threads", "format", "precision", "runtime",
               "size_bytes", "p50_ms", "p90_ms", "p99_ms", "cv", "runs", "peak_rss_kib", "parity_passed",
               "task_metric", "task_device", "task_host", "flags", "gate")
WARN_FLAGS = {  # result flags that make its figures less trustworthy: a warning each in the github format
    "noisy": f"latency varied a lot between runs (CV above {NOISY_CV:.0%})",
    "busy": "other processes or the hypervisor took CPU time during the timed runs",
    "partial": "measuring stopped before the planned runs (time budget or interrupted)",
    "throttled": "the CPU was throttled or its frequency capped",
}


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v  # text a spreadsheet would run as a formula (names come from devices and recipes): kept text
    return str(v)


def to_csv(report: dict) -> str:
    """One row per result; a header row first. Numbers in full precision and their base units (bytes, ms, KiB,
    cv a fraction); empty = unknown; flags joined with ';'; `gate`: the result's status in the comparison
    (ok, regressed, inconclusive, new), empty without one."""
    gate = {r["key"]: r["status"] for r in (report.get("comparison") or {}).get("rows", [])}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in report["results"]:
        lat, task = r["latency_ms"], r.get("task") or {}
        w.writerow(map(_cell, (
            r["key"], r["device"], r["recipe"], r["target"], r["artifact"], r.get("threads"), r["format"],
            r["precision"], r["runtime"], r.get("size"), lat["p50"], lat["p90"], lat["p99"], lat["cv"], r["runs"],
            r["peak_rss_kb"], r["parity"]["passed"], task.get("metric"), task.get("device"), task.get("host"),
            ";".join(r["flags"]), gate.get(r["key"]))))
    return buf.getvalue()


def check_line(key: str, c: dict) -> str:
    """What a gate check found, in one line: '<key> latency +15.0% exceeds +10.0% (detail; baseline 1.20 ms,
    current 1.38 ms)'."""
    metric, status = c["metric"], c["status"]
    change, limit = markdown.change_cell(c), markdown.limit_cell(c)
    if status == "n/a":
        verdict = "not compared (no value on one side)"
    elif c["change"] is None:
        verdict = status
    elif status == "regressed":
        verdict = f"{change} below {limit}" if metric == "accuracy" else f"{change} exceeds {limit}"
    elif status == "inconclusive":
        verdict = f"{change} inconclusive against {limit}: the measured spread straddles the limit (not failing)"
    else:
        verdict = f"{change} {'within' if status == 'ok' else 'improved, limit'} {limit}"
    values = f"baseline {markdown.value(metric, c['baseline'])}, current {markdown.value(metric, c['current'])}"
    return f"{key} {metric} {verdict} ({'; '.join(x for x in (c.get('detail'), values) if x)})"


def parity_line(r: dict) -> str:
    cos = r["parity"].get("cosine_min")
    return f"{r['key']}: on-device parity check failed" + ("" if cos is None else f" (cosine_min {cos:.4f})")


def verdict_line(report: dict) -> str:
    comp = report.get("comparison")
    n = len(report["results"])
    if comp is None:
        return f"{n} result(s) on {len(report['devices'])} device(s); no baseline given, not gated"
    bad = [r["key"] for r in comp["rows"] if r["status"] == "regressed"]
    shaky = [r["key"] for r in comp["rows"] if r["status"] == "inconclusive"]
    text = (f"gate FAILED: regression in {', '.join(bad)}" if bad else "gate passed") + markdown.partial(comp)
    return text + (f"; inconclusive (within noise, not failing): {', '.join(shaky)}" if shaky else "")


# --- JUnit XML ---------------------------------------------------------------------------------------------------

_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")  # not allowed in XML 1.0


def _x(text) -> str:
    """Text XML 1.0 can carry (ElementTree escapes <, &, quotes but writes control characters as they are)."""
    return _NOT_XML.sub("\ufffd", str(text))


def to_junit(report: dict) -> str:
    import xml.etree.ElementTree as ET

    comp = report.get("comparison")
    device_of = {r["key"]: r["device"] for r in report["results"]}
    suites: dict[str, list] = {}  # device -> [(test name, failure type | None, message)]
    for r in report["results"]:
        cos = r["parity"].get("cosine_min")
        passed = "on-device parity passed" + ("" if cos is None else f" (cosine_min {cos:.4f})")
        suites.setdefault(r["device"], []).append(
            (f"{r['key']} parity", None, passed) if r["parity"]["passed"] else (f"{r['key']} parity", "parity",
                                                                                   parity_line(r)))
    for row in (comp or {}).get("rows", []):
        cases = suites.setdefault(device_of.get(row["key"], row["key"].split("/", 1)[0]), [])
        if not row["checks"]:
            cases.append((f"{row['key']} gate", None, f"{row['key']}: {row['status']}: no baseline entry, not "
                          "compared"))
        for c in row["checks"]:
            cases.append((f"{row['key']} {c['metric']}", "regression" if c["status"] == "regressed" else None,
                          check_line(row["key"], c)))
    root = ET.Element("testsuites", name="edgeslm report")
    total = failures = 0
    for device, cases in suites.items():
        bad = sum(1 for _, failed, _ in cases if failed)
        suite = ET.SubElement(root, "testsuite", name=_x(device), tests=str(len(cases)), failures=str(bad),
                              errors="0", skipped="0")
        for name, failed, message in cases:
            case = ET.SubElement(suite, "testcase", name=_x(name), classname=_x(f"edgeslm.{device}"))
            if failed:
                ET.SubElement(case, "failure", message=_x(message), type=failed).text = _x(message)
            else:  # passed, inconclusive and n/a checks included: a passing test that says what it found
                ET.SubElement(case, "system-out").text = _x(message)
        total, failures = total + len(cases), failures + bad
    root.set("tests", str(total))
    root.set("failures", str(failures))
    root.set("errors", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# --- GitHub Actions workflow commands ----------------------------------------------------------------------------

def gh_data(text: str) -> str:
    """A workflow command's message, escaped as GitHub's runner reads it back."""
    return str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def gh_property(text: str) -> str:
    """A workflow command's property value (title=...): ':' and ',' escaped too."""
    return gh_data(text).replace(":", "%3A").replace(",", "%2C")


def _command(kind: str, title: str, message: str) -> str:
    return f"::{kind} title={gh_property(title)}::{gh_data(message)}"


def to_github(report: dict) -> str:
    """::error per regressed check and per failed on-device parity check, ::warning per inconclusive check, per
    result flagged noisy/busy/partial/throttled and per skipped result file, ::notice per comparison note and
    one with the overall verdict (last)."""
    from edgeslm.reports.gate import skipped_note

    out = []
    comp = report.get("comparison") or {}
    for r in report["results"]:
        if not r["parity"]["passed"]:
            out.append(_command("error", "edgeslm parity", parity_line(r)))
    for row in comp.get("rows", []):
        for c in row["checks"]:
            if c["status"] in ("regressed", "inconclusive"):
                kind = "error" if c["status"] == "regressed" else "warning"
                out.append(_command(kind, "edgeslm gate", check_line(row["key"], c)))
    for r in report["results"]:
        for flag in r["flags"]:
            if flag in WARN_FLAGS:
                out.append(_command("warning", f"edgeslm {flag}", f"{r['key']}: flagged {flag}: {WARN_FLAGS[flag]}"))
    for side, s in markdown.skipped_files(report):
        out.append(_command("warning", "edgeslm skipped result", f"{side}{s['file']}: {s['why']}"))
    # notes about skipped files are the warnings above
    skipped = {skipped_note(side, s) for side, files in (comp.get("skipped") or {}).items() for s in files}
    out += [_command("notice", "edgeslm gate", n) for n in comp.get("notes", []) if n not in skipped]
    out.append(_command("notice", "edgeslm gate" if report.get("comparison") else "edgeslm report",
                        verdict_line(report)))
    return "\n".join(out) + "\n"


RENDERERS = {"csv": to_csv, "junit": to_junit, "github": to_github}
