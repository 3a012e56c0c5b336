"""Benchmark: the real all-MiniLM-L6-v2 at sequence length 128 on this machine, in one run.

Builds the shipped MiniLM recipes for `host` (through the cache: an unchanged build is reused, and its
recorded step timings are reported), then measures every artifact in its real runtime next to eager
PyTorch: p50/p90 latency at batch 1 x 128 tokens, file size, embedding cosine vs fp32 PyTorch (minimum
over the recipe's verification texts, and on the benchmark input), and the build time of each step.

    .venv/bin/python benchmarks/build_bench.py [--iters 100] [--threads 2] [--recipes a,b]

--compare LABEL=CHECKOUT (a folder holding another edgeslm source tree, e.g. a `git worktree` of an earlier
commit) is a before/after in one run instead: every recipe is built afresh (--force) by both trees' CLI, one
after the other in alternating order, and both builds' artifacts are timed in this checkout's runtimes in
interleaved rounds. It prints build seconds, p50 latency, size and verification cosine side by side, with
the ratios after/before.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPES = ["minilm-embedding", "minilm-embedding-int8", "minilm-embedding-int8-static", "minilm-embedding-int8-small"]


def timeit(fn, iters: int, warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--out", type=Path, default=ROOT / "build")
    ap.add_argument("--compare", metavar="LABEL=CHECKOUT", help="before/after against another source tree")
    args = ap.parse_args()
    if args.compare:
        return compare(args)

    import torch

    from edgeslm.cli.console import quiet_native_output
    from edgeslm.config.catalog import find_recipe, load_target
    from edgeslm.formats import format_unit
    from edgeslm.formats.onnx.encoder import optimize
    from edgeslm.models.loader import builtin_texts, load_model
    from edgeslm.models.sources import resolve_source
    from edgeslm.pipeline import build, plan

    torch.set_num_threads(args.threads)
    rows, builds = [], []
    eager = None
    log = args.out / ".logs" / "bench.log"
    for name in args.recipes.split(","):
        loaded = find_recipe(name)
        target = plan(loaded, [load_target("host")])[0]
        print(f"building {name} for host ...", file=sys.stderr, flush=True)
        with quiet_native_output(log):
            result = build(loaded, target, args.out)
        m = result.manifest
        builds.append((name, m, result.cached))
        if eager is None:
            src = resolve_source(loaded.recipe.model.source, loaded.base_dir)
            model = load_model(src, "embedding")
            text = " ".join(builtin_texts("verify_texts"))
            sample = model.tokenize([text], 128)
            assert sample["input_ids"].shape[1] == 128
            tsample = {k: torch.from_numpy(v) for k, v in sample.items()}
            with torch.inference_mode():
                ref = model.module(**tsample).numpy()

                def run_eager():
                    model.module(**tsample)

                lat = timeit(run_eager, args.iters)
            size = sum(p.stat().st_size for p in src.folder.glob("*.safetensors"))
            rows.append(("eager PyTorch", "fp32", size, lat, 1.0, 1.0))
            eager = (ref, size, lat)
        for a in m.artifacts:
            exporter = format_unit(a.format).exporter()
            with quiet_native_output(log):
                run = exporter.runner(result.folder / a.file, threads=args.threads)
                out = run(sample)
                lat = timeit(lambda: run(sample), args.iters)
            cos = float(np.dot(out.ravel(), eager[0].ravel()) /
                        (np.linalg.norm(out) * np.linalg.norm(eager[0])))
            cmin = next(x.value for x in a.verification.metrics if x.name == "cosine_min")
            size = next(f.size for f in m.files if f.path == a.file)
            rows.append((f"{a.format} ({name})", a.precision, size, lat, cmin, cos))
            if a.format == "onnx" and a.precision == "fp32":
                tmp = args.out / ".bench-onnx"
                tmp.mkdir(parents=True, exist_ok=True)
                for level in ("extended", "transformer"):
                    with quiet_native_output(log):
                        path, _ = optimize(result.folder / a.file, tmp / f"{level}.onnx", level, "bert")
                        r2 = exporter.runner(path, threads=args.threads)
                        lat2 = timeit(lambda: r2(sample), args.iters)
                    rows.append((f"onnx fp32, graph opt {level}", "fp32", path.stat().st_size, lat2, cmin,
                                 float(np.dot(r2(sample).ravel(), eager[0].ravel()))))

    base = statistics.median(eager[2])
    print(f"\nall-MiniLM-L6-v2, batch 1 x 128 tokens, {args.threads} threads, {args.iters} iterations "
          f"after 10 warm-up, this machine ({_cpu()})\n")
    print("| artifact | precision | size MB | size vs fp32 | p50 ms | p90 ms | speed-up vs eager | "
          "cosine min (verify texts) | cosine @128 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, prec, size, lat, cmin, cos in rows:
        p50 = pct(lat, 50)
        print(f"| {label} | {prec} | {size / 1e6:.1f} | {size / eager[1]:.2f}x | {p50:.2f} | {pct(lat, 90):.2f} "
              f"| {base / p50:.2f}x | {cmin:.4f} | {cos:.4f} |")
    print("\nbuild steps (seconds, as recorded when each build ran):\n")
    for name, m, cached in builds:
        steps = ", ".join(f"{s['name']} {s['seconds']:.1f}" for s in m.build["steps"])
        print(f"- {name}: total {m.build['seconds']:.1f}s{' (cached now)' if cached else ''}: {steps}")
    (args.out / "bench.json").write_text(json.dumps(
        [{"artifact": r[0], "precision": r[1], "size": r[2], "p50_ms": pct(r[3], 50), "p90_ms": pct(r[3], 90),
          "cosine_min": r[4], "cosine_128": r[5]} for r in rows], indent=2))


def cli_build(tree: Path, recipe: str, out: Path) -> tuple[float, dict]:
    """Build `recipe` for host with `tree`'s edgeslm (its CLI in a subprocess, --force): (wall seconds, result)."""
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = "import sys; from edgeslm.cli import main; sys.argv[0] = 'edgeslm'; main()"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code, "build", recipe, "-t", "host", "-o", str(out), "--force", "-q",
                        "--json"], cwd=tree, env=env, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"{tree}: building {recipe} failed: {r.stderr.strip().splitlines()[-1:]}")
    folder = out / recipe / "host"
    return seconds, json.loads((folder / "manifest.json").read_text()) | {"folder": str(folder)}


