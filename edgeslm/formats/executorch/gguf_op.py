"""`edgeslm::gguf_linear`: a linear layer over a GGUF file's own Q4_1 or Q8_0 blocks, the .pte's way to run
those grids exactly (XNNPACK's int4 kernels have one zero point per tensor, so they cannot add Q4_1's
per-block minimums; its int8 kernels take one scale per output channel, not one per block of 32).

    edgeslm::gguf_linear(Tensor x, Tensor tiles, int ggml_type) -> Tensor      (and its .out variant)

`tiles` holds the file's blocks (Q4_1: w = q d + m, a fp16 d and m per 32 weights; Q8_0: w = q d, q int8)
with their bits unchanged, rearranged in tiles of 16 rows for SIMD (pack). The device kernel
(native/src/gguf_linear.cpp)
quantizes x per block of 32 the way llama.cpp's Q8_1 does and takes each block's sum from the same integers;
the reference here computes the same quantities in float, so eager and .pte agree to float rounding.
torch.export records the operator (`GGUFLinear` calls it while exporting); eager runs keep the unpacked
grid and skip the repacking.
"""

from __future__ import annotations

import numpy as np

Q4_1 = 3  # GGML_TYPE_Q4_1
Q8_0 = 8  # GGML_TYPE_Q8_0
BLOCK = 32
TILE = 16
TILE_BYTES = {Q4_1: 320, Q8_0: 544}  # per tile of 16 rows and block of 32 inputs
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
    return np.ascontiguousarray(out.reshape(nt, nb * TILE_BYTES[Q4_1]))


def pack_q8_0(g: dict) -> np.ndarray:
    """A Q8_0 grid ({"q" uint8 [N, K] holding q + 128, "d" [N, K/32]}, gguf_grid's form) as the kernel's tiles,
    uint8 [ceil(N/16), K/32*544]: per tile of 16 rows and block of 32 inputs, 16 fp16 d, then 8 chunks of 64
    bytes whose byte 4 r + j holds q[r][4 c + j] (int8, the file's value). Rows past N are zero."""
    n, k = g["q"].shape
    nt, nb = -(-n // TILE), k // BLOCK
    q = np.zeros((nt * TILE, nb, BLOCK), dtype=np.int8)
    q[:n] = (g["q"].astype(np.int16) - 128).astype(np.int8).reshape(n, nb, BLOCK)
    d = np.zeros((nt * TILE, nb), dtype=np.float16)
    d[:n] = g["d"]
    q = q.reshape(nt, TILE, nb, 8, 4).transpose(0, 2, 3, 1, 4).reshape(nt, nb, 512)  # [tile, block, c, row, j]
    out = np.concatenate([d.reshape(nt, TILE, nb).transpose(0, 2, 1).copy().view(np.uint8), q.view(np.uint8)],
                         axis=-1)
    return np.ascontiguousarray(out.reshape(nt, nb * TILE_BYTES[Q8_0]))


def pack(g: dict) -> tuple[np.ndarray, int]:
    """A Q4_1 or Q8_0 grid as (tiles, ggml type)."""
    if g["type"] == "Q4_1":
        return pack_q4_1(g), Q4_1
    if g["type"] == "Q8_0":
        return pack_q8_0(g), Q8_0
    raise ValueError(f"edgeslm::gguf_linear runs Q4_1 and Q8_0 blocks, not {g['type']}")


def unpack(tiles, ggml_type: int):
    """uint8 tiles (a torch tensor) -> (q float [N, nb, 32], d [N, nb], m [N, nb]) with N padded to whole tiles;
    Q8_0's m is zero."""
    return unpack_q4_1(tiles) if ggml_type == Q4_1 else unpack_q8_0(tiles)


def unpack_q8_0(tiles):
    import torch

    nt = tiles.shape[0]
    t = tiles.reshape(nt, -1, TILE_BYTES[Q8_0])
    nb = t.shape[1]
    d = t[..., 0:32].contiguous().view(torch.float16).float().permute(0, 2, 1).reshape(nt * TILE, nb)
    q = t[..., 32:].contiguous().view(torch.int8).reshape(nt, nb, 8, TILE, 4)  # [tile, block, c, row, j]
    q = q.permute(0, 3, 1, 2, 4).reshape(nt * TILE, nb, BLOCK)
    return q.float(), d, torch.zeros_like(d)


def unpack_q4_1(tiles):
    """uint8 tiles [N/16, nb*320] (a torch tensor) -> (q float [N, nb, 32], d [N, nb], m [N, nb]), N padded
    to whole tiles."""
    import torch

    nt = tiles.shape[0]
    t = tiles.reshape(nt, -1, TILE_BYTES[Q4_1])
    nb = t.shape[1]
    d = t[..., 0:32].contiguous().view(torch.float16).float().permute(0, 2, 1).reshape(nt * TILE, nb)
    m = t[..., 32:64].contiguous().view(torch.float16).float().permute(0, 2, 1).reshape(nt * TILE, nb)
    nib = t[..., 64:].reshape(nt, nb, 4, TILE, 4)  # [tile, block, c, row, j]
    q = torch.stack([nib & 0x0F, nib >> 4], dim=2)  # [tile, block, half, c, row, j]
    q = q.permute(0, 4, 1, 2, 3, 5).reshape(nt * TILE, nb, BLOCK)
    return q.float(), d, m


def dequantize_tiles(tiles: np.ndarray, ggml_type: int = Q4_1) -> np.ndarray:
    """The weights a tile array holds, float32 [N (padded to whole tiles), K]: w = q d + m per block."""
    import torch

    q, d, m = unpack(torch.from_numpy(np.ascontiguousarray(tiles)), ggml_type)
    return (q * d.unsqueeze(-1) + m.unsqueeze(-1)).reshape(q.shape[0], -1).numpy()


def reference(x, unpacked):
    """x [..., K] through an unpacked grid (Q4_1, or Q8_0 with m = 0) with x quantized as llama.cpp's Q8_1
    (float arithmetic)."""
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
        if ggml_type not in TILE_BYTES:
            raise ValueError(f"edgeslm::gguf_linear: ggml type {ggml_type} (Q4_1 = {Q4_1} or Q8_0 = {Q8_0})")

    def functional(x, blocks, ggml_type):
        _check(ggml_type)
        return reference(x, unpack(blocks, ggml_type))

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


def gguf_linear_module(blocks: np.ndarray, out_features: int, bias=None, ggml_type: int = Q4_1):
    """An nn.Module y = x W^T (+ bias) over `blocks` of `ggml_type` (pack): the operator when exported, the
    reference over the grid unpacked once when run eagerly."""
    import torch

    register()

    class GGUFLinear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("blocks", torch.from_numpy(np.ascontiguousarray(blocks)))
            self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)
            self.in_features, self.out_features = blocks.shape[1] // TILE_BYTES[ggml_type] * BLOCK, out_features
            self._unpacked = None

        def forward(self, x):
            if torch.compiler.is_exporting():
                y = torch.ops.edgeslm.gguf_linear(x, self.blocks, ggml_type)
            else:
                if self._unpacked is None:
                    self._unpacked = unpack(self.blocks, ggml_type)
                y = reference(x, self._unpacked)
            if y.shape[-1] != self.out_features:  # rows padded to whole tiles
                y = y[..., :self.out_features]
            return y if self.bias is None else y + self.bias

    return GGUFLinear()
