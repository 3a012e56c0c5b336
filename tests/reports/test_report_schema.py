"""The published JSON Schema of the report (edgeslm/data/schemas/report.schema.json, edgeslm.report/1): written by
hand, printed by `edgeslm schema report`, left alone by the generator of the other schemas; real reports (with and
without a comparison, with unprofiled builds and skipped files) are valid against it and broken ones are not."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
from click.testing import CliRunner

from edgeslm.artifacts.schemas import FOLDER, generate, shipped
from edgeslm.cli import main
from edgeslm.reports.collect import collect


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def schema():
    s = json.loads(shipped("report"))
    jsonschema.Draft202012Validator.check_schema(s)
    return s


@pytest.fixture(scope="module")
def reports(profiled, tmp_path_factory):
    """`report --format json` as the command writes it: plain, and gated against a baseline."""
    tmp = tmp_path_factory.mktemp("schema")
    base = tmp / "baseline"
    assert cli("report", profiled["build"], "--save-baseline", base).exit_code == 0
    (base / "profile-damaged.json").write_text('{"schema": "edgeslm.profile/1"')  # a skipped baseline file
    out = {}
    for name, extra in (("plain", ()), ("gated", ("--baseline", base, "--fail-on",
                                                  "latency=+10%,rss=+5%,size=+1%,accuracy=-0.5"))):
        r = cli("report", profiled["build"], "--format", "json", "--out", tmp / f"{name}.json", *extra)
        assert r.exit_code == 0, r.output
        out[name] = json.loads((tmp / f"{name}.json").read_text())
    assert out["plain"]["comparison"] is None and out["gated"]["comparison"]["partial"]
    return out


def test_the_schema_is_shipped_printed_and_not_regenerated(schema):
    r = cli("schema", "report")
    assert r.exit_code == 0 and json.loads(r.output) == schema
    assert schema["$id"] == "edgeslm:edgeslm.report/1" and schema["properties"]["schema"]["const"] == "edgeslm.report/1"
    assert "report" not in generate()  # `python -m edgeslm.artifacts.schemas --write` cannot overwrite it
    assert (FOLDER / "report.schema.json").is_file()


def test_real_reports_are_valid(schema, reports):
    for report in reports.values():
        jsonschema.validate(report, schema)
    comp = reports["gated"]["comparison"]
    assert {c["metric"] for row in comp["rows"] for c in row["checks"]} == {"latency", "rss", "size", "accuracy"}
    assert comp["skipped"]["baseline"]


def test_reports_with_samples_unprofiled_builds_and_a_new_result_are_valid(schema, profiled):
    from edgeslm.reports.gate import compare, parse_fail_on
    from edgeslm.reports.collect import rows
    from edgeslm.reports.model import build_report

    c = collect([profiled["build"]])
    cur, base = rows(c), rows(c)
    base[0]["key"] = "elsewhere"  # the current one is new
    report = json.loads(json.dumps(build_report(c, compare(cur, base, parse_fail_on("size=+1%")))))
    assert report["results"][0]["samples_ms"] and report["comparison"]["rows"][0]["status"] == "new"
    jsonschema.validate(report, schema)
    unprofiled = json.loads(json.dumps(build_report(collect([profiled["build"] / "manifest.json"]))))
    assert unprofiled["results"] == [] and len(unprofiled["unprofiled_builds"]) == 2
    jsonschema.validate(unprofiled, schema)


@pytest.mark.parametrize("path, value, says", [
    (("results", 0, "latency_ms", "p50"), "fast", "is not of type 'number'"),
    (("results", 0, "parity", "passed"), "yes", "is not of type 'boolean'"),
    (("results", 0, "size"), -1, "less than the minimum"),
    (("comparison", "rows", 0, "checks", 0, "status"), "bad", "is not one of"),
    (("comparison", "failed"), None, "is not of type 'boolean'"),
    (("schema",), "edgeslm.report/2", "was expected"),
])
def test_broken_reports_are_not(schema, reports, path, value, says):
    broken = copy.deepcopy(reports["gated"])
    node = broken
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError, match=says):
        jsonschema.validate(broken, schema)


def test_a_missing_part_is_named(schema, reports):
    broken = copy.deepcopy(reports["plain"])
    del broken["results"][0]["latency_ms"]
    with pytest.raises(jsonschema.ValidationError, match="'latency_ms' is a required property"):
        jsonschema.validate(broken, schema)
