"""`edgeslm::gguf_linear`: a linear layer over a GGUF file's own blocks, the .pte's way to run those grids exactly
(XNNPACK's int4 kernels have one zero point per tensor, so they cannot add Q4_1's per-block minimums; its int8
kernels take one scale per output channel, not one per block of 32; nothing in XNNPACK holds a K-quant's
super-block).

    edgeslm::gguf_linear(Tensor x, Tensor tiles, int ggml_type) -> Tensor      (and its .out variant)

`tiles` holds the file's blocks with their bits unchanged, rearranged in tiles of 16 rows for SIMD (pack):
Q4_0 (w = (q - 8) d), Q4_1 (w = q d + m, a fp16 d and m per 32 weights), Q8_0 (w = q d, q int8), Q5_0 / Q5_1 (Q4_1's tile plus a
plane of bit 4), Q4_K / Q5_K (per super-block of 256: fp16 d and dmin, per block of 32 the 6-bit sc and m,
nibbles, [bit 4]; w = d sc q - dmin m) and Q6_K (fp16 d, int8 sc per 16, nibbles, bits 4 and 5;
w = d sc (q - 32)). The device kernel (native/src/gguf_linear.cpp, gguf_tiles.h) quantizes x per block of 32
the way llama.cpp's Q8_1 does, takes each block's (and half block's) sum from the same integers, and sums
integer dot products per block or sub-block times the integer scales; the reference here computes the same
quantities in float per half block (w = q D + M), so eager and .pte agree to float rounding. torch.export
records the operator (`GGUFLinear` calls it while exporting); eager runs keep the unpacked grid and skip the
repacking.
"""

from __future__ import annotations

import numpy as np

Q4_0 = 2  # GGML_TYPE_Q4_0
Q4_1 = 3  # GGML_TYPE_Q4_1
Q5_0, Q5_1 = 6, 7  # GGML_TYPE_Q5_0 / Q5_1 (one tile layout: Q5_0 as Q5_1 with m = -16 d, exact)
Q8_0 = 8  # GGML_TYPE_Q8_0
Q4_K, Q5_K, Q6_K = 12, 13, 14  # the K-quants: super-blocks of 256
BLOCK = 32
SUPER = 256
TILE = 16
NIB, PLANE = 256, 64  # bytes of a tile's block of 32: its nibbles; one bit plane
REC = {Q4_K: 32 + NIB, Q5_K: 32 + NIB + PLANE, Q6_K: 32 + NIB + 2 * PLANE}  # per block of 32 in a super-block
# per tile of 16 rows and unit of inputs (a block of 32; a super-block of 256 for the K-quants)
TILE_BYTES = {Q4_0: 288, Q4_1: 320, Q8_0: 544, Q5_0: 384, Q5_1: 384, Q4_K: 64 + 8 * REC[Q4_K], Q5_K: 64 + 8 * REC[Q5_K],
              Q6_K: 32 + 8 * REC[Q6_K]}
UNIT = {t: SUPER if t in REC else BLOCK for t in TILE_BYTES}
TYPES = {"Q4_0": Q4_0, "Q4_1": Q4_1, "Q5_0": Q5_0, "Q5_1": Q5_1, "Q8_0": Q8_0, "Q4_K": Q4_K, "Q5_K": Q5_K, "Q6_K": Q6_K}
_LIB = None


def _rows(a: np.ndarray, nt: int, dtype) -> np.ndarray:
    """`a` [N, ...] padded with zero rows to whole tiles."""
    out = np.zeros((nt * TILE, *a.shape[1:]), dtype=dtype)
    out[:a.shape[0]] = a
    return out


def _per_tile(a: np.ndarray, nt: int, units: int, per: int = 1) -> np.ndarray:
    """Per-row values [N_pad, units * per] as [tile, unit, per, row] bytes (row r of a tile at byte r)."""
    return a.reshape(nt, TILE, units, per).transpose(0, 2, 3, 1).copy().view(np.uint8).reshape(nt, units, -1)


