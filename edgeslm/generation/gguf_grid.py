"""Carry a GGUF file's own integer grid into the decoder artifacts instead of rounding a second time.

transformers dequantizes a GGUF on load; quantizing those floats again (round to nearest, symmetric int4)
moves every weight off the grid llama.cpp runs exactly. Here the file's integers and scales go into
MatMulNBits as they are, for the block layouts onnxruntime's fast kernels can express:

- Q4_0 (w = (q - 8) d, blocks of 32): MatMulNBits 4-bit, implicit zero point 8. Exact.
- Q8_0 (w = q d, q signed): MatMulNBits 8-bit, q + 128 stored with the implicit zero point 128. Exact.
- Q4_1 (w = q d + m, a float minimum per block): MatMulNBits 4-bit with zero point 0 for q d (exact), plus
  the minimums through the per-block sums of the input (x . m over each block of 32), as a second, 8-bit
  MatMulNBits (the minimums int8 in blocks of 32 of them: off by at most 1/254 of the largest; the KL to
  float minimums was at the level a reordered float sum gives, and decode 11% faster than a float MatMul).
  Measured on SmolLM2-135M (Q4_1), perplexity on the held text vs the dequantized GGUF: -1.5% (rounding the
  floats again, symmetric int4: +29.7%); decode still slower than the requantized file (the extra small
  ops per projection). Alternatives measured and rejected: MatMulNBits with float zero points expresses
  Q4_1 directly but onnxruntime's CPU kernels run it 10-25x slower; integer zero points round(-m / d) lose
  the fractional minimum (+48%).

A tensor is carried only where its dequantized grid equals the weights transformers loaded (Q and K rows
un-permuted as llama.cpp's converter permuted them); anything else keeps the builder's requantized
weights and is listed. The embedding table tied to the head gets its own copy of the head's Q8_0/Q4_0
grid (GatherBlockQuantized).

The .pte (`carry_into_torchao`): torchao's 8da4w int4 is symmetric (q in [-8, 7], a scale per group of 32,
as XNNPACK runs it), so Q4_0 goes in as q - 8 and Q4_1 the same way plus its per-block constant m + 8 d
through the input's block sums (two small linears with int8 activations: the 0/1 block sums in int4, exact;
the constants int8 per channel). The output layer stays int8 per channel there.
"""

from __future__ import annotations

import numpy as np

BLOCK = 32
GRID_MIN = "/grid/MinimumsMatMulNBits"  # name suffix of the node adding a Q4_1 projection's block minimums
CARRIED = ("Q4_0", "Q4_1", "Q8_0")
# GGUF tensor name (in block i) -> the transformers module of layer i, and whether llama.cpp permuted its rows
# for RoPE ("heads" / "kv_heads": by that many heads)
HF = {"attn_q": ("self_attn.q_proj", "heads"), "attn_k": ("self_attn.k_proj", "kv_heads"),
      "attn_v": ("self_attn.v_proj", None), "attn_output": ("self_attn.o_proj", None),
      "ffn_gate": ("mlp.gate_proj", None), "ffn_up": ("mlp.up_proj", None), "ffn_down": ("mlp.down_proj", None)}
# onnxruntime-genai builder module name suffix -> GGUF tensor names (rows concatenated in this order)
PARTS = {"attn.qkv_proj": ("attn_q", "attn_k", "attn_v"), "attn.o_proj": ("attn_output",),
         "mlp.gate_proj": ("ffn_gate",), "mlp.up_proj": ("ffn_up",), "mlp.down_proj": ("ffn_down",)}


