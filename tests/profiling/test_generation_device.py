"""A text-generation build deployed over real SSH: the ExecuTorch runtime folder goes up once,
content-addressed; a damaged copy on the device is replaced; profile reports TTFT, prefill and decode
speed and the teacher-forced check; a program whose decode path is broken fails that check."""

from __future__ import annotations

import json

import pytest

from deployhelp import cli, device
from edgeslm.errors import EXIT_USER
from edgeslm.profiling.deploy import deploy
from edgeslm.profiling.profile import profile
from edgeslm.artifacts.manifest import load_manifest
from tiny import metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def decoder_source(decoder_models):
    return decoder_models("qwen2")


@pytest.fixture(scope="module")
def decoder_build(fp32_builds):
    """conftest's fp32 Qwen2 build (160-position cache, prompts up to 64 tokens)."""
    return fp32_builds("qwen2").folder


def test_profile_a_decoder_over_ssh(tmp_path, inventory, decoder_build):
    dev = device(inventory(pi={}))
    logs = []
    deploy(decoder_build, "pi", dev, log=logs.append)
    assert sum("upload ExecuTorch runtime" in m for m in logs) == 1
    measured = profile("pi", dev, decoder_build.parent.parent, iters=3, warmup=1, new_tokens=12, log=logs.append,
                       build=decoder_build)
    both = [m.result for m in measured]
    assert [r.artifact.name for r in both] == ["executorch", "onnx"]
    for r in both:
        assert r.parity.passed and r.parity.top1_vs_build_host == 1.0  # same program, same kernels
        assert abs(r.parity.perplexity_increase) < 1e-3  # fp32: PyTorch's perplexity on the device
        assert [t.prompt_tokens for t in r.generation.ttft] == [32, 128]  # 512 does not fit 160
        d = r.generation.decode
        assert d.tokens == 12 and d.tok_s > 0 and d.step_ms.p10 <= d.step_ms.p50 <= d.step_ms.p90
        # the build verified each file with the numbers the device computes (a .pte in a process without torch)
        host = metrics(load_manifest(decoder_build).artifact(r.artifact.name).compression)
        assert r.parity.perplexity == pytest.approx(host["perplexity"], rel=1e-6), r.artifact.name
    assert both[1].artifact.runtime.startswith("onnxruntime") and both[1].artifact.size > 100_000
    r = both[0]
    runtimes = list((tmp_path / "wd-pi" / "runtimes").iterdir())
    assert len(runtimes) == 1 and (runtimes[0] / "libedgeslm_et.so").is_file()
    saved = json.loads(measured[0].path.read_text())
    assert saved == r.to_dict() and saved["build"]["task"] == "text-generation"
    # reports and the gate read it: latency is the time per generated token
    rep = cli("report", decoder_build.parent, "--format", "md")
    assert rep.exit_code == 0 and "Decoders (latency above: ms per generated token)" in rep.stdout
    assert "(32)" in rep.stdout and "tok/s" in rep.stdout and "| onnx |" in rep.stdout
    base = tmp_path / "baseline"
    assert cli("report", decoder_build.parent, "--save-baseline", base).exit_code == 0
    gate = cli("report", decoder_build.parent, "--baseline", base)
    assert gate.exit_code == 0 and "Gate: passed" in gate.stdout

    # the next session finds the runtime in place; a damaged copy is replaced before it is used
    logs.clear()
    profile("pi", dev, decoder_build.parent.parent, iters=1, warmup=0, new_tokens=4, log=logs.append,
            build=decoder_build, artifacts=["executorch"])
    assert not any("upload ExecuTorch runtime" in m for m in logs)
    lib = runtimes[0] / "libexecutorch.so"
    lib.write_bytes(lib.read_bytes()[:1000])
    (again,) = profile("pi", dev, decoder_build.parent.parent, iters=1, warmup=0, new_tokens=4, log=logs.append,
                       build=decoder_build, artifacts=["executorch"])
    assert any("upload ExecuTorch runtime" in m for m in logs) and again.result.parity.passed
    assert len(list((tmp_path / "wd-pi" / "runtimes").iterdir())) == 1

    # a runtime folder that is a symbolic link elsewhere is refused, and nothing behind it is touched
    import shutil

    from edgeslm.transport import DeviceError

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("not edgeslm's")
    shutil.rmtree(runtimes[0])
    runtimes[0].symlink_to(elsewhere)
    with pytest.raises(DeviceError, match="symbolic link"):
        profile("pi", dev, decoder_build.parent.parent, iters=1, warmup=0, new_tokens=4, log=logs.append,
                build=decoder_build, artifacts=["executorch"])
    assert [p.name for p in elsewhere.iterdir()] == ["keep.txt"] and runtimes[0].is_symlink()


