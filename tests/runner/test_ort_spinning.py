"""onnxruntime's decoder sessions spin-wait only when the cores they will use are free (runner/ort_decoder.
spin_policy; measured in benchmarks/ort_spinning.py: quiet, 2 threads, spinning is faster; beside a busy
process it collapses)."""

from __future__ import annotations

import multiprocessing as mp
import time

from edgeslm.runner.ort_decoder import busy_cores, spin_policy


def _spin(stop):
    while not stop.is_set():
        pass


def test_a_busy_neighbour_turns_spinning_off_and_the_reason_is_stated(monkeypatch):
    monkeypatch.delenv("EDGESLM_ORT_SPINNING", raising=False)
    cores = mp.cpu_count()
    stop = mp.Event()
    hogs = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(cores)]
    for h in hogs:
        h.start()
    try:
        time.sleep(0.3)
        busy = busy_cores(0.2)
        spin, why = spin_policy(cores)
    finally:
        stop.set()
        for h in hogs:
            h.join()
    assert busy is not None and busy > 0.6 * cores, busy
    assert not spin and why.startswith("spinning off (") and f"of {cores} cores busy at load" in why, why


def test_the_environment_decides_when_set(monkeypatch):
    monkeypatch.setenv("EDGESLM_ORT_SPINNING", "1")
    assert spin_policy(2) == (True, "spinning on (EDGESLM_ORT_SPINNING)")
    monkeypatch.setenv("EDGESLM_ORT_SPINNING", "0")
    assert spin_policy(2) == (False, "spinning off (EDGESLM_ORT_SPINNING)")
