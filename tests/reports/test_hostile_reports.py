"""Reports and the gate with hostile inputs: a poisoned result file is skipped and named (not a crash, not a
silent pass), files named on the command line stay errors, unknown schema versions are refused, and
--save-baseline replaces only a folder that holds nothing else this command reads or writes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeslm.cli import main
from edgeslm.errors import EXIT_USER



def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(r, *words):
    assert r.exit_code == EXIT_USER, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: ") and "internal error" not in r.output, r.output
    for w in words:
        assert w in lines[-1], r.output


def copy_build(profiled, tmp_path: Path, name: str = "build") -> Path:
    folder = tmp_path / name
    shutil.copytree(profiled["build"], folder)
    return folder


def poison(build: Path) -> dict[str, str]:
    """Unreadable results where a report looks for them: {file name: a word of why}."""
    results = build / "profiles" / "local"
    (results / "deep.json").write_text("[" * 100_000 + "]" * 100_000)  # RecursionError in json.loads
    os.mkfifo(results / "fifo.json")  # would block a plain open()
    os.symlink("/dev/zero", results / "zero.json")  # would never end
    (results / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    newer = json.loads(next(results.glob("*-onnx.json")).read_text())
    newer["schema"] = "edgeslm.profile/7"
    (results / "newer.json").write_text(json.dumps(newer))
    wrong = dict(newer, schema="edgeslm.profile/1", latency_ms={**newer["latency_ms"], "p50": "fast"})
    (results / "typed.json").write_text(json.dumps(wrong))
    return {"deep.json": "nested deeper", "fifo.json": "FIFO", "zero.json": "outside",
            "binary.json": "UTF-8", "newer.json": "another edgeslm version", "typed.json": "latency_ms.p50"}


def test_a_poisoned_result_is_skipped_and_named_in_every_format(profiled, tmp_path):
    build = copy_build(profiled, tmp_path)
    bad = poison(build)
    r = cli("report", build)
    assert r.exit_code == 0, r.output
    assert "| tinydeploy | host | onnx | 1 | fp32 |" in r.stdout  # the readable results are reported
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning: skipped")]
    assert len(warnings) == len(bad), r.stderr
    for name, why in bad.items():
        line = next(ln for ln in warnings if f"/{name}:" in ln)
        assert why in line, line
        assert name in r.stdout.split("## Result files skipped", 1)[1]
    out = tmp_path / "r.json"
    assert cli("report", build, "--format", "json", "--out", out).exit_code == 0
    skipped = json.loads(out.read_text())["skipped"]
    assert sorted(Path(s["file"]).name for s in skipped) == sorted(bad)
    assert all(s["why"] for s in skipped)
    html = tmp_path / "r.html"
    assert cli("report", build, "--format", "html", "--out", html).exit_code == 0
    assert "Result files skipped" in html.read_text() and "deep.json" in html.read_text()


def test_an_unreadable_file_named_on_the_command_line_is_an_error(profiled, tmp_path):
    build = copy_build(profiled, tmp_path)
    poison(build)
    results = build / "profiles" / "local"
    one_line_error(cli("report", results / "deep.json"), "deep.json", "nested deeper")
    one_line_error(cli("report", results / "fifo.json"), "fifo.json", "FIFO")
    one_line_error(cli("report", results / "newer.json"), "newer.json", "edgeslm.profile/7", "another edgeslm version")
    one_line_error(cli("report", results / "typed.json"), "typed.json", "latency_ms.p50 is not")


def test_the_gate_names_skipped_results_and_says_it_stands_on_partial_data(profiled, tmp_path):
    build = copy_build(profiled, tmp_path)
    base = tmp_path / "baseline"
    assert cli("report", build, "--save-baseline", base).exit_code == 0
    (base / "profile-local-damaged-0.json").write_text('{"schema": "edgeslm.profile/1", "build": ')
    (build / "profiles" / "local" / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    r = cli("report", build, "--baseline", base, "--fail-on", "size=+1%")
    assert r.exit_code == 0, r.output
    assert "Gate: passed (on partial data: 1 current result file(s) skipped, 1 baseline result file(s) skipped)" \
        in r.stdout
    notes = r.stdout.split("## Comparison with the baseline", 1)[1]
    assert "current result skipped (unreadable, not compared):" in notes and "deep.json" in notes
    assert "baseline result skipped (unreadable, not compared):" in notes and "profile-local-damaged-0.json" in notes
    assert "gate passed on partial data" in r.stderr and "warning: skipped baseline " in r.stderr
    out = tmp_path / "g.json"
    assert cli("report", build, "--baseline", base, "--fail-on", "size=+1%", "--format", "json", "--out", out).exit_code == 0
    comp = json.loads(out.read_text())["comparison"]
    assert comp["partial"] and [Path(s["file"]).name for s in comp["skipped"]["baseline"]] == ["profile-local-damaged-0.json"]


def test_unknown_schema_versions_are_refused(profiled, tmp_path):
    from edgeslm.artifacts.manifest import Manifest, load_manifest
    from edgeslm.errors import ConfigError

    build = copy_build(profiled, tmp_path)
    m = json.loads((build / "manifest.json").read_text())
    assert Manifest.from_json(Manifest.from_json(json.dumps(m)).to_json()).to_json() == Manifest.from_json(
        json.dumps(m)).to_json()  # round-trips
    (build / "manifest.json").write_text(json.dumps({**m, "schema": "edgeslm.manifest/9"}))
    with pytest.raises(ConfigError) as info:
        load_manifest(build)  # deploy, profile and run read build folders through this
    assert info.value.key == "schema" and "edgeslm.manifest/9" in str(info.value) and "rebuild" in str(info.value)
    one_line_error(cli("report", build / "manifest.json"), "manifest.json", "edgeslm.manifest/9",
                   "another edgeslm version", "rebuild")
    r = cli("report", build)  # in a folder: skipped and named; the profile results are still reported
    assert r.exit_code == 0 and "edgeslm.manifest/9" in r.stderr and "manifest.json" in r.stderr, r.output

    report = tmp_path / "report.json"
    assert cli("report", profiled["build"], "--format", "json", "--out", report).exit_code == 0
    one_line_error(cli("report", report), "is an edgeslm report", "not a result")
    base = tmp_path / "baseline"
    assert cli("report", profiled["build"], "--save-baseline", base).exit_code == 0
    marker = base / ".edgeslm-baseline.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "schema": "edgeslm.baseline/5"}))
    one_line_error(cli("report", profiled["build"], "--baseline", base), ".edgeslm-baseline.json",
                   "edgeslm.baseline/5", "another edgeslm version")
    one_line_error(cli("report", profiled["build"], "--save-baseline", base), "edgeslm.baseline/5")
    assert json.loads(marker.read_text())["schema"] == "edgeslm.baseline/5"  # left as it was


def listing(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_save_baseline_never_deletes_a_report_the_cwd_or_an_input(profiled, tmp_path, monkeypatch):
    build = copy_build(profiled, tmp_path)
    bl1 = tmp_path / "bl1"
    assert cli("report", build, "--save-baseline", bl1).exit_code == 0
    before = listing(bl1)
    # the report inside the folder being replaced: refused before it is written (it used to be written,
    # announced, then deleted by the swap)
    r = cli("report", build, "--out", bl1 / "report.md", "--save-baseline", bl1)
    one_line_error(r, "--out", "report.md", "write the report elsewhere")
    assert "report written" not in r.output and listing(bl1) == before
    fresh = tmp_path / "fresh"
    one_line_error(cli("report", build, "--out", fresh / "report.md", "--save-baseline", fresh), "--out")
    assert not fresh.exists()
    # the folder being replaced holds an input of this command
    one_line_error(cli("report", bl1, "--save-baseline", bl1), "which this command reads")
    one_line_error(cli("report", build, "--baseline", bl1, "--save-baseline", bl1), "which this command reads")
    assert listing(bl1) == before
    # the current folder, and a folder holding it ('.' used to exit 70: an empty name; '..' EBUSY)
    monkeypatch.chdir(bl1)
    one_line_error(cli("report", build, "--save-baseline", "."), "is the current folder or holds it")
    (bl1 / "sub").mkdir()
    monkeypatch.chdir(bl1 / "sub")
    one_line_error(cli("report", build, "--save-baseline", ".."), "is the current folder or holds it")
    monkeypatch.chdir(tmp_path)
    (bl1 / "sub").rmdir()
    assert listing(bl1) == before
    # a file the user put into a baseline is not deleted with it
    (bl1 / "notes.txt").write_text("mine")
    one_line_error(cli("report", build, "--save-baseline", bl1), "holds notes.txt", "edgeslm did not write")
    assert (bl1 / "notes.txt").read_text() == "mine"
    (bl1 / "notes.txt").unlink()


def test_save_baseline_resolves_dots_slashes_and_links(profiled, tmp_path, monkeypatch):
    build = copy_build(profiled, tmp_path)
    bl1 = tmp_path / "bl1"
    assert cli("report", build, "--save-baseline", bl1).exit_code == 0
    (tmp_path / "x").mkdir()
    for spelled in (f"{bl1}/", f"{bl1}/.", f"{tmp_path}/x/../bl1"):
        r = cli("report", build, "--save-baseline", spelled)
        assert r.exit_code == 0 and "baseline saved to" in r.stderr, r.output
        assert (bl1 / ".edgeslm-baseline.json").is_file()
    link = tmp_path / "current"
    link.symlink_to(bl1)  # a link to the baseline (refused before): the baseline it points to is replaced
    marker = json.loads((bl1 / ".edgeslm-baseline.json").read_text())
    r = cli("report", build, "--save-baseline", link)
    assert r.exit_code == 0, r.output
    assert link.is_symlink() and link.resolve() == bl1.resolve()
    assert json.loads((bl1 / ".edgeslm-baseline.json").read_text())["names"] == marker["names"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary siblings left
    r = cli("report", build, "--baseline", link)
    assert r.exit_code == 0 and "Gate: passed" in r.stdout, r.output


def test_a_recipe_threshold_that_cannot_be_read_names_its_build(profiled, tmp_path):
    """gate.fail_on stored in a manifest (e.g. by an older edgeslm that read '-10%' as '+10%'): refused in
    one line naming the recipe and the key, with the fix."""
    build = copy_build(profiled, tmp_path)
    base = tmp_path / "baseline"
    assert cli("report", build, "--save-baseline", base).exit_code == 0
    m = json.loads((build / "manifest.json").read_text())
    m["recipe"]["content"]["gate"] = {"fail_on": "latency=-10%"}
    (build / "manifest.json").write_text(json.dumps(m))
    one_line_error(cli("report", build, "--baseline", base), "recipe tinydeploy", "gate.fail_on latency=-10%",
                   "limits an increase", "give --fail-on")
    assert cli("report", build, "--baseline", base, "--fail-on", "size=+1%").exit_code == 0


def test_the_report_never_overwrites_a_result_it_reads(profiled, tmp_path):
    build = copy_build(profiled, tmp_path)
    manifest = (build / "manifest.json").read_bytes()
    one_line_error(cli("report", build, "--format", "json", "--out", build / "manifest.json"), "--out",
                   "is one of the results this report reads")
    assert (build / "manifest.json").read_bytes() == manifest