def test_profile_a_grid_of_threads_and_prompt_lengths_as_llama_bench(tmp_path, inventory, decoder_build):
    """`profile --threads 1,2 --prompt-lengths 16,48`: a result per thread count, each timing those prompts; the
    report gives a row per thread count. Lengths the cache cannot hold are refused before the device is touched."""
    inv = inventory(pi={})
    r = cli("profile", decoder_build, "-d", "pi", "--devices", inv, "--artifact", "onnx", "--threads", "1,2",
            "--prompt-lengths", "16,48", "--iters", 1, "--warmup", 0, "--new-tokens", 4, "--json")
    assert r.exit_code == 0, r.output
    results = json.loads(r.stdout)
    assert [x["settings"]["threads"] for x in results] == [1, 2]
    for x in results:
        assert [t["prompt_tokens"] for t in x["generation"]["ttft"]] == [16, 48]
        assert x["generation"]["decode"]["tokens"] == 4
    # the build's manifest and these results only (other tests profile this shared build too)
    rep = cli("report", decoder_build / "manifest.json", *[x["_path"] for x in results])
    assert rep.exit_code == 0, rep.output
    rows = [ln for ln in rep.stdout.splitlines() if ln.startswith("| fp32-qwen2 | host | onnx |")]
    assert {ln.split("|")[4].strip() for ln in rows} == {"1", "2"}, rows
    assert "(16)" in rep.stdout and "(48)" in rep.stdout
    data = json.loads(cli("report", decoder_build / "manifest.json", *[x["_path"] for x in results], "--format",
                          "json").stdout)
    assert sorted(x["key"] for x in data["results"]) == ["pi/fp32-qwen2/host/onnx/1t", "pi/fp32-qwen2/host/onnx/2t"]
    before = sorted(p.name for p in (tmp_path / "wd-pi").rglob("results/*.json"))
    r = cli("profile", decoder_build, "-d", "pi", "--devices", inv, "--prompt-lengths", "32,150")
    assert r.exit_code == EXIT_USER and "--prompt-lengths 150: with --new-tokens 64 that does not fit" in r.output
    assert sorted(p.name for p in (tmp_path / "wd-pi").rglob("results/*.json")) == before


