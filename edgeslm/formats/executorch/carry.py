"""Carrying a GGUF's (or GPTQ's) integer grid into the .pte's decoder (edgeslm.models.gguf_grid reads the grids):
a GGUF's linears and its output layer become edgeslm::gguf_linear over the file's blocks (every type gguf_grid
reads), GPTQ's symmetric int4 goes into torchao's 8da4w int4 as XNNPACK runs it, a Q8_0 embedding table into ExecuTorch's int8 embedding. Exact."""

from __future__ import annotations

import numpy as np

from edgeslm.models.gguf_grid import BLOCK


def swap_gguf_linears(decoder, grids: dict, prefix: str = "model.") -> list[str]:
    """Replace the linears whose grid is a GGUF's Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 or a K-quant (Q4_K, Q5_K, Q6_K),
    and the output layer ("lm_head", often the tied embedding table) with any carried grid (a GPTQ grid's
    symmetric int4 stays for torchao), by `edgeslm::gguf_linear` over the file's blocks
    (formats/executorch/gguf_op.py; edgeslm's kernel in the device runtime, int8 activations per block of 32 as llama.cpp's Q8_1). Exact. XNNPACK's int4
    kernels have one zero point per tensor and cannot add Q4_1's per-block minimums; its int8 kernels have
    one scale per output channel, not per block. Runs before torchao, which then leaves them alone.

    `decoder` module names are the transformers names behind `prefix`. Returns the names swapped."""
    from edgeslm.formats.executorch.gguf_op import TYPES, gguf_linear_module, pack

    done = []
    for fqn, mod in list(decoder.named_modules()):
        name = fqn[len(prefix):] if fqn.startswith(prefix) else None
        g = grids.get(name) if name and name != "embed_tokens" else None
        w = getattr(mod, "weight", None)
        if g is None or w is None or tuple(w.shape) != g["q"].shape:
            continue
        if g["type"] == "Q4_0" and name != "lm_head" and g.get("origin") != "GGUF":
            continue  # GPTQ's symmetric int4: torchao's, as XNNPACK runs it (carry_into_torchao)
        if g["type"] in TYPES:
            parent, _, child = fqn.rpartition(".")
            tiles, kind = pack(g)
            setattr(decoder.get_submodule(parent), child,
                    gguf_linear_module(tiles, g["q"].shape[0], getattr(mod, "bias", None), kind))
            done.append(name)
    return done


def carry_into_torchao(decoder, grids: dict, prefix: str = "model.") -> list[str]:
    """Put Q4_0 grids (w = (q - 8) d) into torchao's 8da4w linears (IntxUnpackedToInt8Tensor: qdata in [-8, 7],
    a scale per group of 32, zero point 0), as XNNPACK runs them: qdata = q - 8, scale = d. Exact. Runs after
    torchao quantized them. Returns the names carried."""
    import torch

    done = []
    for fqn, mod in list(decoder.named_modules()):
        name = fqn[len(prefix):] if fqn.startswith(prefix) else None
        g = grids.get(name) if name and name != "embed_tokens" else None
        w = getattr(mod, "weight", None)
        if g is None or g["type"] != "Q4_0" or w is None:
            continue
        if not hasattr(w, "qdata") or tuple(w.block_size) != (1, BLOCK) or tuple(w.qdata.shape) != g["q"].shape:
            continue
        with torch.no_grad():
            w.qdata.copy_(torch.from_numpy(g["q"].astype(np.int16) - 8).to(torch.int8))
            w.scale.copy_(torch.from_numpy(g["d"]).reshape(w.scale.shape))
            w.zero_point.zero_()
        done.append(name)
    return done


def carry_embedding(decoder, grid: dict | None) -> bool:
    """Put a Q8_0 grid of the token embedding table into the decoder's int8 embedding (ExecuTorch's
    QuantizedGroupEmbedding with a fp16 scale per 32 values, run by quantized_decomposed::embedding_byte):
    weight = q, scales = d, exactly the file's lookup. Returns whether it was carried."""
    import torch

    if grid is None or grid["type"] != "Q8_0":
        return False
    for _, mod in decoder.named_modules():
        w, scales = getattr(mod, "weight", None), getattr(mod, "scales", None)
        if (type(mod).__name__ == "QuantizedGroupEmbedding" and w is not None and scales is not None
                and tuple(w.shape) == grid["q"].shape and tuple(scales.shape) == grid["d"].shape):
            with torch.no_grad():
                w.copy_(torch.from_numpy(grid["q"].astype(np.int16) - 128).to(torch.int8))
                scales.copy_(torch.from_numpy(grid["d"]).to(scales.dtype))
            return True
    return False