def _grid(tensor) -> dict | None:
    """{"type", "q" uint8 [N, K] (Q4: 0..15, Q8_0: q + 128), "d" [N, K/32], "m" [N, K/32] or None}."""
    kind = tensor.tensor_type.name
    if kind not in CARRIED:
        return None
    raw = np.asarray(tensor.data, dtype=np.uint8)
    n = raw.shape[0]
    if kind == "Q8_0":
        blocks = raw.reshape(n, -1, 34)
        d = blocks[:, :, :2].copy().view(np.float16)[..., 0].astype(np.float32)
        q = (blocks[:, :, 2:].copy().view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        return {"type": kind, "q": q.reshape(n, -1), "d": d, "m": None}
    size = 18 if kind == "Q4_0" else 20
    blocks = raw.reshape(n, -1, size)
    d = blocks[:, :, :2].copy().view(np.float16)[..., 0].astype(np.float32)
    m = blocks[:, :, 2:4].copy().view(np.float16)[..., 0].astype(np.float32) if kind == "Q4_1" else None
    qs = blocks[:, :, size - 16:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # ggml: element j in the low nibble, j + 16 in the high
    return {"type": kind, "q": q.reshape(n, -1), "d": d, "m": m}


def _dequant(g: dict) -> np.ndarray:
    n = g["q"].shape[0]
    q = g["q"].reshape(n, -1, BLOCK).astype(np.float32)
    if g["type"] == "Q4_1":
        w = q * g["d"][:, :, None] + g["m"][:, :, None]
    else:
        w = (q - (8 if g["type"] == "Q4_0" else 128)) * g["d"][:, :, None]
    return w.reshape(n, -1)


def _unpermute(g: dict, heads: int) -> dict:
    """llama.cpp's converter permutes Q and K rows of Llama-style models for its RoPE; transformers undoes
    it on load. Rows move whole (blocks run along the input), so the grid moves with them."""
    def rows(a):
        return a.reshape(heads, a.shape[0] // heads // 2, 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)
    return {**g, "q": rows(g["q"]), "d": rows(g["d"]), "m": None if g["m"] is None else rows(g["m"])}


def module_grids(path, model) -> tuple[dict, dict]:
    """({transformers module name: grid} for every weight carried exactly, {gguf tensor: why not}); the
    output layer is "lm_head"."""
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
            skipped[gname] = f"{t.tensor_type.name} (not a grid edgeslm carries exactly)"
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
            if len({g["type"] for g in grids}) != 1:
                skipped[f"blk.{i}.{parts[0]}"] = "fused projections hold different grids"
                continue
            carried[f"model.layers.{i}.{module}"] = {
                "type": grids[0]["type"], "origin": grids[0].get("origin"), "q": np.concatenate([g["q"] for g in grids]),
                "d": np.concatenate([g["d"] for g in grids]),
                "m": None if grids[0]["m"] is None else np.concatenate([g["m"] for g in grids])}
    head = per.get("lm_head")
    if head is not None and head["type"] != "Q4_1":
        carried["lm_head"] = head
    elif head is not None:
        skipped[head["gguf"]] = "Q4_1 head: the tied embedding lookup cannot add the block minimums"
    return carried, skipped


def grid_origin(grids: dict) -> str:
    """Where a carried grid came from: "GGUF" (the source file's own) or "GPTQ" (neural-compressor)."""
    return next((g.get("origin") for g in grids.values() if g.get("origin")), "GGUF")


def grid_words(grids: dict) -> str:
    return ("the GGUF's own integers and scales" if grid_origin(grids) == "GGUF"
            else "neural-compressor GPTQ's integers and scales (symmetric int4, groups of 32)")


def grid_facts(grids: dict, done: list, not_carried: dict) -> dict:
    """The manifest's account of a carried grid: where from, how many layers, which block types, what was not
    and why."""
    return {"source": grid_origin(grids), "carried_layers": len(done),
            "types": sorted({grids[m]["type"] for m in done}), "not_carried": not_carried}


def _pack4(q: np.ndarray) -> np.ndarray:
    return (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)


def apply_grids(graph, grids: dict) -> list[str]:
    """Rewrite the builder's MatMulNBits weights (and the tied embedding lookup) in `graph` (an onnx
    ModelProto, weights loaded) with `grids`. Returns the module names carried."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in graph.graph.initializer}
    done = []
    new_nodes = []
    sums = {}  # input name -> its per-block sums (q, k, v and gate, up read the same input)
    for node in graph.graph.node:
        if node.op_type != "MatMulNBits":
            new_nodes.append(node)
            continue
        name = node.input[1].rsplit(".MatMul", 1)[0]
        g = grids.get(name)
        attrs = {a.name: a for a in node.attribute}
        if g is None or attrs["block_size"].i != BLOCK:
            new_nodes.append(node)
            continue
        n, k = g["q"].shape
        bits = 8 if g["type"] == "Q8_0" else 4
        blob = g["q"] if bits == 8 else _pack4(g["q"])
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(blob.reshape(n, k // BLOCK, -1), node.input[1]))
        inits[node.input[2]].CopyFrom(numpy_helper.from_array(g["d"].reshape(-1), node.input[2]))
        attrs["bits"].i = bits
        del node.input[3:]
        new_nodes.append(node)
        if g["m"] is not None:  # Q4_1: zero point 0, the minimums added through the per-block input sums
            zp_name = f"{name}.MatMul.weight_zp_zero"
            zeros = np.zeros((n, (k // BLOCK + 1) // 2), dtype=np.uint8)
            q8, s8 = _int8_rows(g["m"])
            graph.graph.initializer.extend([numpy_helper.from_array(zeros.reshape(-1), zp_name),
                                            numpy_helper.from_array(q8, f"{name}.grid_min.q8"),
                                            numpy_helper.from_array(s8, f"{name}.grid_min.scales")])
            node.input.append(zp_name)
            out, x = node.output[0], node.input[0]
            node.output[0] = f"{out}/grid_q"
            if x not in sums:
                shape, axes, sums[x] = f"{name}/blocks_shape", f"{name}/blocks_axes", f"{name}/block_sums"
                graph.graph.initializer.extend([
                    numpy_helper.from_array(np.array([0, 0, k // BLOCK, BLOCK], np.int64), shape),
                    numpy_helper.from_array(np.array([-1], np.int64), axes)])
                new_nodes += [helper.make_node("Reshape", [x, shape], [f"{name}/blocks"], name=f"{name}/grid/Reshape"),
                              helper.make_node("ReduceSum", [f"{name}/blocks", axes], [sums[x]], keepdims=0,
                                               name=f"{name}/grid/ReduceSum")]
            new_nodes += [helper.make_node("MatMulNBits", [sums[x], f"{name}.grid_min.q8", f"{name}.grid_min.scales"],
                                           [f"{out}/grid_min"], name=f"{name}{GRID_MIN}", domain="com.microsoft",
                                           K=k // BLOCK, N=n, bits=8, block_size=BLOCK, accuracy_level=4),
                          helper.make_node("Add", [f"{out}/grid_q", f"{out}/grid_min"], [out], name=f"{name}/grid/Add")]
        done.append(name)
    del graph.graph.node[:]
    graph.graph.node.extend(new_nodes)
    head = grids.get("lm_head") if "lm_head" in done else None
    for node in graph.graph.node:  # the tied embedding table: its own copy of the head's grid
        if node.op_type != "GatherBlockQuantized":
            continue
        if head is None:
            continue
        n, k = head["q"].shape
        bits = 8 if head["type"] == "Q8_0" else 4
        data, scales = "embed_tokens.grid_q", "embed_tokens.grid_scales"
        blob = head["q"] if bits == 8 else _pack4(head["q"])
        graph.graph.initializer.extend([numpy_helper.from_array(blob.reshape(n, -1), data),
                                        numpy_helper.from_array(head["d"], scales)])
        node.input[0], node.input[2] = data, scales
        del node.input[3:]
        for a in node.attribute:
            if a.name == "bits":
                a.i = bits
    _prune(graph)
    return done


def _int8_rows(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_1's block minimums [N, K/32] as MatMulNBits 8-bit weights (implicit zero point 128) in blocks of 32
    minimums: (uint8 [N, blocks, 32], float32 scales [N * blocks]); each off by at most 1/254 of the largest
    of its 32 (measured on SmolLM2: KL to the float minimums at the level a reordered float sum gives)."""
    n, nb = m.shape
    p = -(-nb // BLOCK) * BLOCK
    padded = np.zeros((n, p), dtype=np.float64)
    padded[:, :nb] = m
    blocks = padded.reshape(n, p // BLOCK, BLOCK)
    scale = np.abs(blocks).max(-1) / 127.0
    scale[scale == 0] = 1.0
    scale = scale.astype(np.float32)
    q = np.clip(np.round(blocks / scale[..., None]), -127, 127).astype(np.int16) + 128
    return q.astype(np.uint8), scale.reshape(-1)


def _prune(graph) -> None:
    """Drop nodes whose outputs nothing reads (the builder's reshape of the head for the lookup) and the
    initializers left unread."""
    while True:
        used = {i for n in graph.graph.node for i in n.input} | {o.name for o in graph.graph.output}
        dead = [n for n in graph.graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        keep = [n for n in graph.graph.node if n not in dead]
        del graph.graph.node[:]
        graph.graph.node.extend(keep)
    used = {i for n in graph.graph.node for i in n.input}
    keep = [i for i in graph.graph.initializer if i.name in used]
    del graph.graph.initializer[:]
    graph.graph.initializer.extend(keep)


def carry_into_torchao(decoder, grids: dict, prefix: str = "model.") -> list[str]:
    """Put Q4_0 / Q4_1 grids into linears quantized by torchao's 8da4w (int4, groups of 32, symmetric:
    IntxUnpackedToInt8Tensor qdata in [-8, 7], scale per group, zero point 0), as XNNPACK runs them:

    - Q4_0: w = (q - 8) d: qdata = q - 8, scale = d. Exact.
    - Q4_1: w = q d + m = (q - 8) d + (m + 8 d): the same, plus the per-block constant m + 8 d through the
      per-block sums of the input (two small linears: x -> sums over each block of 32 -> outputs; see
      _quantize_corrections). Exact in the int4 weights, the constants int8.

    `decoder` module names are the transformers names behind `prefix`. Returns the names carried."""
    import torch

    class BlockSums(torch.nn.Module):
        """x summed over each block of 32 inputs (a 0/1 linear: XNNPACK delegates it, not a sum). Projections
        of one input (q, k, v; gate, up) share it: the sums of the tensor last seen are reused."""

        def __init__(self, k: int):
            super().__init__()
            self.sums = torch.nn.Linear(k, k // BLOCK, bias=False)
            self.sums.weight.data = torch.from_numpy(np.kron(np.eye(k // BLOCK, dtype=np.float32),
                                                             np.ones((1, BLOCK), dtype=np.float32)))
            self.last = None  # (input, its sums); holding the input keeps its identity unique

        def forward(self, x):
            if self.last is None or self.last[0] is not x:
                self.last = (x, self.sums(x))
            return self.last[1]

    class BlockMinimum(torch.nn.Module):
        """y = linear(x) + (x summed over each block of 32 inputs) @ c.T"""

        def __init__(self, linear, c: np.ndarray, sums):
            super().__init__()
            self.linear, self.block_sums = linear, [sums]  # a list: not a second owner of the shared module
            self.minimum = torch.nn.Linear(c.shape[1], c.shape[0], bias=False)
            self.minimum.weight.data = torch.from_numpy(np.ascontiguousarray(c, dtype=np.float32))

        def forward(self, x):
            return self.linear(x) + self.minimum(self.block_sums[0](x))

    done = []
    for fqn, mod in list(decoder.named_modules()):
        g = grids.get(fqn[len(prefix):]) if fqn.startswith(prefix) else None
        w = getattr(mod, "weight", None)
        if g is None or g["type"] not in ("Q4_0", "Q4_1") or not hasattr(w, "qdata"):
            continue
        if tuple(w.block_size) != (1, BLOCK) or tuple(w.qdata.shape) != g["q"].shape:
            continue
        with torch.no_grad():
            w.qdata.copy_(torch.from_numpy(g["q"].astype(np.int16) - 8).to(torch.int8))
            w.scale.copy_(torch.from_numpy(g["d"]).reshape(w.scale.shape))
            w.zero_point.zero_()
        if g["m"] is not None:
            parent, _, child = fqn.rpartition(".")
            owner = decoder.get_submodule(parent)
            name = f"block_sums_{mod.in_features}"
            if not hasattr(owner, name):  # one per attention / MLP block and input width
                owner.add_module(name, BlockSums(mod.in_features))
            setattr(owner, child, BlockMinimum(mod, g["m"] + 8 * g["d"], getattr(owner, name)))
        done.append(fqn[len(prefix):])
    _quantize_corrections(decoder, BlockSums, BlockMinimum)
    return done


def _quantize_corrections(decoder, sums_type, minimum_type) -> None:
    """The Q4_1 corrections in the int8-activation kernels the projections use, so they read a fraction of
    the bytes (in float they were about 40% on top of SmolLM2's int4 weights per token): the block sums as
    int4 in groups of 32 (0/1 with scale 1: exact, the sums of the same int8 activations the projection
    multiplies, as llama.cpp sums its Q8_1 blocks), the constants int8 per output channel."""
    import torch
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup

    sums = {id(m.sums) for m in decoder.modules() if isinstance(m, sums_type)}
    minimums = {id(m.minimum) for m in decoder.modules() if isinstance(m, minimum_type)}
    if not sums:
        return
    quantize_(decoder, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(BLOCK)),
              filter_fn=lambda m, fqn: id(m) in sums)
    quantize_(decoder, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0)),
              filter_fn=lambda m, fqn: id(m) in minimums)
    for m in decoder.modules():
        if isinstance(m, sums_type):
            w = m.sums.weight
            with torch.no_grad():  # exactly 1 on the block, 0 elsewhere
                k = w.qdata.shape[1]
                w.qdata.copy_(torch.from_numpy(np.kron(np.eye(k // BLOCK, dtype=np.int8),
                                                       np.ones((1, BLOCK), dtype=np.int8))))
                w.scale.fill_(1.0)
                w.zero_point.zero_()
