"""A decoder's step in a process of its own, loading what the device loads and nothing else (no torch).

The build host verifies a .pte through this: once libtorch_cpu is in a process it serves the pthreadpool and
cpuinfo symbols that ExecuTorch's XNNPACK backend leaves unresolved, and the same program then computes other
logits than it does on the device (SmolLM2-135M: top logit 24.667 -> 24.542, a top token flips). Here the
program runs in edgeslm's runtime folder, as the device runs it.

    python -m edgeslm.runner.step_serve FORMAT PATH [--et-runtime DIR] [--threads N] [--context N]

stdin: one JSON line per call, {"tokens": [...], "start": n}. stdout: one JSON header line {"runtime": name,
"torch": false} once the program is loaded (or {"error": ...}), then per call the logits of the last token as a
little-endian uint32 count and that many float32, or, when the call fails, 0xFFFFFFFF and a line {"error": ...}.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys

FAILED = b"\xff\xff\xff\xff"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="step_serve")
    p.add_argument("format")
    p.add_argument("path")
    p.add_argument("--et-runtime", default=None)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--context", type=int, default=None)
    p.add_argument("--export", default="{}", help="the manifest's export facts of the artifact (JSON)")
    a = p.parse_args(argv)

    import numpy as np

    from edgeslm.runner.errors import RunnerError
    from edgeslm.runner.runtimes import open_runtime

    out = sys.stdout.buffer
    try:
        rt = open_runtime(a.format, a.et_runtime)
        step = rt.decoder(a.path, a.threads, json.loads(a.export), a.context)
    except (RunnerError, OSError, ValueError) as exc:
        out.write(json.dumps({"error": str(exc)[:2000]}).encode() + b"\n")
        out.flush()
        return 1
    out.write(json.dumps({"runtime": rt.name, "torch": "torch" in sys.modules}).encode() + b"\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        try:
            logits = np.ascontiguousarray(step(req["tokens"], int(req["start"])), dtype="<f4").reshape(-1)
        except (RunnerError, ValueError, RuntimeError) as exc:
            out.write(FAILED + json.dumps({"error": str(exc)[:2000]}).encode() + b"\n")
        else:
            out.write(struct.pack("<I", logits.size) + logits.tobytes())
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
