"""GPTQ grids for decoders: neural-compressor's GPTQ (symmetric int4, groups of 32, calibrated on text)
chooses the integers and scales; both formats carry them as they are (`gguf_onnx.apply_grids` for ONNX
MatMulNBits, `gguf_grid.carry_into_torchao` for the .pte's 8da4w linears), exactly as a GGUF's Q4_0.

neural-compressor runs GPTQ eagerly on a PyTorch model and has no exporter for either format; what it
leaves behind (INCWeightOnlyLinear, AutoGPTQ's packing: qweight int32 [K/8, N] with eight 4-bit values
per word, lowest bits first, q + 8 stored; scales float16 [K/32, N]) is read back here into the grid
layout of gguf_grid: {"type": "Q4_0", "q": uint8 [N, K] in 0..15 (w = (q - 8) d), "d": [N, K/32]}.
The model itself is left untouched (a copy is quantized): it stays the reference.
"""

from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path

import numpy as np

from edgeslm.errors import ExportError
from edgeslm.models.gguf_grid import BLOCK

CHUNK = 256  # calibration tokens per sequence
MAX_CHUNKS = 128


def calibration_chunks(tokenizer, texts: list[str], max_context: int) -> list[list[int]]:
    """The calibration texts as one token stream cut into sequences of up to CHUNK tokens."""
    ids: list[int] = []
    for t in texts:
        ids += [int(i) for i in tokenizer(t, add_special_tokens=False)["input_ids"]]
    n = min(CHUNK, max_context)
    return [ids[i:i + n] for i in range(0, len(ids), n) if len(ids[i:i + n]) >= min(16, n)][:MAX_CHUNKS]


def _unpack4(packed) -> np.ndarray:
    """int32 [R, C] -> uint8 [R, 8 C]: element e of a word is bits 4e..4e+3."""
    p = packed.cpu().numpy().astype(np.int64) & 0xFFFFFFFF
    out = (p[:, :, None] >> (4 * np.arange(8, dtype=np.int64))) & 0xF
    return out.reshape(p.shape[0], -1).astype(np.uint8)


def read_grid(mod) -> dict:
    """An INCWeightOnlyLinear (4-bit, symmetric, groups of 32, no act-order) as a Q4_0-type grid."""
    n, k = mod.out_features, mod.in_features
    if mod.bits != 4 or mod.group_size != BLOCK or getattr(mod, "g_idx", None) is not None:
        raise ExportError(f"neural-compressor GPTQ left {mod.bits}-bit weights in groups of {mod.group_size}"
                          f"{' with act-order indices' if getattr(mod, 'g_idx', None) is not None else ''}: edgeslm "
                          "carries 4-bit groups of 32 in order only; use algorithm = \"rtn\"")
    if mod.use_optimum_format:
        q = _unpack4(mod.qweight.T.contiguous())[:, :k]  # [N, K], q + zero point, zero point 8 (symmetric)
        zp = _unpack4(mod.qzeros)[:, :n].T.astype(np.int16) + 1
        if not np.all(zp == 8):
            raise ExportError("neural-compressor GPTQ left an asymmetric grid (zero points other than 8); "
                              "edgeslm carries symmetric int4 only; use algorithm = \"rtn\"")
        d = mod.scales.T.float().numpy()
    else:
        u = _unpack4(mod.qweight)[:, :k]  # signed nibbles
        q = ((u.astype(np.int16) + 8) % 16).astype(np.uint8)
        d = mod.scales.float().numpy()
    return {"type": "Q4_0", "q": np.ascontiguousarray(q), "d": np.ascontiguousarray(d, dtype=np.float32),
            "m": None, "origin": "GPTQ"}


def gptq_grids(model, chunks: list[list[int]], work: Path) -> tuple[dict, dict]:
    """({transformers module name: grid} for every linear GPTQ quantized, {module: why not}). Linears whose
    input width is not a multiple of 32 and the output layer are left out (as the RTN path leaves them)."""
    import torch
    from neural_compressor.common import options
    from neural_compressor.torch.algorithms.weight_only.modules import INCWeightOnlyLinear
    from neural_compressor.torch.quantization import GPTQConfig, convert, prepare

    for name in ("neural_compressor", "neural_compressor.common"):
        logging.getLogger(name).setLevel(logging.WARNING)
    scratch = work / ".gptq"
    scratch.mkdir(parents=True, exist_ok=True)
    options.workspace = str(scratch)  # it writes its workspace there, not into the caller's folder
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    skipped = {n: f"input width {model.get_submodule(n).in_features} is not a multiple of {BLOCK}"
               for n in linears if model.get_submodule(n).in_features % BLOCK}
    skipped.update({n: "the output layer keeps its own 8-bit quantization" for n in linears if n.endswith("lm_head")})
    cfg = GPTQConfig(bits=4, use_sym=True, group_size=BLOCK, act_order=False, use_layer_wise=False,
                     quant_lm_head=False, model_path=str(scratch))  # model_path: read only layer-wise
    threads = torch.get_num_threads()
    try:
        q = prepare(copy.deepcopy(model).float().eval(), cfg)
        with torch.no_grad():
            for ids in chunks:
                q(torch.tensor([ids]))  # block 0's inputs are recorded; GPTQ then runs block by block
        q = convert(q)
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(scratch, ignore_errors=True)
    grids = {}
    for n in linears:
        mod = q.get_submodule(n)
        if isinstance(mod, INCWeightOnlyLinear) and n not in skipped:
            grids[n] = read_grid(mod)
        elif n not in skipped:
            skipped[n] = "not quantized by neural-compressor"
    return grids, skipped
