"""The gate: regressions beyond thresholds fail, noise within the spread passes, mismatches are clear."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeslm.cli import main
from edgeslm.errors import EXIT_FAILED, EXIT_USER, UserError
from edgeslm.reports.gate import compare, parse_fail_on



def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def variant(profiled, tmp_path: Path, name: str, edit) -> Path:
    """A copy of the real results (and their manifest) with `edit(result)` applied to each profile."""
    folder = tmp_path / name
    shutil.copytree(profiled["build"], folder)
    for f in (folder / "profiles").rglob("*.json"):
        data = json.loads(f.read_text())
        edit(data)
        f.write_text(json.dumps(data))
    return folder


def resample(scale: float, seed: int):
    """Same latency distribution (bootstrap of the real samples) times `scale`: a re-run or a slowdown."""
    def edit(r):
        rng = np.random.default_rng(seed)
        s = np.asarray(r["samples_ms"])
        r["samples_ms"] = (rng.choice(s, size=s.size) * scale).tolist()
        r["latency_ms"]["p50"] = float(np.median(r["samples_ms"]))
    return edit


def test_rerun_within_noise_passes_and_slowed_build_fails(profiled, tmp_path):
    base = tmp_path / "baseline"
    assert cli("report", profiled["build"], "--save-baseline", base).exit_code == 0
    results = list((profiled["build"] / "profiles").rglob("*.json"))  # other tests may add runs of this build
    assert len(list(base.glob("profile-*.json"))) == len(results) >= 2
    assert len(list(base.glob("manifest-*.json"))) == 1
    rerun = variant(profiled, tmp_path, "rerun", resample(1.0, 1))
    r = cli("report", rerun, "--baseline", base)
    assert r.exit_code == 0, r.output
    assert "Gate: passed" in r.stdout
    slowed = variant(profiled, tmp_path, "slowed", resample(1.5, 2))
    r = cli("report", slowed, "--baseline", base, "--fail-on", "latency=+10%")
    assert r.exit_code == EXIT_FAILED
    assert "**FAILED**" in r.stdout and "| latency |" in r.stdout and "**regressed**" in r.stdout


def test_change_straddling_the_limit_in_noise_is_inconclusive(profiled, tmp_path):
    from edgeslm.reports.collect import collect, rows

    base = rows(collect([profiled["build"]]))
    noisy = json.loads(json.dumps(base))
    rng = np.random.default_rng(3)
    for b, n in zip(base, noisy):
        med = np.median(b["samples_ms"])
        b["samples_ms"] = list(rng.normal(med, med * 0.3, 40).clip(min=med * 0.2))
        n["samples_ms"] = list(rng.normal(med * 1.1, med * 0.3, 40).clip(min=med * 0.2))
        b["latency_ms"]["p50"], n["latency_ms"]["p50"] = float(np.median(b["samples_ms"])), float(np.median(n["samples_ms"]))
    c = compare(noisy, base, parse_fail_on("latency=+10%"))
    assert {r["status"] for r in c.rows} == {"inconclusive"} and not c.failed


def test_size_rss_and_accuracy_limits(profiled):
    from edgeslm.reports.collect import collect, rows

    base = rows(collect([profiled["build"]]))
    cur = json.loads(json.dumps(base))
    cur[0]["size"] = int(base[0]["size"] * 1.05)
    cur[1]["peak_rss_kb"] = int(base[1]["peak_rss_kb"] * 1.2)
    c = compare(cur, base, parse_fail_on("size=+1%,rss=+5%"))
    assert [r["status"] for r in c.rows] == ["regressed", "regressed"] and c.failed
    cur = json.loads(json.dumps(base))
    cur[0]["accuracy"]["cosine_min"] = base[0]["accuracy"]["cosine_min"] - 0.01  # 1 point
    cur[1]["parity"]["passed"] = False
    c = compare(cur, base, parse_fail_on("accuracy=-0.5"))
    assert all(r["status"] == "regressed" for r in c.rows)
    assert any(ch.detail == "on-device parity check failed" for r in c.rows for ch in r["checks"])


def test_changed_fingerprint_and_tools_are_called_out(profiled):
    from edgeslm.reports.collect import collect, rows

    base = rows(collect([profiled["build"]]))
    cur = json.loads(json.dumps(base))
    cur[0]["fingerprint"]["kernel"] = "7.0.0"
    cur[0]["tools"]["onnxruntime"] = "9.9"
    c = compare(cur, base, parse_fail_on("size=+1%"))
    notes = " ".join(c.notes)
    assert "device fingerprint changed (kernel)" in notes and "tool versions changed (onnxruntime)" in notes


def test_missing_and_mismatched_baselines(profiled, tiny_builds, tmp_path):
    r = CliRunner().invoke(main, ["report", str(profiled["build"]), "--baseline", str(tmp_path / "none")])
    assert r.exit_code == EXIT_USER and "no such file" in r.output
    other = tmp_path / "other"
    shutil.copytree(profiled["build"], other)
    for f in (other / "profiles").rglob("*.json"):
        d = json.loads(f.read_text())
        d["device"]["name"] = "elsewhere"
        f.write_text(json.dumps(d))
    r = CliRunner().invoke(main, ["report", str(profiled["build"]), "--baseline", str(other)])
    assert r.exit_code == EXIT_USER and "baseline has no result for any" in r.output


@pytest.mark.parametrize("spec", ["latency=10", "speed=+5%", "accuracy=-0.5%", ""])
def test_bad_fail_on(spec):
    with pytest.raises(UserError, match="--fail-on"):
        parse_fail_on(spec)


def test_thresholds_from_the_recipe(profiled, tmp_path):
    """With no --fail-on, the gate applies the recipe's gate.fail_on (here: size may not grow at all)."""
    base = tmp_path / "baseline"
    assert cli("report", profiled["build"], "--save-baseline", base).exit_code == 0
    bigger = variant(profiled, tmp_path, "bigger", lambda r: r["artifact"].update(size=r["artifact"]["size"] + 1))
    for f in list(bigger.rglob("manifest.json")):
        m = json.loads(f.read_text())
        m["recipe"]["content"]["gate"] = {"fail_on": "size=+0%"}
        f.write_text(json.dumps(m))
    r = cli("report", bigger, "--baseline", base)
    assert r.exit_code == EXIT_FAILED and "| size |" in r.stdout and "| latency |" not in r.stdout