def compare(args) -> None:
    import torch

    from edgeslm.cli.console import quiet_native_output
    from edgeslm.formats import format_unit
    from edgeslm.models.loader import builtin_texts, load_model
    from edgeslm.config.catalog import find_recipe
    from edgeslm.models.sources import resolve_source

    label, _, other = args.compare.partition("=")
    trees = {label: Path(other).resolve(), "this": ROOT}
    torch.set_num_threads(args.threads)
    log = args.out / ".logs" / "bench.log"
    rows = []
    sample = None
    for i, name in enumerate(args.recipes.split(",")):
        built = {}
        order = list(trees) if i % 2 == 0 else list(trees)[::-1]
        for who in order:
            print(f"building {name} with {who} ({trees[who]}) ...", file=sys.stderr, flush=True)
            built[who] = cli_build(trees[who], name, args.out / f"compare-{who}")
        if sample is None:
            loaded = find_recipe(name)
            model = load_model(resolve_source(loaded.recipe.model.source, loaded.base_dir), "embedding")
            sample = model.tokenize([" ".join(builtin_texts("verify_texts"))], 128)
        for art in built["this"][1]["artifacts"]:
            runs, lats = {}, {}
            for who in trees:
                a = next(x for x in built[who][1]["artifacts"] if x["name"] == art["name"])
                with quiet_native_output(log):
                    runs[who] = format_unit(a["format"]).exporter().runner(Path(built[who][1]["folder"]) / a["file"],
                                                                           threads=args.threads)
                    runs[who](sample)
                lats[who] = []
            rounds = 5
            for _ in range(rounds):  # interleaved: the machine's drift hits both alike
                for who in trees:
                    with quiet_native_output(log):
                        lats[who] += timeit(lambda: runs[who](sample), max(1, args.iters // rounds), warmup=2)
            cells = {}
            for who in trees:
                m = built[who][1]
                a = next(x for x in m["artifacts"] if x["name"] == art["name"])
                cells[who] = {"build_s": built[who][0], "p50": pct(lats[who], 50),
                              "size": next(f["size"] for f in m["files"] if f["path"] == a["file"]),
                              "cosine": next(x["value"] for x in a["verification"]["metrics"] if x["name"] == "cosine_min")}
            rows.append((f"{name}: {art['name']}", cells))
    b, t = label, "this"
    print(f"\nbefore/after: {b} = {trees[b]} vs this checkout; all-MiniLM-L6-v2 batch 1 x 128 tokens, {args.threads} "
          f"threads, {args.iters} iterations in {5} interleaved rounds, this machine ({_cpu()})\n")
    print(f"| artifact | build s {b} | build s this | ratio | p50 ms {b} | p50 ms this | ratio | size MB {b} | "
          f"size MB this | cosine min {b} | cosine min this |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, c in rows:
        print(f"| {name} | {c[b]['build_s']:.1f} | {c[t]['build_s']:.1f} | {c[t]['build_s'] / c[b]['build_s']:.2f}x "
              f"| {c[b]['p50']:.2f} | {c[t]['p50']:.2f} | {c[t]['p50'] / c[b]['p50']:.2f}x | {c[b]['size'] / 1e6:.2f} "
              f"| {c[t]['size'] / 1e6:.2f} | {c[b]['cosine']:.4f} | {c[t]['cosine']:.4f} |")
    print("\n(build s: the whole `edgeslm build --force` of the recipe, both formats; it is listed on each of its rows)")


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    main()
