"""The records the device answers with (contract.results): real ones round-trip, broken ones are refused
with the part named, and another major version is refused as such."""

from __future__ import annotations

import json

import pytest

from edgeslm.contract.results import RECORDS, ProbeResult, ProfileResult, ResultError
from edgeslm.runner.facts import probe


def test_this_machines_probe_round_trips_through_json():
    answer = probe(None)
    assert answer["schema"] == ProbeResult.SCHEMA
    again = ProbeResult.from_dict(json.loads(json.dumps(answer)))
    assert again.to_dict() == answer and again.arch and isinstance(again.features, list)


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.SCHEMA)
def test_every_record_round_trips_and_names_what_is_broken(record):
    good = SAMPLES[record.SCHEMA]
    obj = record.from_dict(json.loads(json.dumps(good)))
    assert obj.to_dict() == good  # unknown keys (a newer minor version) are kept
    required = [k for k, v in good.items() if k not in ("schema", "extra_key") and k in REQUIRED[record.SCHEMA]]
    for key in required:
        with pytest.raises(ResultError, match=f"^{key} is missing"):
            record.from_dict({k: v for k, v in good.items() if k != key})
        with pytest.raises(ResultError, match=f"^{key} is not a"):
            record.from_dict({**good, key: 7 if not isinstance(good[key], (int, float)) else "7"})
    kind = record.SCHEMA.rsplit("/", 1)[0]
    with pytest.raises(ResultError, match="another edgeslm version"):
        record.from_dict({**good, "schema": kind + "/2"})
    with pytest.raises(ResultError, match="expected"):
        record.from_dict({**good, "schema": "something/1"})
    with pytest.raises(ResultError, match="not a JSON object"):
        record.from_dict([good])


def test_a_profile_result_needs_its_nested_parts():
    good = SAMPLES[ProfileResult.SCHEMA]
    broken = {**good, "latency_ms": {k: v for k, v in good["latency_ms"].items() if k != "p50"}}
    with pytest.raises(ResultError, match=r"^latency_ms\.p50 is missing"):
        ProfileResult.from_dict(broken)
    for part, value, says in (("latency_ms", {**good["latency_ms"], "p50": 0}, r"latency_ms\.p50 is not a finite number above 0"),
                              ("flags", ["noisy", 3], r"flags\[1\] is not a string"),
                              ("parity", {"passed": True, "metrics": [{"name": "cosine_min"}]},
                               r"parity\.metrics\[0\]\.value is missing"),
                              ("generation", {"ttft": [], "decode": {"tok_s": 1.0, "tok_s_p10_p90": [1.0]}},
                               r"generation\.decode\.tok_s_p10_p90 is not two numbers")):
        with pytest.raises(ResultError, match=f"^{says}"):
            ProfileResult.from_dict({**good, part: value})
    typed = ProfileResult.from_dict(good)
    assert typed.latency_ms.p50 == 1.5 and typed.build.task == "embedding" and typed.task.value == 0.9
    with pytest.raises(ResultError, match="load_ms is not a finite number, at least 0"):
        ProfileResult.from_dict({**good, "load_ms": True})


REQUIRED = {
    ProfileResult.SCHEMA: ("started_at", "build", "artifact", "device", "thermal", "flags", "settings", "parity",
                           "latency_ms", "memory_kb"),
    ProbeResult.SCHEMA: ("arch", "cpu_model", "os", "python", "runtimes", "thermal", "features"),
}
SAMPLES = {
    ProfileResult.SCHEMA: {
        "schema": ProfileResult.SCHEMA, "started_at": "2026-12-02T10:00:00+00:00",
        "build": {"recipe": "r", "target": "host", "cache_key": "k" * 16, "task": "embedding"},
        "artifact": {"name": "onnx", "format": "onnx", "file": "model.onnx", "precision": "fp32",
                     "runtime": "onnxruntime 1.32.0", "size": 1000},
        "device": {"arch": "aarch64", "cpu_model": "Cortex-A76", "cores": 4}, "thermal": {"before": {}, "after": {}}, "flags": ["noisy"],
        "settings": {"threads": 4, "seq_len": 128}, "parity": {"passed": True, "metrics": []},
        "latency_ms": {"n": 2, "p50": 1.5, "p90": 1.6, "p99": 1.6, "mean": 1.55, "stdev": 0.07, "cv": 0.02,
                       "min": 1.5, "max": 1.6}, "memory_kb": {"peak_rss": 90000}, "samples_ms": [1.5, 1.6],
        "load_ms": 12.0, "runner_version": "1", "latency_unit": "ms per run",
        "task": {"metric": "accuracy", "value": 0.9}, "generation": None, "runtime_import_ms": 80.0,
        "first_run_ms": 3.0, "extra_key": {"from": "a newer runner"},
    },
    ProbeResult.SCHEMA: {
        "schema": ProbeResult.SCHEMA, "arch": "aarch64", "cpu_model": "Cortex-A76", "os": "Debian", "python": "3.11.2",
        "runtimes": {"numpy": "2.0"}, "thermal": {"temperatures_c": {}}, "features": ["asimd"], "cores": 4,
        "kernel": "6.6", "python_executable": "/usr/bin/python3", "mem_total_kb": 8000000,
        "mem_available_kb": 7000000, "disk": {"path": "/w", "free_bytes": 1, "total_bytes": 2}, "emulated": None,
        "runner_version": "1", "extra_key": 1,
    },
}


def test_a_malformed_probe_answer_is_refused_naming_the_device_and_the_part():
    from edgeslm.profiling.deploy import checked_probe
    from edgeslm.transport import DeviceError

    answer = probe(None)
    assert checked_probe("pi", answer) is answer
    for broken, part in (({k: v for k, v in answer.items() if k != "arch"}, "arch is missing"),
                         ({**answer, "thermal": {"temperatures_c": []}}, "thermal.temperatures_c is not an object"),
                         ("not json", "not a JSON object")):
        with pytest.raises(DeviceError, match=f"device pi: probe answered something malformed .*{part}"):
            checked_probe("pi", broken)


def test_hosts_units_refuse_what_they_do_not_know():
    from edgeslm.errors import UserError
    from edgeslm.formats import format_unit
    from edgeslm.tasks import task_unit

    with pytest.raises(UserError, match="unknown task 'translation'"):
        task_unit("translation")
    with pytest.raises(UserError, match="unknown artifact format 'tflite'"):
        format_unit("tflite")
    assert task_unit("text-generation").generates and not task_unit("embedding").generates
    assert format_unit("executorch").device_package("text-generation") is None  # deploy uploads edgeslm's runtime
    assert format_unit("executorch").device_package("embedding") == "executorch"


def test_top_p_1_keeps_every_token_even_when_the_probabilities_sum_below_one():
    """A vocabulary of near-equal logits: the cumulative sum ends a few 1e-15 below 1.0, and top-p 1.0 asked
    for one token more than there are (numpy: 'a and p must have same size' on the device)."""
    import numpy as np

    from edgeslm.contract.decoding import sampler

    for seed in range(5):
        logits = np.random.default_rng(seed).normal(size=50_000) * 1e-3
        picks = [sampler(1.0, 0, 1.0, s)(logits) for s in range(3)]
        assert all(0 <= t < 50_000 for t in picks)
