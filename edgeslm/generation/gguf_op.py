"""`edgeslm::gguf_linear`: a linear layer over a GGUF file's own Q4_1 blocks, the .pte's way to run that grid
exactly (XNNPACK's int4 kernels have one zero point per tensor, so they cannot add Q4_1's per-block minimums).

    edgeslm::gguf_linear(Tensor x, Tensor tiles, int ggml_type) -> Tensor      (and its .out variant)

`tiles` holds the file's Q4_1 blocks (w = q d + m, a fp16 d and m per 32 weights) with their bits unchanged,
rearranged in tiles of 16 rows for SIMD (pack_q4_1). The device kernel (runner/native/gguf_linear.cpp)
quantizes x per block of 32 the way llama.cpp's Q8_1 does and takes each block's sum from the same integers;
the reference here computes the same quantities in float, so eager and .pte agree to float rounding.
torch.export records the operator (`GGUFLinear` calls it while exporting); eager runs keep the unpacked
grid and skip the repacking.
"""

from __future__ import annotations

import numpy as np

Q4_1 = 3  # GGML_TYPE_Q4_1
BLOCK = 32
TILE = 16
TILE_BYTES = 320
_LIB = None


def pack_q4_1(g: dict) -> np.ndarray:
    """A Q4_1 grid ({"q" uint8 [N, K] 0..15, "d", "m" [N, K/32]}) as the kernel's tiles, uint8 [ceil(N/16),
    K/32*320]: per tile of 16 rows and block of 32 inputs, 16 fp16 d, 16 fp16 m, then 4 chunks of 64 bytes
    whose byte 4 r + j holds q[r][4 c + j] (low nibble) and q[r][16 + 4 c + j] (high). Rows past N are zero."""
    n, k = g["q"].shape
    nt, nb = -(-n // TILE), k // BLOCK
    q = np.zeros((nt * TILE, nb, BLOCK), dtype=np.uint8)
    q[:n] = g["q"].reshape(n, nb, BLOCK)
    d, m = (np.zeros((nt * TILE, nb), dtype=np.float16) for _ in range(2))
    d[:n], m[:n] = g["d"], g["m"]
    q = q.reshape(nt, TILE, nb, 2, 4, 4).transpose(0, 2, 3, 4, 1, 5)  # [tile, block, half, c, row, j]
    nibbles = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(nt, nb, 256)
    out = np.concatenate([d.reshape(nt, TILE, nb).transpose(0, 2, 1).copy().view(np.uint8),
                          m.reshape(nt, TILE, nb).transpose(0, 2, 1).copy().view(np.uint8), nibbles], axis=-1)
    return np.ascontiguousarray(out.reshape(nt, nb * TILE_BYTES))


def unpack_q4_1(tiles):
    """uint8 tiles [N/16, nb*320] (a torch tensor) -> (q float [N, nb, 32], d [N, nb], m [N, nb]), N padded
    to whole tiles."""
    import torch

    nt = tiles.shape[0]
    t = tiles.reshape(nt, -1, TILE_BYTES)
    nb = t.shape[1]
    d = t[..., 0:32].contiguous().view(torch.float16).float().permute(0, 2, 1).reshape(nt * TILE, nb)
    m = t[..., 32:64].contiguous().view(torch.float16).float().permute(0, 2, 1).reshape(nt * TILE, nb)
    nib = t[..., 64:].reshape(nt, nb, 4, TILE, 4)  # [tile, block, c, row, j]
    q = torch.stack([nib & 0x0F, nib >> 4], dim=2)  # [tile, block, half, c, row, j]
    q = q.permute(0, 4, 1, 2, 3, 5).reshape(nt * TILE, nb, BLOCK)
    return q.float(), d, m


def dequantize_tiles(tiles: np.ndarray) -> np.ndarray:
    """The weights a tile array holds, float32 [N (padded to whole tiles), K]: w = q d + m per block."""
    import torch

    q, d, m = unpack_q4_1(torch.from_numpy(np.ascontiguousarray(tiles)))
    return (q * d.unsqueeze(-1) + m.unsqueeze(-1)).reshape(q.shape[0], -1).numpy()


def reference(x, unpacked):
    """x [..., K] through an unpacked Q4_1 grid with x quantized as llama.cpp's Q8_1 (float arithmetic)."""
    import torch

    q, d, m = unpacked
    n, nb, _ = q.shape
    lead = x.shape[:-1]
    xb = x.reshape(-1, nb, BLOCK).float()
    dx = xb.abs().amax(-1) / 127.0
    qx = torch.round(xb * torch.where(dx != 0, 1.0 / dx, torch.zeros_like(dx)).unsqueeze(-1))
    sx = dx * qx.sum(-1)
    out = []
    for r in range(0, xb.shape[0], 64):  # [rows, N, nb] products, a chunk of rows at a time
        dots = torch.einsum("rbj,nbj->rnb", qx[r:r + 64], q)
        out.append((dots * d.unsqueeze(0) * dx[r:r + 64].unsqueeze(1)).sum(-1) + sx[r:r + 64] @ m.T)
    return torch.cat(out).reshape(*lead, n).to(x.dtype)


def register() -> None:
    """Define edgeslm::gguf_linear (and .out, which ExecuTorch's program calls) in torch, once per process."""
    global _LIB
    if _LIB is not None:
        return
    import torch

    lib = torch.library.Library("edgeslm", "DEF")
    lib.define("gguf_linear(Tensor x, Tensor tiles, int ggml_type) -> Tensor")
    lib.define("gguf_linear.out(Tensor x, Tensor tiles, int ggml_type, *, Tensor(a!) out) -> Tensor(a!)")

    def _check(ggml_type):
        if ggml_type != Q4_1:
            raise ValueError(f"edgeslm::gguf_linear: ggml type {ggml_type} (only Q4_1 = {Q4_1})")

    def functional(x, blocks, ggml_type):
        _check(ggml_type)
        return reference(x, unpack_q4_1(blocks))

    def out_variant(x, blocks, ggml_type, *, out):
        out.resize_(*x.shape[:-1], blocks.shape[0] * TILE).copy_(functional(x, blocks, ggml_type))
        return out

    def meta(x, blocks, ggml_type):
        return x.new_empty((*x.shape[:-1], blocks.shape[0] * TILE))

    def meta_out(x, blocks, ggml_type, *, out):
        return out.resize_(*x.shape[:-1], blocks.shape[0] * TILE)

    lib.impl("gguf_linear", functional, "CompositeExplicitAutograd")
    lib.impl("gguf_linear.out", out_variant, "CompositeExplicitAutograd")
    lib.impl("gguf_linear", meta, "Meta")
    lib.impl("gguf_linear.out", meta_out, "Meta")
    _LIB = lib


def gguf_linear_module(blocks: np.ndarray, out_features: int, bias=None):
    """An nn.Module y = x W^T (+ bias) over Q4_1 `blocks` (pack_q4_1): the operator when exported, the
    reference over the grid unpacked once when run eagerly."""
    import torch

    register()

    class GGUFLinear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("blocks", torch.from_numpy(np.ascontiguousarray(blocks)))
            self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)
            self.in_features, self.out_features = blocks.shape[1] // TILE_BYTES * BLOCK, out_features
            self._unpacked = None

        def forward(self, x):
            if torch.compiler.is_exporting():
                y = torch.ops.edgeslm.gguf_linear(x, self.blocks, Q4_1)
            else:
                if self._unpacked is None:
                    self._unpacked = unpack_q4_1(self.blocks)
                y = reference(x, self._unpacked)
            if y.shape[-1] != self.out_features:  # rows padded to whole tiles
                y = y[..., :self.out_features]
            return y if self.bias is None else y + self.bias

    return GGUFLinear()
