"""Carry a GGUF file's own integer grid into the decoder artifacts instead of rounding a second time.

transformers dequantizes a GGUF on load; quantizing those floats again (round to nearest, symmetric int4)
moves every weight off the grid llama.cpp runs exactly. Here the file's integers and scales are read as they
are (`_grid`: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, and the K-quants Q4_K / Q5_K with their 6-bit sub-block scales and
minimums in super-blocks of 256, Q6_K with its int8 scales per 16) and both formats run them:

- The .pte: every linear and the output layer as edgeslm::gguf_linear over the file's blocks rearranged in
  tiles of 16 rows (formats/executorch/carry.py `swap_gguf_linears`, gguf_op.py; edgeslm's kernels in the
  device runtime: AVX-512 VNNI, AVX2, NEON, NEON dotprod, scalar); Q4_0 as Q4_1 with m = -8 d, Q5_0 as Q5_1
  with m = -16 d (exact). A Q8_0 embedding table goes into ExecuTorch's int8 embedding with a scale per block
  of 32 (`carry_embedding`).
- ONNX (formats/onnx/gguf.py), by default (onnx_ops = "edgeslm"): one edgeslm GgufLinear node per projection
  over the same tiles, run by edgeslm's onnxruntime op library with the .pte's kernels; q, k and v held in
  different types (llama-quantize's K_M mixes) one node each, then a Concat. With onnx_ops = "standard"
  (onnxruntime's own ops only): Q4_0 and Q8_0 in MatMulNBits as they are; Q4_1 as one asymmetric 4-bit
  MatMulNBits over the input widened with its block sums (the integer zero point z = round(-m / d) in x's
  blocks, the rest of each minimum, m + z d, through the sums' columns; measured on SmolLM2-135M: KL 0.0033,
  perplexity +0.04%); other types stay as the builder rounded them, and are named.

A tensor is carried only where its dequantized grid equals the weights transformers loaded (Q and K rows
un-permuted as llama.cpp's converter permuted them); anything else keeps the builder's requantized
weights and is listed. The embedding table tied to the head gets its own copy of the head's Q8_0/Q4_0
grid (GatherBlockQuantized).
"""

from __future__ import annotations

import numpy as np

BLOCK = 32
CARRIED = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K")
FLOAT = ("F32", "F16", "BF16")  # a float tensor: no grid to carry, the recipe quantizes it
UNCARRIED = "(not a grid edgeslm carries exactly)"  # module_grids' reason for a block type outside CARRIED
# GGUF tensor name (in block i) -> the transformers module of layer i, and whether llama.cpp permuted its rows
# for RoPE ("heads" / "kv_heads": by that many heads)
HF = {"attn_q": ("self_attn.q_proj", "heads"), "attn_k": ("self_attn.k_proj", "kv_heads"),
      "attn_v": ("self_attn.v_proj", None), "attn_output": ("self_attn.o_proj", None),
      "ffn_gate": ("mlp.gate_proj", None), "ffn_up": ("mlp.up_proj", None), "ffn_down": ("mlp.down_proj", None)}
# onnxruntime-genai builder module name suffix -> GGUF tensor names (rows concatenated in this order)
PARTS = {"attn.qkv_proj": ("attn_q", "attn_k", "attn_v"), "attn.o_proj": ("attn_output",),
         "mlp.gate_proj": ("ffn_gate",), "mlp.up_proj": ("ffn_up",), "mlp.down_proj": ("ffn_down",)}


def _f16(raw: np.ndarray) -> np.ndarray:
    return raw.copy().view(np.float16)[..., 0].astype(np.float32)


