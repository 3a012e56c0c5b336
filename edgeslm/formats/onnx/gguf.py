"""A GGUF's (or GPTQ's) integer grids put into the ONNX graph onnxruntime-genai's builder wrote: MatMulNBits
weights replaced by the file's own integers and scales; Q4_1 projections either as edgeslm's GgufLinear
(the file's blocks as they are, run by edgeslm's onnxruntime op library) or, in plain onnxruntime ops, as
asymmetric MatMulNBits over the input widened with its block sums. The grids come from gguf_grid."""

from __future__ import annotations

import numpy as np

from edgeslm.models.gguf_grid import BLOCK

GRID_SUMS = "/grid/BlockSumsMatMulNBits"  # name suffix of the node summing an input's blocks (Q4_1)
OWN_DOMAIN, OWN_OP = "ai.edgeslm", "GgufLinear"  # edgeslm's onnxruntime op (native/src/ort_gguf.cpp)
GRID_TILES = ".gguf_tiles"  # name suffix of a GgufLinear's weights: the file's blocks in tiles of 16 rows (".<i>"
# after it: part i of q, k, v held in different block types)
OWN_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K")  # what GgufLinear runs
MATMUL_NBITS = ("Q4_0", "Q4_1", "Q8_0")  # what MatMulNBits holds exactly (Q4_1 over the widened input)
TIED = ("Q4_0", "Q8_0")  # a head grid the tied embedding lookup (GatherBlockQuantized) can share


def _pack4(q: np.ndarray) -> np.ndarray:
    return (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)