def _nibbles(q: np.ndarray) -> np.ndarray:
    """q [tiles * 16, blocks, 32] (0..63) -> the low 4 bits, [tile, block, 256] in Q4_1's chunk layout: byte
    4 r + j of chunk c holds q[r][4 c + j] (low nibble) and q[r][16 + 4 c + j] (high)."""
    nt, nb = q.shape[0] // TILE, q.shape[1]
    q = (q & 0x0F).reshape(nt, TILE, nb, 2, 4, 4).transpose(0, 2, 3, 4, 1, 5)  # [tile, block, half, c, row, j]
    return (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(nt, nb, NIB)


def _plane(q: np.ndarray, bit: int) -> np.ndarray:
    """Bit `bit` of q [tiles * 16, blocks, 32] as a plane, [tile, block, 64]: per chunk c, 8 bytes whose bit i
    (little-endian) is the bit of the low value at nibble byte i (i = 4 r + j), then 8 for the high values."""
    nt, nb = q.shape[0] // TILE, q.shape[1]
    b = ((q >> bit) & 1).reshape(nt, TILE, nb, 2, 4, 4).transpose(0, 2, 4, 3, 1, 5)  # [tile, block, c, half, row, j]
    return np.packbits(b.reshape(nt, nb, 4, 2, 64).astype(np.uint8), axis=-1, bitorder="little").reshape(nt, nb, PLANE)


def pack_q4_1(g: dict) -> np.ndarray:
    """A Q4_1 grid ({"q" uint8 [N, K] 0..15, "d", "m" [N, K/32]}) as the kernel's tiles, uint8 [ceil(N/16),
    K/32*320]: per tile of 16 rows and block of 32 inputs, 16 fp16 d, 16 fp16 m, then 4 chunks of 64 bytes
    whose byte 4 r + j holds q[r][4 c + j] (low nibble) and q[r][16 + 4 c + j] (high). Rows past N are zero."""
    n, k = g["q"].shape
    nt, nb = -(-n // TILE), k // BLOCK
    q = _rows(g["q"].reshape(n, nb, BLOCK), nt, np.uint8)
    out = np.concatenate([_per_tile(_rows(g["d"], nt, np.float16), nt, nb),
                          _per_tile(_rows(g["m"], nt, np.float16), nt, nb), _nibbles(q)], axis=-1)
    return np.ascontiguousarray(out.reshape(nt, nb * TILE_BYTES[Q4_1]))


def pack_q4_0(g: dict) -> np.ndarray:
    """A Q4_0 grid (w = (q - 8) d, q 0..15) as tiles uint8 [ceil(N/16), K/32*288]: per tile of 16 rows and block of
    32 inputs, 16 fp16 d, then the nibbles in Q4_1's chunk layout (the kernel takes 8 sum(q_x) off in integers)."""
    n, k = g["q"].shape
    nt, nb = -(-n // TILE), k // BLOCK
    q = _rows(g["q"].reshape(n, nb, BLOCK), nt, np.uint8)
    out = np.concatenate([_per_tile(_rows(g["d"], nt, np.float16), nt, nb), _nibbles(q)], axis=-1)
    return np.ascontiguousarray(out.reshape(nt, nb * TILE_BYTES[Q4_0]))


def pack_q5(g: dict) -> np.ndarray:
    """A Q5_0 (w = (q - 16) d) or Q5_1 (w = q d + m) grid, q 0..31, as tiles uint8 [ceil(N/16), K/32*384]: Q4_1's
    tile of the low 4 bits (Q5_0's m = -16 d, exact in fp16), then the plane of bit 4."""
    n, k = g["q"].shape
    nt, nb = -(-n // TILE), k // BLOCK
    m = g["m"] if g["m"] is not None else -16 * g["d"]
    q = _rows(g["q"].reshape(n, nb, BLOCK), nt, np.uint8)
    out = np.concatenate([_per_tile(_rows(g["d"], nt, np.float16), nt, nb),
                          _per_tile(_rows(m, nt, np.float16), nt, nb), _nibbles(q), _plane(q, 4)], axis=-1)
    return np.ascontiguousarray(out.reshape(nt, nb * TILE_BYTES[Q5_1]))


def pack_k(g: dict) -> np.ndarray:
    """A K-quant grid as tiles uint8 [ceil(N/16), K/256*B], per tile of 16 rows and super-block of 256 inputs:
    Q4_K / Q5_K ({"q" 0..15 / 0..31, "d", "dmin" [N, K/256], "sc", "mn" 6-bit [N, K/32]}: w = d sc q - dmin mn):
    16 fp16 d, 16 fp16 dmin, then per block of 32: 16 sc, 16 mn, the nibbles, (Q5_K) the plane of bit 4.
    Q6_K ({"q" 0..63, "d" [N, K/256], "sc" int8 [N, K/16]}: w = d sc (q - 32)): 16 fp16 d, then per block of
    32: 16 sc of inputs 0..15, 16 of inputs 16..31, the nibbles, the planes of bits 4 and 5."""
    kind = TYPES[g["type"]]
    n, k = g["q"].shape
    nt, ns, nb = -(-n // TILE), k // SUPER, k // BLOCK
    q = _rows(g["q"].reshape(n, nb, BLOCK), nt, np.uint8)
    per_sc = 2 if kind == Q6_K else 1
    sc = _per_tile(_rows(g["sc"], nt, np.int8 if kind == Q6_K else np.uint8), nt, nb, per_sc)  # [tile, block, 16*per]
    parts = [sc] + ([] if kind == Q6_K else [_per_tile(_rows(g["mn"], nt, np.uint8), nt, nb)]) + [_nibbles(q)]
    parts += [_plane(q, 4)] if kind in (Q5_K, Q6_K) else []
    parts += [_plane(q, 5)] if kind == Q6_K else []
    recs = np.concatenate(parts, axis=-1).reshape(nt, ns, 8 * REC[kind])
    head = [_per_tile(_rows(g["d"], nt, np.float16), nt, ns)]
    head += [] if kind == Q6_K else [_per_tile(_rows(g["dmin"], nt, np.float16), nt, ns)]
    out = np.concatenate(head + [recs], axis=-1)
    return np.ascontiguousarray(out.reshape(nt, ns * TILE_BYTES[kind]))


def pack_q8_0(g: dict) -> np.ndarray:
    """A Q8_0 grid ({"q" uint8 [N, K] holding q + 128, "d" [N, K/32]}, gguf_grid's form) as the kernel's tiles,
    uint8 [ceil(N/16), K/32*544]: per tile of 16 rows and block of 32 inputs, 16 fp16 d, then 8 chunks of 64
    bytes whose byte 4 r + j holds q[r][4 c + j] (int8, the file's value). Rows past N are zero."""
    n, k = g["q"].shape
    nt, nb = -(-n // TILE), k // BLOCK
    q = np.zeros((nt * TILE, nb, BLOCK), dtype=np.int8)
    q[:n] = (g["q"].astype(np.int16) - 128).astype(np.int8).reshape(n, nb, BLOCK)
    q = q.reshape(nt, TILE, nb, 8, 4).transpose(0, 2, 3, 1, 4).reshape(nt, nb, 512)  # [tile, block, c, row, j]
    out = np.concatenate([_per_tile(_rows(g["d"], nt, np.float16), nt, nb), q.view(np.uint8)], axis=-1)
    return np.ascontiguousarray(out.reshape(nt, nb * TILE_BYTES[Q8_0]))


def pack(g: dict) -> tuple[np.ndarray, int]:
    """A grid gguf_grid reads (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) as (tiles, ggml type)."""
    kind = TYPES.get(g["type"])
    if kind is None:
        raise ValueError(f"edgeslm::gguf_linear runs {', '.join(TYPES)} blocks, not {g['type']}")
    if kind == Q4_0:
        return pack_q4_0(g), kind
    if kind == Q4_1:
        return pack_q4_1(g), kind
    if kind == Q8_0:
        return pack_q8_0(g), kind
    return (pack_q5(g) if kind in (Q5_0, Q5_1) else pack_k(g)), kind


def _t_nibbles(nib):
    """[tile, block, 256] nibble bytes (torch uint8) -> q [tile, row, block, 32] low 4 bits."""
    import torch

    nt, nb = nib.shape[:2]
    v = nib.reshape(nt, nb, 4, TILE, 4)  # [tile, block, c, row, j]
    q = torch.stack([v & 0x0F, v >> 4], dim=2)  # [tile, block, half, c, row, j]
    return q.permute(0, 4, 1, 2, 3, 5).reshape(nt, TILE, nb, BLOCK)


def _t_plane(plane, bit: int):
    """[tile, block, 64] plane bytes -> that bit's values, [tile, row, block, 32] (0 or 1 << bit)."""
    import torch

    nt, nb = plane.shape[:2]
    shifts = torch.arange(8, dtype=torch.uint8)
    bits = (plane.reshape(nt, nb, 4, 2, 8, 1) >> shifts) & 1  # [tile, block, c, half, byte, bit]
    bits = bits.reshape(nt, nb, 4, 2, TILE, 4)  # bit i = 4 r + j
    return (bits.permute(0, 4, 1, 3, 2, 5).reshape(nt, TILE, nb, BLOCK) << bit)


def _t_halves(tiles, nt: int, units: int, per: int, dtype):
    """[tile, unit, 16 * per * itemsize] bytes of per-row values -> [tile, row, unit, per] float."""
    return tiles.contiguous().view(dtype).reshape(nt, units, per, TILE).permute(0, 3, 1, 2).float()


def unpack(tiles, ggml_type: int):
    """uint8 tiles (a torch tensor) -> (q float [N, nb, 32], D [N, nb, 2], M [N, nb, 2]) with N padded to whole
    tiles: w = q D + M, per half block (inputs 0..15, 16..31) of each block of 32."""
    import torch

    nt = tiles.shape[0]
    kind = ggml_type
    t = tiles.reshape(nt, -1, TILE_BYTES[kind])
    units = t.shape[1]
    if kind in (Q4_0, Q4_1, Q8_0, Q5_0, Q5_1):
        d = _t_halves(t[..., 0:32], nt, units, 1, torch.float16)[..., 0]
        if kind == Q4_0:
            q = _t_nibbles(t[..., 32:288]).float()
            m = -8 * d
        elif kind == Q8_0:
            q = t[..., 32:].contiguous().view(torch.int8).reshape(nt, units, 8, TILE, 4)  # [tile, block, c, row, j]
            q = q.permute(0, 3, 1, 2, 4).reshape(nt, TILE, units, BLOCK).float()
            m = torch.zeros_like(d)
        else:
            m = _t_halves(t[..., 32:64], nt, units, 1, torch.float16)[..., 0]
            q = _t_nibbles(t[..., 64:320])
            if kind != Q4_1:
                q = q | _t_plane(t[..., 320:384], 4)
            q = q.float()
        D, M = d.unsqueeze(-1).expand(*d.shape, 2), m.unsqueeze(-1).expand(*m.shape, 2)
    else:
        head = 32 if kind == Q6_K else 64
        d = _t_halves(t[..., 0:32], nt, units, 1, torch.float16)  # [tile, row, super, 1]
        recs = t[..., head:].reshape(nt, units * 8, REC[kind])  # [tile, block, record]
        nib = _t_nibbles(recs[..., 32:32 + NIB])
        if kind == Q6_K:
            sc = _t_halves(recs[..., 0:32], nt, units * 8, 2, torch.int8)  # [tile, row, block, 2]
            q = nib | _t_plane(recs[..., 32 + NIB:32 + NIB + PLANE], 4) | _t_plane(recs[..., 32 + NIB + PLANE:], 5)
            D = d.repeat_interleave(8, dim=2) * sc
            M = -32 * D
        else:
            dmin = _t_halves(t[..., 32:64], nt, units, 1, torch.float16)
            sc = _t_halves(recs[..., 0:16], nt, units * 8, 1, torch.uint8)
            mn = _t_halves(recs[..., 16:32], nt, units * 8, 1, torch.uint8)
            q = nib | _t_plane(recs[..., 32 + NIB:], 4) if kind == Q5_K else nib
            D = (d.repeat_interleave(8, dim=2) * sc).expand(-1, -1, -1, 2)
            M = (-dmin.repeat_interleave(8, dim=2) * mn).expand(-1, -1, -1, 2)
        q = q.float()
        units = units * 8
    n = nt * TILE
    return q.reshape(n, units, BLOCK), D.reshape(n, units, 2).contiguous(), M.reshape(n, units, 2).contiguous()


def dequantize_tiles(tiles: np.ndarray, ggml_type: int = Q4_1) -> np.ndarray:
    """The weights a tile array holds, float32 [N (padded to whole tiles), K]: w = q D + M per half block."""
    import torch

    q, D, M = unpack(torch.from_numpy(np.ascontiguousarray(tiles)), ggml_type)
    n, nb, _ = q.shape
    w = q.reshape(n, nb, 2, 16) * D.unsqueeze(-1) + M.unsqueeze(-1)
    return w.reshape(n, -1).numpy()


def reference(x, unpacked):
    """x [..., K] through an unpacked grid (q, D, M per half block) with x quantized as llama.cpp's Q8_1 per
    block of 32 (float arithmetic): each half block adds d_x (D sum(q q_x) + M sum(q_x))."""
    import torch

    q, D, M = unpacked
    n, nb, _ = q.shape
    lead = x.shape[:-1]
    xb = x.reshape(-1, nb, BLOCK).float()
    dx = xb.abs().amax(-1) / 127.0
    qx = torch.round(xb * torch.where(dx != 0, 1.0 / dx, torch.zeros_like(dx)).unsqueeze(-1))
    qx2 = qx.reshape(-1, nb, 2, 16)
    s16 = qx2.sum(-1)  # [rows, nb, 2]
    q2 = q.reshape(n, nb, 2, 16)
    out = []
    for r in range(0, xb.shape[0], 64):  # [rows, N, nb, 2] products, a chunk of rows at a time
        dots = torch.einsum("rbhj,nbhj->rnbh", qx2[r:r + 64], q2)
        per = dots * D.unsqueeze(0) + s16[r:r + 64].unsqueeze(1) * M.unsqueeze(0)
        out.append((per.sum(-1) * dx[r:r + 64].unsqueeze(1)).sum(-1))
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
            raise ValueError(f"edgeslm::gguf_linear: ggml type {ggml_type} is none of "
                             + ", ".join(f"{k} = {v}" for k, v in TYPES.items()))

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
            self.in_features = blocks.shape[1] // TILE_BYTES[ggml_type] * UNIT[ggml_type]
            self.out_features = out_features
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
