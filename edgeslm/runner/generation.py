"""text-generation on the device: the decoder in edgeslm's torch-free ExecuTorch shim (.pte) or in
onnxruntime with edgeslm's own loop (ONNX, runner/ort_decoder.py).

`profile` measures what decides whether a chat model is usable there: load time, time to first token at
several prompt lengths (prefill tokens/s), decode tokens/s over many steps (median and spread), and
memory as the KV cache fills. It first checks the program against the build's stored reference
(teacher-forced on the held text: top-1 / top-5 agreement with PyTorch and with the build host's run
of the same program, perplexity against PyTorch's). `generate` streams token ids for a prompt.
"""

from __future__ import annotations

import json
import os
import time

from edgeslm.contract import reference
from edgeslm.contract.decoding import greedy, prefill, teacher_forced, timed_decode
from edgeslm.contract.parity import TOP1_MARGIN, log_softmax
from edgeslm.contract.stats import stats
from edgeslm.runner.budget import Budget, load_between, load_sample
from edgeslm.runner.errors import RunnerError
from edgeslm.runner.facts import status_kb
from edgeslm.runner.store import inside

PROMPT_LENGTHS = (32, 128, 512)


def open_decoder(build_dir: str, manifest: dict, artifact: dict, threads: int, et_runtime: str | None):
    """(step, load_ms, runtime name): step(tokens, start) -> logits of the last token, from the artifact's
    runtime unit (a .pte in edgeslm's ExecuTorch runtime folder, an ONNX decoder in onnxruntime with
    edgeslm's loop)."""
    from edgeslm.runner.runtimes import open_runtime

    runtime = open_runtime(artifact.get("format"), et_runtime)
    t0 = time.perf_counter()
    step = runtime.decoder(inside(build_dir, artifact["file"]), threads, artifact.get("export") or {},
                           int(manifest["shapes"]["max_context"]))
    return step, (time.perf_counter() - t0) * 1e3, runtime.name


def check(step, build_dir: str, manifest: dict, artifact: str) -> dict:
    """Teacher-forced on the stored held text; compared with PyTorch's stored top tokens and log-probs."""
    import numpy as np

    arrays = reference.load(inside(build_dir, manifest["reference"]["file"]))
    ids = [int(i) for i in arrays[reference.TEXT_IDS]]
    first, chunk = int(arrays[reference.TEXT_FIRST]), int(manifest["shapes"]["max_prompt"])
    logits = teacher_forced(step, ids, first, chunk).astype(np.float64)
    lp = log_softmax(logits)
    targets = np.asarray(ids[first:])
    top_ids, top_logits = arrays[reference.ORIGINAL_TOP_IDS], arrays[reference.ORIGINAL_TOP_LOGITS]
    clear = (top_logits[:, 0] - top_logits[:, 1]) >= TOP1_MARGIN
    mine = logits.argmax(axis=1)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    host = arrays[reference.artifact_top_ids(artifact)][:, 0]
    ppl_ref = float(np.exp(-arrays[reference.ORIGINAL_TARGET_LOGPROB].astype(np.float64).mean()))
    ppl = float(np.exp(-lp[np.arange(len(targets)), targets].mean()))
    limits = manifest["reference"].get("thresholds", {}).get("compression", {})
    out = {"positions": int(len(targets)), "prompt_tokens": first,
           "top1_agreement": float((mine[clear] == top_ids[clear, 0]).mean()) if clear.any() else 1.0,
           "top5_agreement": float((top5 == top_ids[:, [0]]).any(axis=1).mean()),
           "top1_vs_build_host": float((mine == host).mean()),
           "perplexity_reference": ppl_ref, "perplexity": ppl, "perplexity_increase": ppl / ppl_ref - 1.0}
    gates = [("top5_agreement", "min", limits.get("min_top5_agreement")),
             ("perplexity_increase", "max", limits.get("max_perplexity_increase"))]
    failed = [n for n, kind, t in gates if t is not None and
              (out[n] < t if kind == "min" else out[n] > t)]
    out["thresholds"] = {n: t for n, _, t in gates}
    out["passed"] = not failed
    out["failed"] = failed
    return out


def profile(job) -> dict:
    """The device profile of a decoder: TTFT per prompt length and decode speed; its latency is the time per
    generated token (what reports and the gate compare)."""
    if job.new_tokens < 2:
        raise RunnerError("--new-tokens must be >= 2")
    gen = profile_generation(job.build_dir, job.manifest, job.artifact, job.threads, job.warmup, job.iters,
                             job.new_tokens, job.et_runtime, job.prompt_lengths, job.budget)
    return {
        "runtime": gen["runtime"],
        "settings": gen["settings"],
        "parity": {"passed": gen["check"]["passed"], **gen["check"]},
        "generation": {k: gen[k] for k in ("ttft", "decode")},
        "latency_ms": gen["decode"]["step_ms"], "latency_unit": "ms per generated token",
        "load_ms": gen["load_ms"], "samples_ms": gen["samples_ms"], "memory_kb": gen["memory_kb"],
        "load": gen["load"], "partial": gen["partial"],
    }