def apply_grids(graph, grids: dict, own_ops: bool = False) -> list[str]:
    """Rewrite the builder's MatMulNBits weights (and the tied embedding lookup) in `graph` (an onnx
    ModelProto, weights loaded) with `grids`. `own_ops`: a projection in a block type GgufLinear runs (Q4_1,
    Q5_0, Q5_1, Q8_0, the K-quants) whose width is a multiple of 16 becomes edgeslm GgufLinear nodes over the
    file's blocks (edgeslm's op library; one per part where q, k and v differ in type, then a Concat).
    Otherwise Q4_0 / Q8_0 go into MatMulNBits as they are, Q4_1 over its input widened with the input's block
    sums, and other types stay as built. Returns the module names carried."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in graph.graph.initializer}
    done = []
    new_nodes = []
    widened = {}  # input name -> (that input with its block sums appended, how many columns they add)
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
        parts = g.get("parts", [g])
        if own_ops and all(p["type"] in OWN_TYPES and p["q"].shape[0] % 16 == 0 for p in parts) and (
                g.get("origin") == "GGUF" or g["type"] != "Q4_0"):  # GPTQ's symmetric int4 stays in MatMulNBits
            from edgeslm.formats.executorch.gguf_op import pack

            outs = list(node.output) if len(parts) == 1 else [f"{name}/{OWN_OP}.{i}/output" for i in range(len(parts))]
            for i, (part, out) in enumerate(zip(parts, outs)):
                blocks, kind = pack(part)
                tiles = f"{name}{GRID_TILES}" + (f".{i}" if len(parts) > 1 else "")
                graph.graph.initializer.append(numpy_helper.from_array(blocks, tiles))
                new_nodes.append(helper.make_node(OWN_OP, [node.input[0], tiles], [out],
                                                  name=f"{name}/{OWN_OP}" + (f".{i}" if len(parts) > 1 else ""),
                                                  domain=OWN_DOMAIN, ggml_type=kind))
            if len(parts) > 1:  # q, k and v in different block types: one node each, their outputs side by side
                new_nodes.append(helper.make_node("Concat", outs, list(node.output), name=f"{name}/grid/Concat",
                                                  axis=-1))
            done.append(name)
            continue
        if g["type"] not in MATMUL_NBITS or (name == "lm_head" and g["type"] not in TIED):
            new_nodes.append(node)  # no exact MatMulNBits form (or the tied lookup could not share it): as built
            continue
        n, k = g["q"].shape
        bits = 8 if g["type"] == "Q8_0" else 4
        q, d, zp, extra = g["q"], g["d"], None, 0
        if g["m"] is not None:  # Q4_1: zero points, and the rest of each minimum through the input's block sums
            x = node.input[0]
            if x not in widened:  # q, k and v (fused) and gate, up read the same input: its sums once
                level = attrs["accuracy_level"].i if "accuracy_level" in attrs else 0
                nodes, widened[x] = _block_sums(graph, x, k, name, level)
                new_nodes += nodes
            node.input[0], extra = widened[x]
            q, d, zp = _q4_1_widened(g, extra)
        blob = q if bits == 8 else _pack4(q)
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(blob.reshape(n, (k + extra) // BLOCK, -1),
                                                              node.input[1]))
        inits[node.input[2]].CopyFrom(numpy_helper.from_array(d.reshape(-1), node.input[2]))
        attrs["bits"].i, attrs["K"].i = bits, k + extra
        del node.input[3:]
        if zp is not None:
            zp_name = f"{name}.MatMul.zero_points_q4_1"
            graph.graph.initializer.append(numpy_helper.from_array(_pack4(zp).reshape(-1), zp_name))
            node.input.append(zp_name)
        new_nodes.append(node)
        done.append(name)
    del graph.graph.node[:]
    graph.graph.node.extend(new_nodes)
    head = grids.get("lm_head") if "lm_head" in done and grids["lm_head"]["type"] in TIED else None
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
    if any(n.domain == OWN_DOMAIN for n in graph.graph.node):
        graph.opset_import.append(helper.make_opsetid(OWN_DOMAIN, 1))
    return done


def _block_sums(graph, x: str, k: int, name: str, level: int) -> tuple[list, tuple[str, int]]:
    """Nodes appending to input `x` [1, n, k] the sums of its blocks of 32, padded with zeros to a whole block:
    one MatMulNBits of 0/1 rows (at the projections' accuracy level, so from the same int8 activations they
    read) and a Concat. Returns (nodes, (the widened input's name, the columns added))."""
    from onnx import helper, numpy_helper

    nb = k // BLOCK
    p = -(-nb // BLOCK) * BLOCK
    ones = np.full((p, k), 8, dtype=np.uint8)  # the implicit zero point is 8: 9 is 1, 8 is 0
    for j in range(nb):
        ones[j, j * BLOCK:(j + 1) * BLOCK] = 9
    w, s, sums, wide = (f"{name}{GRID_SUMS}.weight", f"{name}{GRID_SUMS}.scales", f"{name}{GRID_SUMS}/output",
                        f"{name}{GRID_SUMS}/widened")
    graph.graph.initializer.extend([numpy_helper.from_array(_pack4(ones).reshape(p, nb, BLOCK // 2), w),
                                    numpy_helper.from_array(np.ones(p * nb, dtype=np.float32), s)])
    return [helper.make_node("MatMulNBits", [x, w, s], [sums], name=f"{name}{GRID_SUMS}", domain="com.microsoft",
                             K=k, N=p, bits=4, block_size=BLOCK, accuracy_level=level),
            helper.make_node("Concat", [x, sums], [wide], name=f"{name}/grid/Concat", axis=-1)], (wide, p)


def _q4_1_widened(g: dict, extra: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A Q4_1 grid (w = q d + m per block of 32) as one asymmetric 4-bit MatMulNBits over [x, block sums of x]:
    x's blocks keep q and d exactly, with the zero point z = round(-m / d) (they hold q d - z d), and `extra`
    columns more hold the rest of each minimum, m + z d (at most d / 2 where -m / d lies in 0..15), in
    asymmetric 4-bit blocks of 32. Returns (q uint8 [N, K + extra], scales float32 [N, blocks], zero points
    uint8 [N, blocks rounded up to even])."""
    q, d, m = g["q"], g["d"].astype(np.float64), g["m"].astype(np.float64)
    n, nb = m.shape
    z = np.clip(np.round(np.divide(-m, d, out=np.zeros_like(m), where=d != 0)), 0, 15)
    rest = np.zeros((n, extra))
    rest[:, :nb] = m + z * d
    blocks = rest.reshape(n, -1, BLOCK)
    lo, hi = np.minimum(blocks.min(-1), 0.0), np.maximum(blocks.max(-1), 0.0)
    scale = ((hi - lo) / 15).astype(np.float32)
    scale[scale == 0] = 1.0
    zr = np.clip(np.round(-lo / scale), 0, 15)
    qr = np.clip(np.round(blocks / scale[..., None]) + zr[..., None], 0, 15).reshape(n, extra)
    zp = np.concatenate([z, zr], 1)
    if zp.shape[1] % 2:  # zero points pack two to a byte
        zp = np.concatenate([zp, np.zeros((n, 1))], 1)
    return (np.concatenate([q, qr.astype(np.uint8)], 1), np.concatenate([g["d"], scale], 1).astype(np.float32),
            zp.astype(np.uint8))


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
