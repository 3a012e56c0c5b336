"""Should onnxruntime's intra-op threads spin-wait in edgeslm's decoder loop? Decode speed of a built ONNX
decoder with spinning on (onnxruntime's default) and off, on a quiet machine and beside a busy neighbour
(one process spinning on one core, as another job on a shared board), at 1 and 2 threads; interleaved rounds
in one run, median and p10 of tokens/s per round (tokens over wall time, 64 steps after a 32-token prompt).

    python benchmarks/ort_spinning.py BUILD_FOLDER [--rounds 5]

The device runner decides per session (runner/ort_decoder.spin_policy) from what this measured.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from pathlib import Path


def _busy(stop):
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def _decode(step, steps: int) -> float:
    logits = step(list(range(100, 132)), 0)
    tok, pos = int(logits.argmax()), 32
    t0 = time.perf_counter()
    for _ in range(steps):
        tok = int(step([tok], pos).argmax())
        pos += 1
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build", type=Path)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=64)
    a = ap.parse_args()
    from edgeslm.runner.ort_decoder import OrtDecoder

    m = json.loads((a.build / "manifest.json").read_text())
    art = next(x for x in m["artifacts"] if x["format"] == "onnx")
    kv = art["export"]["kv_cache"]
    ops = None
    if art["export"].get("custom_ops"):  # GGUF Q4_1 linears: edgeslm's op library, as the device loads it
        import platform

        from edgeslm.native.runtime_folder import runtime_folder
        from edgeslm.runner.runtimes import ORT_OPS

        ops = str(runtime_folder(platform.machine()) / ORT_OPS)
    sessions = {(t, spin): OrtDecoder(str(a.build / art["file"]), t, kv["layers"], kv["kv_heads"], kv["head_dim"],
                                      kv["positions"], ops_library=ops, spinning=spin)
                for t in (1, 2) for spin in (True, False)}
    results: dict = {}
    for r in range(a.rounds):
        for load in ("quiet", "busy neighbour"):
            stop, proc = mp.Event(), None
            if load != "quiet":
                proc = mp.Process(target=_busy, args=(stop,), daemon=True)
                proc.start()
                time.sleep(0.5)
            try:
                for key, step in sessions.items():  # interleaved: every setting in every round
                    results.setdefault((load, *key), []).append(_decode(step, a.steps))
            finally:
                if proc is not None:
                    stop.set()
                    proc.join()
    print(f"{m['recipe']['name']} onnx ({art['precision']}), {a.rounds} rounds, {a.steps} decode steps, tok/s")
    print(f"{'load':<16} {'threads':>7} {'spinning on':>18} {'spinning off':>18} {'off/on':>7}")
    for load in ("quiet", "busy neighbour"):
        for t in (1, 2):
            on, off = results[(load, t, True)], results[(load, t, False)]

            def fmt(v):
                return f"{statistics.median(v):7.1f} (p10 {sorted(v)[max(0, len(v) // 10)]:5.1f})"

            print(f"{load:<16} {t:>7} {fmt(on):>18} {fmt(off):>18} {statistics.median(off) / statistics.median(on):7.2f}")


if __name__ == "__main__":
    main()