def _k_scales(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K / Q5_K: 12 bytes per super-block -> (sc, m) [..., 8], 6 bits each (ggml's get_scale_min_k4)."""
    d, m, md = raw[..., 0:4], raw[..., 4:8], raw[..., 8:12]
    sc = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc, mn


def _grid(tensor) -> dict | None:
    """The file's integers and scales of one tensor [N, K]: {"type", "q" uint8 [N, K], and per type:
    Q4_0 / Q5_0 / Q8_0 "d" [N, K/32] (q 0..15 / 0..31 / q + 128), Q4_1 / Q5_1 "d", "m" [N, K/32],
    Q4_K / Q5_K "d", "dmin" [N, K/256], "sc", "mn" [N, K/32] (6-bit), Q6_K "d" [N, K/256], "sc" int8 [N, K/16]}
    (q 0..63, w = d sc (q - 32)). "m" is None where the type has no per-block minimum."""
    kind = tensor.tensor_type.name
    if kind not in CARRIED:
        return None
    raw = np.asarray(tensor.data, dtype=np.uint8)
    n = raw.shape[0]
    if kind == "Q8_0":
        blocks = raw.reshape(n, -1, 34)
        q = (blocks[:, :, 2:].copy().view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        return {"type": kind, "q": q.reshape(n, -1), "d": _f16(blocks[:, :, :2]), "m": None}
    if kind in ("Q4_0", "Q4_1", "Q5_0", "Q5_1"):
        size = {"Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q5_1": 24}[kind]
        blocks = raw.reshape(n, -1, size)
        minimum = kind in ("Q4_1", "Q5_1")
        qs = blocks[:, :, size - 16:]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # ggml: element j in the low nibble, j + 16 in the high
        if kind.startswith("Q5"):
            at = 4 if minimum else 2
            qh = blocks[:, :, at:at + 4].copy().view("<u4")  # bit j: bit 4 of element j
            q = q | ((((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)) << 4)
        return {"type": kind, "q": q.reshape(n, -1), "d": _f16(blocks[:, :, :2]),
                "m": _f16(blocks[:, :, 2:4]) if minimum else None}
    if kind in ("Q4_K", "Q5_K"):
        size = 144 if kind == "Q4_K" else 176
        blocks = raw.reshape(n, -1, size)
        sc, mn = _k_scales(blocks[:, :, 4:16])
        qs = blocks[:, :, size - 128:].reshape(n, -1, 4, 1, 32) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 1, 2, 1)
        q = (qs & 0x0F).reshape(n, -1, 256)  # group g of 64: low nibbles of its 32 bytes, then the high ones
        if kind == "Q5_K":
            qh = blocks[:, :, 16:48].reshape(n, -1, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 1, 8, 1)
            q = q | ((qh & 1).reshape(n, -1, 256) << 4)
        return {"type": kind, "q": q.reshape(n, -1), "d": _f16(blocks[:, :, 0:2]), "dmin": _f16(blocks[:, :, 2:4]),
                "sc": sc.reshape(n, -1), "mn": mn.reshape(n, -1), "m": None}
    blocks = raw.reshape(n, -1, 210)  # Q6_K: ql[128], qh[64], scales[16] int8, d
    ql = blocks[:, :, :128].reshape(n, -1, 2, 1, 64) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 1, 2, 1)
    qh = blocks[:, :, 128:192].reshape(n, -1, 2, 1, 32) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 1, 4, 1)
    q = (ql & 0x0F).reshape(n, -1, 256) | ((qh & 3).reshape(n, -1, 256) << 4)
    return {"type": kind, "q": q.reshape(n, -1), "d": _f16(blocks[:, :, 208:210]),
            "sc": blocks[:, :, 192:208].copy().view(np.int8).reshape(n, -1), "m": None}


def _dequant(g: dict) -> np.ndarray:
    """The weights a grid holds, float32 [N, K], computed as gguf-py dequantizes them."""
    n = g["q"].shape[0]
    kind = g["type"]
    if kind in ("Q4_K", "Q5_K"):
        q = g["q"].reshape(n, -1, BLOCK).astype(np.float32)
        d = np.repeat(g["d"], 8, axis=1) * g["sc"].astype(np.float32)
        dm = np.repeat(g["dmin"], 8, axis=1) * g["mn"].astype(np.float32)
        return (d[:, :, None] * q - dm[:, :, None]).reshape(n, -1)
    if kind == "Q6_K":
        q = g["q"].reshape(n, -1, 16).astype(np.float32) - 32
        return ((np.repeat(g["d"], 16, axis=1) * g["sc"].astype(np.float32))[:, :, None] * q).reshape(n, -1)
    q = g["q"].reshape(n, -1, BLOCK).astype(np.float32)
    if g["m"] is not None:
        w = q * g["d"][:, :, None] + g["m"][:, :, None]
    else:
        w = (q - {"Q4_0": 8, "Q5_0": 16, "Q8_0": 128}[kind]) * g["d"][:, :, None]
    return w.reshape(n, -1)


ROW_KEYS = ("q", "d", "m", "dmin", "sc", "mn")  # a grid's per-row arrays


def _unpermute(g: dict, heads: int) -> dict:
    """llama.cpp's converter permutes Q and K rows of Llama-style models for its RoPE; transformers undoes
    it on load. Rows move whole (blocks run along the input), so the grid moves with them."""
    def rows(a):
        return a.reshape(heads, a.shape[0] // heads // 2, 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)
    return {**g, **{k: rows(g[k]) for k in ROW_KEYS if g.get(k) is not None}}


def module_grids(path, model) -> tuple[dict, dict]:
    """({transformers module name: grid} for every weight carried exactly, {gguf tensor: why not}); the
    output layer is "lm_head", the token embedding table "embed_tokens"."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    cfg = model.config.get_text_config()
    heads = {"heads": cfg.num_attention_heads,
             "kv_heads": getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads, None: None}
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items() if v.dim() == 2}
    carried, skipped = {}, {}

    def grid_for(gname: str, hf: np.ndarray, permute_heads: int | None):
        t = tensors.get(gname)
        if t is None:
            return None
        g = _grid(t)
        if g is None:
            if t.tensor_type.name not in FLOAT:
                skipped[gname] = f"{t.tensor_type.name} {UNCARRIED}"
            return None
        if g["q"].shape != hf.shape:
            skipped[gname] = f"shape {g['q'].shape} vs the model's {hf.shape}"
            return None
        candidates = [g] + ([_unpermute(g, permute_heads)] if permute_heads else [])
        for c in candidates:
            if np.allclose(_dequant(c), hf, rtol=0, atol=1e-6 * max(1.0, float(np.abs(hf).max()))):
                return {**c, "origin": "GGUF"}
        skipped[gname] = "its grid does not reproduce the weights transformers loaded"
        return None

    for i in range(cfg.num_hidden_layers):
        for part, (module, permute) in HF.items():
            name = f"model.layers.{i}.{module}"
            if f"{name}.weight" in state:
                g = grid_for(f"blk.{i}.{part}.weight", state[f"{name}.weight"], heads[permute])
                if g is not None:
                    carried[name] = g
    head = "output.weight" if "output.weight" in tensors else "token_embd.weight"
    if "lm_head.weight" in state:
        g = grid_for(head, state["lm_head.weight"], None)
        if g is not None:
            carried["lm_head"] = {**g, "gguf": head}
    if "model.embed_tokens.weight" in state:
        embeds = state["model.embed_tokens.weight"]
        g = (carried.get("lm_head") if head == "token_embd.weight" and "lm_head.weight" in state
             and np.array_equal(embeds, state["lm_head.weight"]) else grid_for("token_embd.weight", embeds, None))
        if g is not None:
            carried["embed_tokens"] = {**g, "gguf": "token_embd.weight"}
    return carried, skipped


def read_grids(path, model) -> tuple[dict, dict]:
    """({onnxruntime-genai builder module name: grid} for every tensor carried exactly, {gguf tensor: why
    not}): q, k and v fused as the builder fuses them."""
    return builder_grids(*module_grids(path, model), model)


def builder_grids(per: dict, skipped: dict, model) -> tuple[dict, dict]:
    """module_grids' answer in the onnxruntime-genai builder's module names (q, k and v fused)."""
    skipped = dict(skipped)
    cfg = model.config.get_text_config()
    carried = {}
    for i in range(cfg.num_hidden_layers):
        for module, parts in PARTS.items():
            grids = [per.get(f"model.layers.{i}.{HF[p][0]}") for p in parts]
            if any(g is None for g in grids):
                continue  # skipped says why (or the model has no such weight)
            if len({g["type"] for g in grids}) != 1:  # q, k, v in different types (K_M files): one node per part
                carried[f"model.layers.{i}.{module}"] = {
                    "type": "+".join(g["type"] for g in grids), "origin": grids[0].get("origin"), "parts": grids,
                    "gguf": [f"blk.{i}.{p}.weight" for p in parts]}
                continue
            carried[f"model.layers.{i}.{module}"] = {
                "type": grids[0]["type"], "origin": grids[0].get("origin"),
                **{k: np.concatenate([g[k] for g in grids]) for k in ROW_KEYS if grids[0].get(k) is not None},
                "m": None if grids[0].get("m") is None else np.concatenate([g["m"] for g in grids])}
    head = per.get("lm_head")
    if head is not None:  # formats/onnx/gguf.py: a GgufLinear (own ops), or MatMulNBits where it can hold it
        carried["lm_head"] = head
    return carried, skipped


def not_carried_warning(skipped: dict, scheme: str) -> str | None:
    """One line for the build's warnings (the console summary and the manifest's build.warnings) when GGUF
    tensors were requantized instead of carried: per block type edgeslm cannot carry (Q5_0, Q5_1, the
    K-quants...) how many tensors in how many layers, any others and why, and what they run as instead.
    `skipped`: module_grids' {gguf tensor: why}; `scheme`: what the recipe rounds them to, in words."""
    if not skipped:
        return None
    kinds: dict[str, list[str]] = {}
    others = []
    for name, why in sorted(skipped.items()):
        if why.endswith(UNCARRIED):
            kinds.setdefault(why[: -len(UNCARRIED)].strip(), []).append(name)
        else:
            others.append(name)

    def where(names: list[str]) -> str:
        layers = {n.split(".")[1] for n in names if n.startswith("blk.") and n.count(".") >= 2}
        extra = [{"output.weight": "the output layer", "token_embd.weight": "the embedding table"}.get(n, n)
                 for n in names if not n.startswith("blk.")]
        parts = [f"{len(layers)} layer{'s' if len(layers) != 1 else ''}"] if layers else []
        return ", ".join(parts + extra)

    said = [f"{kind}: {len(names)} tensor{'s' if len(names) != 1 else ''} ({where(names)})"
            for kind, names in sorted(kinds.items())]
    if others:
        said.append(f"{len(others)} more whose grid does not fit ({', '.join(others[:3])}"
                    + (", ..." if len(others) > 3 else "") + ")")
    lead = ("GGUF tensors in block types edgeslm cannot carry were requantized from the dequantized floats"
            if kinds else "GGUF tensors were requantized from the dequantized floats instead of carried")
    return (f"{lead}: {'; '.join(said)}. They run as {scheme} instead of the file's own grid: expect a "
            "perplexity increase against the file (the build's perplexity figures measure it); the manifest's "
            "gguf_grid.not_carried lists each tensor")


def grid_origin(grids: dict) -> str:
    """Where a carried grid came from: "GGUF" (the source file's own) or "GPTQ" (neural-compressor)."""
    return next((g.get("origin") for g in grids.values() if g.get("origin")), "GGUF")


def grid_words(grids: dict) -> str:
    return ("the GGUF's own integers and scales" if grid_origin(grids) == "GGUF"
            else "neural-compressor GPTQ's integers and scales (symmetric int4, groups of 32)")


def carried_precision(method: str, grids: dict | None, done: list, total: int) -> str:
    """A decoder file's precision label: the recipe's method, or, where a GGUF's own grid holds the weights, that
    grid's block types (a Q8_0 GGUF under 8da4w holds 8-bit weights, not int4): "GGUF Q8_0" when every layer
    carries it, "8da4w + GGUF Q4_1 (12 of 15 layers)" when some do."""
    if not grids or not done or grid_origin(grids) != "GGUF":
        return method
    label = "GGUF " + "/".join(block_types(grids, done))
    return label if len(done) >= total else f"{method} + {label} ({len(done)} of {total} layers)"


def grid_facts(grids: dict, done: list, not_carried: dict) -> dict:
    """The manifest's account of a carried grid: where from, how many layers, which block types, what was not
    and why."""
    return {"source": grid_origin(grids), "carried_layers": len(done),
            "types": block_types(grids, done), "not_carried": not_carried}


def block_types(grids: dict, done: list) -> list[str]:
    """The block types the carried modules hold (a fused projection whose parts differ counts each part's)."""
    return sorted({t for m in done for t in grids[m]["type"].split("+")})
