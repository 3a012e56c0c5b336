"""Benchmark: the real all-MiniLM-L6-v2 fine-tuned as a BBC News topic classifier, compressed four ways,
in one run on this machine.

Builds the shipped recipes minilm-bbc-topics (fp32), -int8, -pruned and -pruned-int8 for `host`, then
profiles every artifact with the device runner on `local` (a fresh process, as on a device):

- accuracy on the held-out split (20% of the deduplicated articles, stratified, seed 0), measured by the
  runner; the build host's figure beside it;
- p50 latency at 128 tokens (the benchmark loop) and per article at the corpus' real lengths (the eval
  split: BBC articles are long, so most are truncated at max_seq_len = 128);
- file size and build time (from the manifest; fine-tuning included).

Ratios are against the unpruned int8 artifact of the same format (the target: pruned+int8 >= 1.3x) and
accuracy against the fine-tuned fp32 model (the target: at most 1 point lost).

    .venv/bin/python benchmarks/compression_bench.py [--iters 200] [--threads 2] [--out build/bench]

A second run reuses the builds in --out (they are cached by content in --out/.cache, fine-tuning and pruning
included); remove --out for cold builds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["minilm-bbc-topics", "minilm-bbc-topics-int8", "minilm-bbc-topics-pruned", "minilm-bbc-topics-pruned-int8"]
EXE = str(Path(sys.executable).parent / "edgeslm")


def run(args: list[str], env: dict) -> str:
    r = subprocess.run([EXE, *args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"edgeslm {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return r.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    args = ap.parse_args()
    env = dict(os.environ)
    # the benchmark's own cache: `rm -rf` the --out folder for cold builds. The variants share the
    # fine-tuning (cached by content after the first), so their build times exclude it; each manifest
    # records the time of the build that made it.
    env["EDGESLM_CACHE"] = str(args.out / ".cache")
    rows = []
    for name in RECIPES:
        t0 = time.perf_counter()
        built = json.loads(run(["build", name, "--target", "host", "-o", str(args.out), "--json", "-q"], env))[0]
        wall = time.perf_counter() - t0
        manifest = json.loads(Path(built["manifest"]).read_text())
        print(f"built {name} in {wall:.0f}s", file=sys.stderr, flush=True)
        prof = json.loads(run(["profile", built["folder"], "--device", "local", "--iters", str(args.iters),
                               "--warmup", "20", "--threads", str(args.threads), "--eval", "--json",
                               "-o", str(args.out)], env))
        for p in prof:
            a = next(x for x in manifest["artifacts"] if x["name"] == p["artifact"]["name"])
            rows.append({"recipe": name, "format": a["format"], "precision": a["precision"],
                         "size": p["artifact"]["size"], "p50_128": p["latency_ms"]["p50"],
                         "cv_128": p["latency_ms"]["cv"], "p50_real": p["task"]["latency_ms"]["p50"],
                         "tokens": p["task"]["tokens"]["median"], "acc_device": p["task"]["value"],
                         "acc_host": a["task_metric"]["value"], "build_s": manifest["build"]["seconds"],
                         "rss": p["memory_kb"]["peak_rss"] / 1024,
                         "original": manifest["evaluation"]["original"]["value"],
                         "params": next((x["parameters"]["after"] for x in manifest["passes"] if x["type"] == "prune"),
                                        None),
                         "finetune_cached": any(x.get("cached") for x in manifest["passes"] if x["type"] == "finetune")})
    fp32 = {r["format"]: r for r in rows if r["recipe"] == "minilm-bbc-topics"}
    int8 = {r["format"]: r for r in rows if r["recipe"] == "minilm-bbc-topics-int8"}
    tuned = fp32["onnx"]["original"]  # the fine-tuned fp32 model, eager, on the host
    print(f"\nBBC News topics, MiniLM-L6 fine-tuned: eval split {rows[0] and ''}accuracy of the fine-tuned fp32 "
          f"model (eager PyTorch) {tuned:.4f}; {args.threads} threads, {args.iters} iterations\n")
    print("| recipe | format | precision | size MB | p50 ms @128 | CV | p50 ms per article (median tokens) | "
          "speed-up vs int8 | accuracy (device / host) | vs fine-tuned fp32 | peak RSS MiB | build s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = int8[r["format"]]
        print(f"| {r['recipe']} | {r['format']} | {r['precision']} | {r['size'] / 1e6:.1f} | {r['p50_128']:.2f} | "
              f"{r['cv_128'] * 100:.1f}% | {r['p50_real']:.2f} ({r['tokens']:.0f}) | "
              f"{base['p50_128'] / r['p50_128']:.2f}x | {r['acc_device']:.4f} / {r['acc_host']:.4f} | "
              f"{(r['acc_device'] - tuned) * 100:+.2f} pt | {r['rss']:.0f} | {r['build_s']:.0f}"
              f"{' (fine-tune cached)' if r['finetune_cached'] else ''} |")
    pruned = {r["format"]: r for r in rows if r["recipe"] == "minilm-bbc-topics-pruned-int8"}
    print()
    for fmt in ("onnx", "executorch"):
        speed = int8[fmt]["p50_128"] / pruned[fmt]["p50_128"]
        lost = (tuned - pruned[fmt]["acc_device"]) * 100
        verdict = "MET" if speed >= 1.3 and lost <= 1.0 else "NOT MET"
        print(f"target ({fmt}): pruned+int8 {speed:.2f}x faster than int8 (>= 1.3x), {lost:.2f} points lost "
              f"(<= 1): {verdict}")


if __name__ == "__main__":
    main()
