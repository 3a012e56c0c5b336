"""Check the device runner's numbers against independent measurements on this machine, in one run.

For each artifact of a build: the runner's profile (p50 latency, peak RSS) next to
  - peak RSS of the same runner process as /usr/bin/time -v reports it (Maximum resident set size),
  - p50 of a bare timing loop in a separate process that loads the artifact with the runtime itself
    (no runner code), same input, same iteration count.

    .venv/bin/python benchmarks/check_runner.py [BUILD_DIR] [--iters 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BARE_LOOP = r'''
import json, sys, time
import numpy as np
build, art, iters, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
m = json.load(open(f"{build}/manifest.json"))
a = next(x for x in m["artifacts"] if x["name"] == art)
ref = np.load(f"{build}/reference.npz")
seq = m["shapes"]["max_seq_len"]
feeds = {s["name"]: np.ascontiguousarray(np.resize(ref[f"input/0/{s['name']}"][0], seq)[None, :].astype(np.int64))
         for s in m["inputs"]}
feeds["attention_mask"][:] = 1
order = a["export"].get("input_order") or [s["name"] for s in m["inputs"]]
if a["format"] == "onnx":
    import onnxruntime as ort
    so = ort.SessionOptions(); so.intra_op_num_threads = threads
    sess = ort.InferenceSession(f"{build}/{a['file']}", so, providers=["CPUExecutionProvider"])
    run = lambda: sess.run(None, feeds)
else:
    import torch
    from executorch.extension.pybindings import portable_lib
    portable_lib._unsafe_reset_threadpool(threads)
    from executorch.runtime import Runtime
    meth = Runtime.get().load_program(f"{build}/{a['file']}").load_method("forward")
    args = [torch.from_numpy(feeds[k]) for k in order]
    run = lambda: meth.execute(args)
for _ in range(10):
    run()
t = []
for _ in range(iters):
    t0 = time.perf_counter(); run(); t.append((time.perf_counter() - t0) * 1e3)
print(json.dumps({"p50": float(np.percentile(t, 50)), "mean": float(np.mean(t))}))
'''


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("build", nargs="?", default=str(ROOT / "build" / "minilm-embedding-int8" / "host"))
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from edgeslm.runner import RUNNER_PATH

    manifest = json.loads((Path(args.build) / "manifest.json").read_text())
    rows = []
    for a in manifest["artifacts"]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "r.json"
            timed = subprocess.run(["/usr/bin/time", "-v", sys.executable, str(RUNNER_PATH), "profile", args.build,
                                    "--artifact", a["name"], "--iters", str(args.iters), "--threads",
                                    str(args.threads), "--out", str(out)], capture_output=True, text=True)
            if timed.returncode != 0:
                raise SystemExit(timed.stdout + timed.stderr)
            r = json.loads(out.read_text())
        max_rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", timed.stderr).group(1))
        bare = json.loads(subprocess.run([sys.executable, "-c", BARE_LOOP, args.build, a["name"], str(args.iters),
                                          str(args.threads)], capture_output=True, text=True, check=True).stdout)
        rows.append((a["name"], r["latency_ms"]["p50"], bare["p50"], r["latency_ms"]["cv"],
                     r["memory_kb"]["peak_rss"], r["memory_kb"]["peak_during_runs"], max_rss))
    print(f"\nrunner vs independent measurement, {manifest['recipe']['name']} on this machine, "
          f"{args.iters} iterations, {args.threads} threads\n")
    print("| artifact | runner p50 ms | bare loop p50 ms | ratio | runner CV | runner peak RSS MiB (whole run) | "
          "runner peak during runs MiB | /usr/bin/time max RSS MiB | ratio (runs) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, p50, bp50, cv, rss, runs, trss in rows:
        print(f"| {name} | {p50:.3f} | {bp50:.3f} | {p50 / bp50:.3f} | {cv * 100:.1f}% | {rss / 1024:.1f} | "
              f"{runs / 1024:.1f} | {trss / 1024:.1f} | {runs / trss:.3f} |")
    print("\nThe runner resets the kernel's high-water mark after loading (/proc/self/clear_refs) to measure the "
          "peak of the runs alone; getrusage, which /usr/bin/time reports, reads that same reset counter, so it "
          "matches the runner's 'peak during runs'. The runner's whole-run peak is the VmHWM it read before the reset.")


if __name__ == "__main__":
    main()
