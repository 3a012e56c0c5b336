"""ExecuTorch's fast decoder path without torch: a tiny Llama program as edgeslm builds it (custom SDPA +
KV-cache update operators, 8da4w weights, int8 embeddings, XNNPACK) runs in libedgeslm_et.so, whose
llama::update_cache / llama::custom_sdpa kernels are edgeslm's; prefill and greedy decoding give the
official runtime's logits (with ExecuTorch's kernels) and tokens. A position past the cache is refused."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeslm.runner.bundle import build_bytes
from edgeslm.native.build import build

pytestmark = pytest.mark.slow  # exports a decoder with ExecuTorch's own export_llm

PROMPT = [5, 17, 42, 99, 3, 7, 250, 11]
STEPS = 8
CONTEXT = 128

DECODE = r"""
import json, sys
import numpy as np
from edgeslm.runner.native_et import NativeRuntime
from edgeslm.runner.errors import RunnerError
lib_dir, pte, prompt, steps, context = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
m = NativeRuntime(lib_dir, threads=2).load(pte)
call = lambda t, p: m([np.array([t], dtype=np.int64), np.array([p], dtype=np.int64)])[0].reshape(-1, 512)[-1]
rows, pos = [call(prompt, 0)], len(prompt)
for _ in range(steps):
    rows.append(call([int(rows[-1].argmax())], pos))
    pos += 1
try:
    call(prompt, context - 2)  # 8 tokens from 2 positions before the end: past the cache
    error = None
except RunnerError as exc:
    error = str(exc)
print(json.dumps({"logits": np.stack(rows).tolist(), "error": error, "torch": "torch" in sys.modules}))
"""


def _official(pte) -> np.ndarray:
    """The same calls in ExecuTorch's own Python runtime, with its llama and quantized kernels."""
    from edgeslm.formats.executorch.decoder import pte_step

    call = pte_step(pte)
    rows, pos = [call(PROMPT, 0)], len(PROMPT)
    for _ in range(STEPS):
        rows.append(call([int(rows[-1].argmax())], pos))
        pos += 1
    return np.stack(rows)


def test_the_fast_decoder_path_runs_torch_free_as_the_official_runtime(tmp_path, decoder_8da4w):
    tiny_llama = decoder_8da4w.folder / "model.pte"  # edgeslm's own build: 8da4w, int8 embeddings, XNNPACK
    lib = tmp_path / "rt"
    build(lib)
    bundle = tmp_path / "runner.pyz"
    bundle.write_bytes(build_bytes())
    r = subprocess.run([sys.executable, "-c", DECODE, str(lib), str(tiny_llama), json.dumps(PROMPT), str(STEPS),
                        str(CONTEXT)], capture_output=True, text=True, env={"PYTHONPATH": str(bundle)},
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    ours, ref = np.asarray(got["logits"]), _official(tiny_llama)
    assert not got["torch"] and ours.shape == ref.shape == (STEPS + 1, 512)
    assert np.abs(ref).max() > 1.0  # a real model, not zeros
    assert np.abs(ours - ref).max() < 1e-4 * np.abs(ref).max()
    assert list(ours.argmax(1)) == list(ref.argmax(1))  # the same greedy continuation
    assert got["error"] and "failed" in got["error"]  # past the cache: refused, no crash
    # the build verifies a .pte the same way: in a process of its own without torch (IsolatedStep)
    from edgeslm.formats.isolated import isolated_step
    from edgeslm.runner.errors import RunnerError

    iso = isolated_step("executorch", tiny_llama)
    rows, pos = [iso(PROMPT, 0)], len(PROMPT)
    for _ in range(STEPS):
        rows.append(iso([int(rows[-1].argmax())], pos))
        pos += 1
    with pytest.raises(RunnerError, match="failed"):
        iso(PROMPT, CONTEXT - 2)  # an error answer, and the process goes on
    assert iso(PROMPT, 0).shape == (512,)
    iso.close()
    assert not iso.torch and np.array_equal(np.stack(rows), ours.astype(np.float32))
