"""ExecuTorch's fast decoder path without torch: a tiny Llama exported by ExecuTorch's own `export_llm`
(custom SDPA + KV-cache update operators, 8da4w weights, XNNPACK) runs in libedgeslm_et.so, whose
llama::update_cache / llama::custom_sdpa kernels are edgeslm's; prefill and greedy decoding give the
official runtime's logits (with ExecuTorch's kernels) and tokens. A position past the cache is refused."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeslm.runner.bundle import build_bytes
from edgeslm.runner.native.build import build

PARAMS = {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 512, "multiple_of": 32,
          "ffn_dim_multiplier": 1.0, "norm_eps": 1e-5, "rope_theta": 10000.0, "use_scaled_rope": False,
          "hidden_dim": 128}
PROMPT = [5, 17, 42, 99, 3, 7, 250, 11]
STEPS = 8
CONTEXT = 64

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
    call(prompt, context - 2)  # 8 tokens from position 62: past the 64-position cache
    error = None
except RunnerError as exc:
    error = str(exc)
print(json.dumps({"logits": np.stack(rows).tolist(), "error": error, "torch": "torch" in sys.modules}))
"""


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("tiny-llama")
    (root / "params.json").write_text(json.dumps(PARAMS))
    g = torch.Generator().manual_seed(0)
    dim, hd, hid = PARAMS["dim"], PARAMS["dim"] // PARAMS["n_heads"], PARAMS["hidden_dim"]

    def w(*shape, s=0.2):
        return torch.randn(*shape, generator=g) * s

    sd = {"tok_embeddings.weight": w(512, dim, s=1.0), "norm.weight": 1 + w(dim, s=0.1), "output.weight": w(512, dim)}
    for i in range(PARAMS["n_layers"]):
        p = f"layers.{i}."
        sd.update({p + "attention.wq.weight": w(4 * hd, dim), p + "attention.wk.weight": w(2 * hd, dim),
                   p + "attention.wv.weight": w(2 * hd, dim), p + "attention.wo.weight": w(dim, 4 * hd),
                   p + "feed_forward.w1.weight": w(hid, dim), p + "feed_forward.w2.weight": w(dim, hid),
                   p + "feed_forward.w3.weight": w(hid, dim), p + "attention_norm.weight": 1 + w(dim, s=0.1),
                   p + "ffn_norm.weight": 1 + w(dim, s=0.1)})
    torch.save(sd, root / "ckpt.pth")
    r = subprocess.run([sys.executable, "-m", "executorch.extension.llm.export.export_llm", "base.model_class=llama3",
                        f"base.params={root / 'params.json'}", f"base.checkpoint={root / 'ckpt.pth'}",
                        "model.use_kv_cache=True", "model.use_sdpa_with_kv_cache=True", "backend.xnnpack.enabled=True",
                        f"export.max_seq_length={CONTEXT}", f"export.max_context_length={CONTEXT}",
                        "quantization.qmode=8da4w", "quantization.group_size=32", "model.dtype_override=fp32",
                        f"export.output_dir={root}", "export.output_name=tiny.pte"],
                       capture_output=True, text=True, cwd=root, timeout=900)
    assert r.returncode == 0 and (root / "tiny.pte").is_file(), r.stderr[-3000:]
    return root / "tiny.pte"


def _official(pte) -> np.ndarray:
    import torch
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401 - ExecuTorch's own kernels
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(pte)).load_method("forward")

    def call(tokens, pos):
        out = method.execute([torch.tensor([tokens]), torch.tensor([pos])])[0]
        return out.numpy().reshape(-1, 512)[-1].copy()

    rows, pos = [call(PROMPT, 0)], len(PROMPT)
    for _ in range(STEPS):
        rows.append(call([int(rows[-1].argmax())], pos))
        pos += 1
    return np.stack(rows)


def test_the_fast_decoder_path_runs_torch_free_as_the_official_runtime(tmp_path, tiny_llama):
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
