"""Profiles on a time budget: progress with a count and an ETA while the device measures, a budget that ends
the timed runs and keeps them (flagged partial), Ctrl-C that does the same over a real SSH link, and the
machine's load recorded with each result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeslm.cli import main
from edgeslm.contract.results import ProfileResult
from edgeslm.profiling.profile import progress_line
from edgeslm.runner.budget import Budget, busy, default_max_seconds, load_between
from edgeslm.transport.base import Listen

ROOT = Path(__file__).resolve().parents[2]
EXE = str(Path(sys.executable).parent / "edgeslm")


def test_progress_lines_budget_and_load_figures(tmp_path):
    import io
    import threading

    out = io.StringIO()
    b = Budget(None, out=out, every=0.0)
    b.tick("timed runs", 0, 10)
    b.tick("timed runs", 5, 10)
    lines = [json.loads(x.split(" ", 1)[1]) for x in out.getvalue().splitlines()]
    assert lines[1]["done"] == 5 and lines[1]["of"] == 10 and lines[1]["eta_s"] is not None
    assert progress_line("onnx on pi", {**lines[1], "elapsed_s": 95, "eta_s": 450}) == \
        "onnx on pi: timed runs 5/10, 1 min 35 s, about 7 min 30 s left"
    assert progress_line("x", {"phase": "a"}) is None  # not what a runner sends: not shown
    assert Budget(0.0).over() is None and Budget(1e-9).over().startswith("time budget of")
    stop = threading.Event()
    b = Budget(None, stop=stop)
    stop.set()
    assert b.over() == "stopped by the host" and b.partial(3, 100)["runs"] == 3
    assert default_max_seconds(None, True) == 600 and default_max_seconds(None, False) is None
    assert default_max_seconds(0, True) is None and default_max_seconds(5, False) == 5
    quiet = {"cpu": (1000, 100, 0), "own": 0, "cores": 2}
    assert not busy(load_between(quiet, {"cpu": (2000, 200, 0), "own": 80, "cores": 2}))  # others: 2%
    assert busy(load_between(quiet, {"cpu": (2000, 600, 0), "own": 100, "cores": 2}))  # others: 40%
    assert busy(load_between(quiet, {"cpu": (2000, 200, 100), "own": 100, "cores": 2}))  # 10% stolen
    heard = []
    listen = Listen("@p ", heard.append)
    listen.feed(b"noise\n@p one\n@p tw")
    listen.feed(b"o\n" + b"@p " + b"x" * 5000 + b"\n")
    assert heard == ["one", "two"]


@pytest.mark.slow
def test_a_budget_ends_the_timed_runs_and_keeps_them_flagged_partial(tmp_path, tiny_builds):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGESLM_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([EXE, "profile", str(tiny_builds["v1"]), "--device", "local", "--artifact", "onnx",
                        "--iters", "1000000", "--warmup", "0", "--max-seconds", "3"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    res = ProfileResult.from_dict(json.loads(Path(r.stdout.split("result: ")[1].split()[0]).read_text()))
    assert "partial" in res.flags and res.partial.reason == "time budget of 3 s spent"
    assert 1 <= res.partial.runs == res.latency_ms.n < 1000000 and res.settings.max_seconds == 3
    assert res.load is not None and 0 <= res.load.others_cpu <= 1 and res.load.cores == os.cpu_count()
    assert "timed runs 0/1000000, " in r.stderr and "(budget 3 s)" in r.stderr \
        and "partial result of onnx on local" in r.stderr


@pytest.mark.slow
def test_ctrl_c_over_ssh_keeps_what_was_measured_and_skips_the_rest(tmp_path, inventory, tiny_builds):
    """The first Ctrl-C asks the device to stop measuring: the runs so far are kept as a partial result and the
    next artifact is not profiled; the device's runner is gone afterwards."""
    inv = inventory(pi={})
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGESLM_DEBUG": "1"}
    proc = subprocess.Popen([EXE, "profile", str(tiny_builds["v1"]), "--device", "pi", "--devices", str(inv),
                             "--iters", "1000000", "--warmup", "0", "-o", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    err, sent = [], False
    for line in proc.stderr:
        err.append(line)
        if not sent and sum("timed runs" in x for x in err) == 2:
            proc.send_signal(signal.SIGINT)
            sent = True
    out = proc.stdout.read()
    assert proc.wait(timeout=120) == 0, "".join(err)
    text = "".join(err)
    assert "stopping; the runs measured so far are kept" in text and "stopped by the host after" in text
    assert "not profiled after Ctrl-C: executorch" in text, text
    assert "partial" in out.split("flags: ")[1].splitlines()[0] and out.count("result: ") == 1
    stored = list(tiny_builds["v1"].glob("profiles/pi/*-onnx.json"))
    res = ProfileResult.from_dict(json.loads(stored[-1].read_text()))
    assert res.partial.reason == "stopped by the host" and res.host_load is not None
    r = CliRunner().invoke(main, ["report", str(stored[-1])])
    assert r.exit_code == 0 and "partial" in r.output, r.output


def test_upload_progress_says_bytes_rate_and_time_left(monkeypatch):
    from edgeslm.profiling.deploy import UploadMeter

    lines = []
    meter = UploadMeter(30_000_000, lines.append)
    monkeypatch.setattr(UploadMeter, "EVERY", 0.0)
    first = meter.file("model.onnx")
    first(5_000_000, 20_000_000)
    first(20_000_000, 20_000_000)  # a file's end is not a progress line (the next file's line follows)
    meter.file("model.pte")(4_000_000, 10_000_000)
    assert len(lines) == 2 and lines[0].startswith("  model.onnx: 5.0 of 30.0 MB sent, ")
    assert lines[1].startswith("  model.pte: 24.0 of 30.0 MB sent, ") and lines[1].endswith(" s left")