def test_run_streams_the_same_text_as_transformers_generate(tmp_path, inventory, decoder_build, decoder_source,
                                                            tiny_builds):
    """`edgeslm run` deploys the build, tokenizes here, generates on the device and detokenizes the
    stream: with fp32 weights the text is transformers' own greedy continuation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgeslm.errors import EXIT_USER

    tok = AutoTokenizer.from_pretrained(str(decoder_source))
    model = AutoModelForCausalLM.from_pretrained(str(decoder_source)).eval()
    prompt = "The weather in the mountains"
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0)
    expected = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    inv = inventory(pi={})
    r = cli("run", decoder_build, prompt, "--device", "pi", "--devices", inv, "--max-new-tokens", 6, "--no-chat")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == expected.strip() and expected.strip()
    assert "executorch, greedy: 6 tokens after a" in r.stderr and "time to first token" in r.stderr
    # the device's time to first token and what the user waited (deploy check, connection, tokenizer included)
    import re

    waited = re.search(r"time to first token (\d+) ms on the device, first text here ([\d.]+) s after", r.stderr)
    assert waited and float(waited.group(2)) * 1000 >= float(waited.group(1)), r.stderr
    r = cli("run", decoder_build, prompt, "--device", "pi", "--devices", inv, "--max-new-tokens", 6, "--no-chat",
            "--artifact", "onnx")  # the ONNX decoder in onnxruntime, the same loop: the same text
    assert r.exit_code == 0 and r.stdout.strip() == expected.strip() and "onnx, greedy: 6 tokens" in r.stderr, r.output
    # sampling on the device: the same seed gives the same text, other seeds other texts
    texts = {}
    for seed in (1, 1, 2, 3):
        r = cli("run", decoder_build, prompt, "--device", "pi", "--devices", inv, "--max-new-tokens", 12, "--no-chat",
                "--artifact", "onnx", "--sample", "--temperature", 1.5, "--top-k", 0, "--seed", seed)
        assert r.exit_code == 0 and f"sampled: temperature 1.5, top-k 0, top-p 0.95, seed {seed}" in r.stderr, r.output
        texts.setdefault(seed, set()).add(r.stdout)
    assert len(texts[1]) == 1 and len({t for v in texts.values() for t in v}) >= 2, texts
    r = cli("run", decoder_build, prompt, "--device", "pi", "--devices", inv, "--artifact", "tflite")
    assert r.exit_code == EXIT_USER and "has executorch, onnx" in r.output
    r = cli("run", tiny_builds["v1"], prompt, "--device", "pi", "--devices", inv)  # an encoder build
    assert r.exit_code == EXIT_USER and "needs a text-generation build" in r.output


def test_run_refuses_a_prompt_the_cache_cannot_hold_before_deploying(tmp_path, inventory, decoder_build):
    """The prompt is tokenized before the deploy: a prompt longer than the KV cache (160 positions here) is
    one line and the device is not touched (it used to be refused only after the upload)."""
    inv = inventory(pi={})
    r = cli("run", decoder_build, "word " * 400, "--device", "pi", "--devices", inv, "--no-chat")
    assert r.exit_code == EXIT_USER and "holds 160 in its KV cache" in r.output, r.output
    assert not (tmp_path / "wd-pi").exists()


def test_a_decoder_that_does_not_fit_the_device_is_refused_with_the_figures(decoder_build):
    """Weights + KV cache at max context + runtime against what the device reports (its probe answer,
    here made small), and the files against its free disk."""
    from edgeslm.profiling.deploy import HostBuild, compatibility
    from edgeslm.tasks import task_unit

    fit_problem = task_unit("text-generation").fit_problem
    from edgeslm.transport import DeviceError

    m = HostBuild.load(decoder_build).manifest
    roomy = {"mem_available_kb": 4 << 20, "mem_total_kb": 8 << 20, "disk": {"path": "/w", "free_bytes": 1 << 34}}
    assert fit_problem(roomy, m) is None
    small = {**roomy, "mem_available_kb": 30 << 10}
    why = fit_problem(small, m)
    assert "needs ~" in why and "KV cache" in why and "160 positions" in why and "30 MiB available" in why
    full = {**roomy, "disk": {"path": "/w", "free_bytes": 1 << 20}}
    assert "of disk" in fit_problem(full, m)
    from edgeslm.runner.facts import probe as real_probe

    answer = {**real_probe(None), **small}  # this machine's answer, with little memory left
    with pytest.raises(DeviceError, match="fp32-qwen2 will not fit: executorch needs"):
        compatibility("pi", type("Device", (), {"target": "host"})(), answer, m)
    # the build measured each file's runtime peak while verifying it (a process of its own, as on the device)
    peaks = {a.name: a.export.get("verify_peak_rss_kb") for a in m.artifacts}
    assert all(isinstance(p, int) and p > 10_000 for p in peaks.values()), peaks
    # and that figure decides when it is above the sum of the parts: a Llama-3.2-1B-shaped int4 ONNX (806 MB of
    # weights) peaked at 1382 MiB here; a Raspberry Pi 4 with 4 GB (about 3.6 GiB available) takes it, one with
    # 1 GB (about 700 MiB available) does not, and the message gives the measured figure
    onnx = next(a for a in m.artifacts if a.name == "onnx")
    onnx.export["verify_peak_rss_kb"] = 1382 << 10
    pi4_4gb = {**roomy, "mem_total_kb": 3884 << 10, "mem_available_kb": 3600 << 10}
    pi4_1gb = {**roomy, "mem_total_kb": 906 << 10, "mem_available_kb": 700 << 10}
    assert fit_problem(pi4_4gb, m) is None
    why = fit_problem(pi4_1gb, m)
    assert why.startswith("onnx needs ~1382 MiB") and "measured on the build host: 1382 MiB" in why, why


def test_an_onnx_decoder_with_edgeslms_ops_runs_on_the_device(tmp_path, inventory, decoder_models):
    """A Q4_1 GGUF built to ONNX with GgufLinear nodes: deploy uploads the runtime folder with the op library,
    and the device's onnxruntime runs the file with it (the runtime names edgeslm's ops and the kernel); the
    stored-ids check passes there. Without the folder the runner refuses with one line naming the library."""
    from edgeslm.config.catalog import load_target
    from edgeslm.config.recipe import load_recipe
    from edgeslm.pipeline import build, plan
    from deployhelp import run_runner
    from tiny import write_generation_recipe, write_gguf

    gguf = write_gguf(decoder_models("llama"), tmp_path / "tiny.Q4_1.gguf", quant="Q4_1")
    quant = ('[[passes]]\ntype = "quantize"\nmethod = "8da4w"\ngroup_size = 32\n'
             "[verify]\nmax_perplexity_increase = 0.5\nmin_top5_agreement = 0.5\n")
    recipe = load_recipe(write_generation_recipe(tmp_path / "q41.toml", gguf, name="q41onnx", extra=quant,
                                                 formats=("onnx",)))
    folder = build(recipe, plan(recipe, [load_target("host")])[0], tmp_path / "out").folder
    art = json.loads((folder / "manifest.json").read_text())["artifacts"][0]
    assert art["export"]["custom_ops"]["nodes"] == 11  # 10 projections and the Q4_1 head
    dev = device(inventory(pi={}))
    logs = []
    deploy(folder, "pi", dev, log=logs.append)
    assert sum("upload ExecuTorch runtime" in m for m in logs) == 1
    r = profile("pi", dev, tmp_path / "out", new_tokens=6, log=logs.append, build=folder)[0].result
    assert r.artifact.runtime.startswith("onnxruntime") and "edgeslm ops, GGUF kernels" in r.artifact.runtime
    assert r.parity.passed and r.generation.decode.tokens == 6
    # a decoder's own repeats when none are given: 5 prompts per length after 1 warm-up (not 100 and 10)
    assert (r.settings.iters, r.settings.warmup) == (5, 1)
    rc, answer = run_runner(dev.python, "profile", str(folder), "--artifact", "onnx", "--iters", "1", "--new-tokens", "2")
    assert rc == 1 and "needs edgeslm's onnxruntime ops (libedgeslm_ort.so)" in answer["error"]


def test_eval_on_a_device_gives_the_hosts_figures(tmp_path, inventory, decoder_build):
    """`edgeslm eval BUILD --text FILE --device pi` over real SSH: the files' steps run in the deployed version on
    the device (the runner's serve-steps), the host compares them with the source model. The device here has
    the host's CPU, so its figures equal the host's own eval to float rounding; an fp32 build matches the source."""
    from edgeslm.texts import builtin_texts

    text = tmp_path / "mine.txt"
    text.write_text("\n\n".join(builtin_texts("verify_long_texts")))
    inv = inventory(pi={})
    r = cli("eval", decoder_build, "--text", text, "--context", 64, "--device", "pi", "--devices", inv, "--json")
    assert r.exit_code == 0, r.output
    on_device = json.loads(r.stdout)
    here = json.loads(cli("eval", decoder_build, "--text", text, "--context", 64, "--json").stdout)
    assert on_device["where"] == "pi" and here["where"] == "host" and on_device["windows"] == here["windows"] >= 2
    for name, a in on_device["artifacts"].items():
        h = here["artifacts"][name]
        assert a["tokens"] == h["tokens"] and a["perplexity"] == pytest.approx(h["perplexity"], rel=1e-5), name
        assert a["kl_mean"] < 1e-6 and a["runtime"].split(";")[0] == h["runtime"].split(";")[0], (name, a)
    # a build the device does not run is deployed first; an artifact the build lacks is one line, nothing run
    r = cli("eval", decoder_build, "--text", text, "--device", "pi", "--devices", inv, "--artifact", "tflite")
    assert r.exit_code == EXIT_USER and "has no artifact 'tflite'" in r.output, r.output


class _Chan:
    """What the device's runner answered, line by line (a stand-in for the SSH channel's reader)."""

    def __init__(self, lines):
        self.lines, self.sent = list(lines), []

    def readline(self, size=-1):
        line = self.lines.pop(0) if self.lines else ""
        return line[:size] if size is not None and size >= 0 else line

    def write(self, data):
        self.sent.append(data)

    def close(self):
        pass


def test_a_device_answering_eval_steps_badly_is_refused_in_one_line():
    """Hostile or broken serve-steps answers: logits of the wrong width, not base64, an overlong line, silence, a
    header for another vocabulary, an error answer. Each is one DeviceError naming the device and the artifact."""
    import base64

    import numpy as np

    from edgeslm.profiling.device_eval import DeviceStep
    from edgeslm.transport import DeviceError

    head = json.dumps({"runtime": "onnxruntime 1.2", "vocab": 8}) + "\n"
    good = "L" + base64.b64encode(np.arange(8, dtype="<f4").tobytes()).decode() + "\n"
    step = DeviceStep(_Chan([head, good]), "pi", "onnx", 8)
    assert step([1, 2], 0).tolist() == list(range(8)) and json.loads(step.chan.sent[0]) == {"tokens": [1, 2], "start": 0}
    cases = [([head.replace('"vocab": 8', '"vocab": 9')], "did not load"),
             ([json.dumps({"error": "cannot load model.pte"}) + "\n"], "cannot load model.pte"),
             ([head, "L" + base64.b64encode(bytes(12)).decode() + "\n"], "3 logits, not 8"),
             ([head, "L!!notbase64!!\n"], "not base64"),
             ([head, "L" + "A" * 500 + "\n"], "longer than 8 logits"),
             ([head], "no answer"),
             ([head, json.dumps({"error": "a step needs 1..160 token ids"}) + "\n"], "a step needs"),
             ([head, "garbage\n"], "neither logits nor JSON")]
    for lines, says in cases:
        with pytest.raises(DeviceError, match=says) as info:
            DeviceStep(_Chan(lines), "pi", "onnx", 8)([1], 0)
        assert "device pi" in str(info.value) and "\n" not in str(info.value)


def test_serve_steps_refuses_requests_outside_the_vocabulary_or_the_cache(decoder_build):
    """The device side of eval: a request with an id outside the vocabulary, past the KV cache, or not JSON is
    answered with one error line and the server goes on; a good one gets the logits."""
    import base64
    import io

    import numpy as np

    from edgeslm.native.runtime_folder import runtime_folder
    from edgeslm.runner.generation import serve_steps

    m = json.loads((decoder_build / "manifest.json").read_text())
    vocab, ctx = m["model"]["vocab_size"], m["shapes"]["max_context"]
    lines = [{"tokens": [vocab], "start": 0}, {"tokens": [1], "start": ctx}, "not json",
             {"tokens": [1, 2], "start": 0}]
    stdin = io.StringIO("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    out = io.StringIO()
    assert serve_steps(str(decoder_build), "executorch", 1, str(runtime_folder("x86_64")), stdin, out) == 0
    head, *answers = out.getvalue().splitlines()
    assert json.loads(head)["vocab"] == vocab and len(answers) == 4
    for bad in answers[:3]:
        assert "error" in json.loads(bad), bad
    logits = np.frombuffer(base64.b64decode(answers[3][1:]), dtype="<f4")
    assert answers[3].startswith("L") and logits.shape == (vocab,) and np.isfinite(logits).all()
