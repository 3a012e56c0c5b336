"""GGUF block encoders for tests: a float matrix [N, K] rounded to a block type and written in ggml's byte
layout (what llama.cpp's llama-quantize writes), for the types gguf-py cannot write (the K-quants). gguf-py's
own `dequantize` reads them back, which checks the layout; edgeslm's reader (models/gguf_grid) must give the
same integers. The rounding is plain (no search for the best scales): these are test tensors, not a
quantizer."""

from __future__ import annotations

import numpy as np

QK = 256


def _f16(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float16)


def _k_scale_bytes(sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """sc, mn [..., 8] 6-bit -> ggml's 12 bytes per super-block (the inverse of get_scale_min_k4)."""
    out = np.zeros((*sc.shape[:-1], 12), dtype=np.uint8)
    out[..., 0:4] = (sc[..., :4] & 63) | ((sc[..., 4:] >> 4) << 6)
    out[..., 4:8] = (mn[..., :4] & 63) | ((mn[..., 4:] >> 4) << 6)
    out[..., 8:12] = (sc[..., 4:] & 15) | ((mn[..., 4:] & 15) << 4)
    return out


def quantize(w: np.ndarray, kind: str) -> np.ndarray:
    """w float [N, K] (K a multiple of 256) as `kind` (Q4_K, Q5_K, Q6_K) blocks, uint8 [N, K / 256 * size]."""
    n, k = w.shape
    x = w.astype(np.float32).reshape(n, k // QK, QK)
    if kind in ("Q4_K", "Q5_K"):
        qmax = 15 if kind == "Q4_K" else 31
        sub = x.reshape(n, -1, 8, 32)
        lo = np.minimum(sub.min(-1), 0.0)
        scale = (sub.max(-1) - lo) / qmax
        d = _f16(scale.max(-1) / 63).astype(np.float32)
        dmin = _f16((-lo).max(-1) / 63).astype(np.float32)
        sc = np.clip(np.round(np.divide(scale, d[..., None], out=np.zeros_like(scale), where=d[..., None] > 0)), 0, 63)
        mn = np.clip(np.round(np.divide(-lo, dmin[..., None], out=np.zeros_like(lo), where=dmin[..., None] > 0)), 0, 63)
        step, base = d[..., None] * sc, dmin[..., None] * mn
        q = np.clip(np.round(np.divide(sub + base[..., None], step[..., None], out=np.zeros_like(sub),
                                       where=step[..., None] > 0)), 0, qmax).astype(np.uint8).reshape(n, -1, QK)
        ql = q.reshape(n, -1, 4, 2, 32) & 0x0F  # group g of 64: low nibbles hold its first 32, high ones the rest
        qs = (ql[:, :, :, 0] | (ql[:, :, :, 1] << 4)).reshape(n, -1, 128)
        parts = [_f16(d)[..., None].view(np.uint8), _f16(dmin)[..., None].view(np.uint8),
                 _k_scale_bytes(sc.astype(np.uint8), mn.astype(np.uint8))]
        if kind == "Q5_K":  # byte l, bit i: bit 4 of element 32 i + l
            hb = ((q >> 4) & 1).reshape(n, -1, 8, 32)
            parts.append((hb << np.arange(8, dtype=np.uint8)[None, None, :, None]).sum(2).astype(np.uint8))
        return np.concatenate(parts + [qs], axis=-1).reshape(n, -1)
    if kind == "Q6_K":
        sub = x.reshape(n, -1, 16, 16)
        amax = np.abs(sub).max(-1)
        scale = amax / 31
        d = _f16(np.abs(scale).max(-1) / 127).astype(np.float32)
        sc = np.clip(np.round(np.divide(scale, d[..., None], out=np.zeros_like(scale), where=d[..., None] > 0)),
                     -128, 127)
        step = d[..., None] * sc
        q = (np.clip(np.round(np.divide(sub, step[..., None], out=np.zeros_like(sub), where=step[..., None] != 0)),
                     -32, 31) + 32).astype(np.uint8).reshape(n, -1, 2, 128)  # [super, half, 128]
        lo = (q & 0x0F).reshape(n, -1, 2, 2, 64)
        ql = (lo[:, :, :, 0] | (lo[:, :, :, 1] << 4)).reshape(n, -1, 128)
        hi = (q >> 4).reshape(n, -1, 2, 4, 32)
        qh = (hi << np.array([0, 2, 4, 6], dtype=np.uint8)[None, None, None, :, None]).sum(3).astype(np.uint8)
        return np.concatenate([ql, qh.reshape(n, -1, 64), sc.astype(np.int8).view(np.uint8),
                               _f16(d)[..., None].view(np.uint8)], axis=-1).reshape(n, -1)
    raise ValueError(kind)


def encode(w: np.ndarray, kind: str) -> np.ndarray:
    """w as `kind`: gguf-py's quantizer for the types it writes, this module's for the K-quants."""
    import gguf

    if kind in ("Q4_K", "Q5_K", "Q6_K"):
        return quantize(w, kind)
    return gguf.quants.quantize(np.ascontiguousarray(w, dtype=np.float32), getattr(gguf.GGMLQuantizationType, kind))


class Tensor:
    """What models/gguf_grid reads of a GGUFReader tensor: its type's name and its raw block bytes."""

    def __init__(self, kind: str, data: np.ndarray):
        import gguf

        self.tensor_type = getattr(gguf.GGMLQuantizationType, kind)
        self.data = data