def profile_generation(build_dir: str, manifest: dict, artifact: dict, threads: int, warmup: int, iters: int,
                       new_tokens: int, et_runtime: str | None, prompt_lengths: tuple | None = None,
                       budget=None) -> dict:
    """Load; TTFT at each prompt length (median of `iters` runs after `warmup`), decode speed over
    `new_tokens` steps, RSS after each length (the static KV cache is touched as it fills); then the check
    (after the timings, so its arrays are not in the peak RSS of generation)."""
    import numpy as np

    budget = budget or Budget(None)
    ctx, chunk = int(manifest["shapes"]["max_context"]), int(manifest["shapes"]["max_prompt"])
    rss_start = status_kb("VmRSS")
    budget.tick("load", 0)
    step, load_ms, runtime = open_decoder(build_dir, manifest, artifact, threads, et_runtime)
    rss_loaded, hwm_loaded = status_kb("VmRSS"), status_kb("VmHWM")
    arrays = reference.load(inside(build_dir, manifest["reference"]["file"]))
    text = [int(i) for i in arrays[reference.TEXT_IDS]]
    if prompt_lengths:  # asked for: each must leave room for the decode steps
        too_long = [n for n in prompt_lengths if n + new_tokens > ctx]
        if too_long:
            raise RunnerError(f"--prompt-lengths {','.join(map(str, too_long))}: a prompt of that length and "
                              f"{new_tokens} new tokens do not fit the KV cache ({ctx} positions)")
        lengths = sorted(set(prompt_lengths))
    else:
        lengths = [n for n in PROMPT_LENGTHS if n + new_tokens <= ctx] or [max(1, ctx - new_tokens - 1)]
    ttft = []
    load_before = load_sample()
    runs, planned = 0, iters * len(lengths)
    for n in lengths:
        prompt = (text * (n // len(text) + 1))[:n]
        for _ in range(warmup):
            if budget.over():
                break
            prefill(step, prompt, 0, chunk)
        times = []
        for _ in range(iters):
            if times and budget.over():  # at least one run per length, whatever the budget
                break
            budget.tick(f"time to first token, {n}-token prompts", len(times), iters)
            t0 = time.perf_counter()
            logits = prefill(step, prompt, 0, chunk)
            int(np.asarray(logits).argmax())
            times.append((time.perf_counter() - t0) * 1e3)
        runs += len(times)
        s = stats(times)
        ttft.append({"prompt_tokens": n, "ttft_ms": s, "prefill_tok_s": n / (s["p50"] / 1e3),
                     "rss_kb": status_kb("VmRSS")})
    # decode: after a 32-token prompt, greedy steps whatever the tokens (no stop), each timed
    prompt = text[:min(32, len(text))]
    budget.tick("decode", 0)
    logits = prefill(step, prompt, 0, chunk)
    steps = timed_decode(step, int(np.asarray(logits).argmax()), len(prompt), min(new_tokens, ctx - len(prompt)))
    d = stats(steps[min(warmup, len(steps) - 1):] if len(steps) > 1 else steps)
    load = load_between(load_before, load_sample())
    peak, rss_decoded = status_kb("VmHWM"), status_kb("VmRSS")
    budget.tick("check", 0)
    # the check last: its logit arrays would otherwise count in the peak memory of generation
    verdict = check(step, build_dir, manifest, artifact["name"])
    return {
        "runtime": runtime, "load_ms": load_ms, "check": verdict, "load": load,
        "partial": budget.partial(runs, planned),
        "ttft": ttft,
        "decode": {"tokens": len(steps), "after_prompt_tokens": len(prompt), "step_ms": d,
                   "tok_s": 1000.0 / d["p50"], "tok_s_p10_p90": [1000.0 / d["p90"], 1000.0 / d["p10"]]},
        "samples_ms": steps,
        "memory_kb": {"rss_at_start": rss_start, "rss_after_load": rss_loaded, "peak_after_load": hwm_loaded,
                      "load_increase": (rss_loaded or 0) - (rss_start or 0),
                      "peak_rss": peak, "rss_after_decode": rss_decoded,
                      "peak_with_check": status_kb("VmHWM")},
        "settings": {"threads": threads, "warmup": warmup, "iters": iters, "new_tokens": new_tokens,
                     "max_seconds": budget.max_seconds,
                     "prompt_lengths": lengths, "max_context": ctx, "prompt_chunk": chunk},
    }


def _artifact(build_dir: str, artifact_name: str) -> tuple[dict, dict]:
    """(the deployed build's manifest, its artifact named `artifact_name`)."""
    with open(os.path.join(build_dir, "manifest.json")) as f:
        manifest = json.load(f)
    artifact = next((a for a in manifest["artifacts"] if a["name"] == artifact_name), None)
    if artifact is None:
        raise RunnerError(f"build has no artifact {artifact_name!r}")
    return manifest, artifact


def generate(build_dir: str, artifact_name: str, prompt_ids: list, new_tokens: int, threads: int,
             et_runtime: str | None, stop_ids: list | None = None, sampling: dict | None = None) -> dict:
    """Greedy (or, with `sampling` = {temperature, top_k, top_p, seed}, sampled) generation, each token id
    printed as a JSON line as it comes ({"token": id}); returns the summary (TTFT, tokens/s)."""
    from edgeslm.contract.decoding import sampler

    manifest, artifact = _artifact(build_dir, artifact_name)
    ctx, chunk = int(manifest["shapes"]["max_context"]), int(manifest["shapes"]["max_prompt"])
    if not prompt_ids or len(prompt_ids) >= ctx:
        raise RunnerError(f"the prompt has {len(prompt_ids)} tokens; the model's context holds {ctx}")
    vocab = int(manifest["model"]["vocab_size"])
    if any(not 0 <= int(t) < vocab for t in prompt_ids):
        raise RunnerError(f"prompt token ids must be in [0, {vocab})")
    step, load_ms, runtime = open_decoder(build_dir, manifest, artifact, threads, et_runtime)
    stops = set(stop_ids if stop_ids is not None else manifest["model"].get("stop_token_ids") or [])
    marks = {"t0": time.perf_counter(), "first": None}

    def emit(tok):
        if marks["first"] is None:
            marks["first"] = time.perf_counter()
        print(json.dumps({"token": tok}), flush=True)

    pick = sampler(**sampling) if sampling else None
    out = greedy(step, [int(t) for t in prompt_ids], min(new_tokens, ctx - len(prompt_ids)), chunk, stops,
                 ctx, on_token=emit, pick=pick)
    end = time.perf_counter()
    ttft = (marks["first"] - marks["t0"]) * 1e3 if marks["first"] else None
    rate = (len(out) - 1) / (end - marks["first"]) if marks["first"] and len(out) > 1 else None
    return {"tokens": out, "prompt_tokens": len(prompt_ids), "load_ms": load_ms, "ttft_ms": ttft,
            "decode_tok_s": rate, "runtime": runtime, "stopped": bool(out and out[-1] in stops),
            "decoding": {"sampling": "sample", **sampling} if sampling else {"sampling": "greedy"}}



def serve_steps(build_dir: str, artifact_name: str, threads: int, et_runtime: str | None, stdin=None, out=None) -> int:
    """Teacher-forced steps for the host's `edgeslm eval --device`: the artifact loaded once, then per stdin line
    {"tokens": [...], "start": n} one stdout line, "L" and the base64 of the last token's logits (float32,
    little-endian), or {"error": ...}; the first line says the runtime ({"runtime": name, "vocab": n}). Ends at
    the end of stdin (the host's session). Requests are checked: ids in the vocabulary, positions in the
    cache."""
    import base64
    import sys

    import numpy as np

    stdin, out = stdin or sys.stdin, out or sys.stdout
    manifest, artifact = _artifact(build_dir, artifact_name)
    ctx, vocab = int(manifest["shapes"]["max_context"]), int(manifest["model"]["vocab_size"])
    step, _, runtime = open_decoder(build_dir, manifest, artifact, threads, et_runtime)
    print(json.dumps({"runtime": runtime, "vocab": vocab, "torch": "torch" in sys.modules}), file=out, flush=True)
    for line in stdin:
        try:
            req = json.loads(line)
            tokens, start = [int(t) for t in req["tokens"]], int(req["start"])
            if not tokens or start < 0 or start + len(tokens) > ctx or any(not 0 <= t < vocab for t in tokens):
                raise RunnerError(f"a step needs 1..{ctx} token ids in [0, {vocab}) within the {ctx}-position cache")
            logits = np.ascontiguousarray(step(tokens, start), dtype="<f4").reshape(-1)
        except (RunnerError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            print(json.dumps({"error": str(exc)[:2000]}), file=out, flush=True)
            continue
        print("L" + base64.b64encode(logits.tobytes()).decode(), file=out, flush=True)
    return 0
