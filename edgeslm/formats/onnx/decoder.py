"""ONNX export of a decoder: onnxruntime-genai's model builder (GroupQueryAttention with a KV cache,
MatMulNBits int4/int8 weights, rotary caches, fused RMSNorm), run in a subprocess on the transformers
model the build loaded, so every source (HF folder, hub id, GGUF) goes through the same door.

The device runs the file with plain onnxruntime and edgeslm's own loop (runner/ort_decoder.py), not
with onnxruntime-genai: the device then needs only onnxruntime (as for encoders), both formats share one
loop, one set of metrics and one stored-ids check, and the loop binds the KV cache in place as genai
does. The builder's genai_config.json and tokenizer files are not shipped.

Export fidelity needs the eager model the file was exported from: `dequantized_eager` reads the
builder's integers and scales back out of the file and puts them into a copy of the model.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from edgeslm.errors import ExportError
from edgeslm.formats.onnx.graph import strip_build_metadata
from edgeslm.formats.onnx.gguf import GRID_SUMS, GRID_TILES, OWN_DOMAIN, OWN_OP

FILE = "model.onnx"
DATA = "model.onnx.data"  # its weights (onnxruntime refuses external data outside the model's folder)
BUILDER_TIMEOUT = 3600
# recipe method -> (builder precision, MatMulNBits accuracy_level: 4 = int8 activations, 1 = float)
PRECISION = {None: ("fp32", None), "8da4w": ("int4", 4), "8da8w": ("int8", 4), "int8-weight-only": ("int8", 1)}


def export_onnx_decoder(model, tokenizer, work: Path, method: str | None, group_size: int, max_context: int,
                        log_file: Path, options: tuple = (), grids: dict | None = None, own_ops: bool = False) -> dict:
    """Write work/model.onnx and its weights work/model.onnx.data; return facts for the manifest (ops,
    weights, KV cache). `grids` (gguf_grid.read_grids): integer grids that replace the builder's; `own_ops`:
    Q4_1 grids as edgeslm's GgufLinear (gguf_onnx.apply_grids)."""
    import onnx

    precision, level = PRECISION[method]
    src, out, cache = work / ".onnx-src", work / ".onnx-out", work / ".onnx-cache"
    for d in (src, out, cache):
        shutil.rmtree(d, ignore_errors=True)
    try:
        model.save_pretrained(str(src), safe_serialization=True)
        tokenizer.save_pretrained(str(src))
        cfg_path = src / "config.json"
        cfg = json.loads(cfg_path.read_text())
        rope = cfg.get("rope_parameters")
        if isinstance(rope, dict) and "rope_type" in rope and "type" not in rope:
            rope["type"] = rope["rope_type"]  # the builder reads transformers 4's key (Phi-3 long RoPE)
        window = cfg.get("sliding_window")
        if isinstance(window, int) and max_context <= window:
            # every position fits in the window: the same attention, and GroupQueryAttention then needs no
            # cache larger than max_context (it refuses a cache smaller than its window)
            cfg["sliding_window"] = max_context
        cfg_path.write_text(json.dumps(cfg, indent=1))
        # prune_lm_head: a prompt computes the logits of its last token only (TTFT 57 instead of 69 ms at 32
        # tokens, SmolLM2-135M); the loop never reads the others
        cmd = [sys.executable, "-m", "edgeslm.formats.onnx.builder_run", "-i", str(src), "-o", str(out),
               "-p", precision, "-e", "cpu", "-c", str(cache), "--extra_options", "prune_lm_head=true", *options]
        if level is not None:
            cmd += [f"block_size={group_size}", f"accuracy_level={level}"]
        with open(log_file, "wb") as logf:
            try:
                rc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, timeout=BUILDER_TIMEOUT,
                                    stdin=subprocess.DEVNULL).returncode
            except subprocess.TimeoutExpired:
                raise ExportError(f"onnxruntime-genai's model builder took over {BUILDER_TIMEOUT} s; see "
                                  f"{log_file}") from None
        if rc != 0 or not (out / "model.onnx").is_file():
            lines = [ln for ln in log_file.read_text(errors="replace").splitlines() if ln.strip()]
            raise ExportError(f"onnxruntime-genai's model builder failed on {cfg.get('model_type')!r} "
                              f"({(lines or ['no output'])[-1][:200]}); full log: {log_file}; build "
                              "formats = [\"executorch\"] only for this model")
        genai = json.loads((out / "genai_config.json").read_text())["model"]["decoder"]
        graph = onnx.load(str(out / "model.onnx"), load_external_data=True)
        carried = []
        if grids:
            from edgeslm.formats.onnx.gguf import apply_grids

            carried = apply_grids(graph, grids, own_ops)
        nodes = graph.graph.node
        nbits = [n for n in nodes if n.op_type == "MatMulNBits" and not n.name.endswith(GRID_SUMS)]
        attrs = {a.name: a.i for n in nbits[:1] for a in n.attribute}
        own = sum(n.domain == OWN_DOMAIN for n in nodes)
        # the projections they run (q, k and v of different block types are one node each)
        own_modules = len({n.input[1].partition(GRID_TILES)[0] for n in nodes if n.domain == OWN_DOMAIN})
        # the weights beside the graph, as onnxruntime maps them from the file instead of copying them out of
        # the graph's bytes: SmolLM2-135M int4 peaks at 209 MiB instead of 247 MiB, as fast
        strip_build_metadata(graph)
        onnx.save(graph, str(work / FILE), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=DATA, size_threshold=1024)
    finally:
        for d in (src, out, cache):
            shutil.rmtree(d, ignore_errors=True)
    layers, kv_heads, head_dim = (int(genai[k]) for k in ("num_hidden_layers", "num_key_value_heads", "head_size"))
    from importlib.metadata import version

    facts = {
        "builder": f"onnxruntime-genai {version('onnxruntime-genai')} model builder",
        "program": "input_ids int64[1, n], attention_mask int64[1, past + n], past_key_values.<i>.key|value "
                   "-> logits, present.<i>.key|value (the cache buffers bound in place)",
        "ops": dict(Counter(f"{n.domain + '.' if n.domain else ''}{n.op_type}" for n in nodes).most_common(12)),
        "weights": {"matmul_nbits": len(nbits), "bits": attrs.get("bits"), "block_size": attrs.get("block_size"),
                    "accuracy_level": attrs.get("accuracy_level"),
                    "tied_embeddings_quantized": any(n.op_type == "GatherBlockQuantized" for n in nodes),
                    "gguf_linear": own, "gguf_linear_modules": own_modules, "carried": carried},
        "kv_cache": {"layers": layers, "kv_heads": kv_heads, "head_dim": head_dim, "positions": max_context,
                     "bytes": 2 * layers * kv_heads * head_dim * max_context * 4},
    }
    from edgeslm.runner.runtimes import ORT_OPS

    if own:  # the device registers edgeslm's op library (in the runtime folder deploy uploads)
        facts["custom_ops"] = {"domain": OWN_DOMAIN, "ops": [OWN_OP], "library": ORT_OPS, "nodes": own}
    return facts


def _dequantized(graph) -> dict:
    """{builder module name: float32 weight [out, in]} for each MatMulNBits of the file (symmetric grid:
    uint4/uint8 with the implicit zero point 2^(bits-1) unless the node gives zero points). A projection over
    its input widened with the input's block sums (a GGUF Q4_1 grid) folds the columns of the sums back."""
    inits = {i.name: i for i in graph.graph.initializer}
    made_by = {o: n for n in graph.graph.node for o in n.output}
    out, parts = {}, {}
    for n in graph.graph.node:
        if n.domain == OWN_DOMAIN and n.op_type == OWN_OP:  # the file's blocks, exactly (parts: rows in order)
            import numpy as np
            from onnx import numpy_helper

            from edgeslm.formats.executorch.gguf_op import Q4_1, dequantize_tiles

            kind = next((a.i for a in n.attribute if a.name == "ggml_type"), Q4_1)
            name, _, part = n.input[1].partition(GRID_TILES)
            w = dequantize_tiles(numpy_helper.to_array(inits[n.input[1]]), kind)
            parts.setdefault(name, []).append((int(part[1:] or 0), w))
            out[name] = np.concatenate([p for _, p in sorted(parts[name], key=lambda t: t[0])])
            continue
        if n.op_type != "MatMulNBits" or n.name.endswith(GRID_SUMS):
            continue
        w = _nbits_weight(n, inits)
        concat = made_by.get(n.input[0])
        if concat is not None and concat.op_type == "Concat":  # [x, sums of x] -> w_x + w_sums @ (0/1 rows)
            sums = made_by[concat.input[1]]
            ones = _nbits_weight(sums, inits)  # [columns added, K]
            k = ones.shape[1]
            w = w[:, :k] + w[:, k:k + ones.shape[0]] @ ones
        out[n.input[1].rsplit(".MatMul", 1)[0]] = w
    return out


def _nbits_weight(n, inits):
    """A MatMulNBits node's weight, dequantized: float32 [N, K]."""
    import numpy as np
    from onnx import numpy_helper

    a = {x.name: x.i for x in n.attribute}
    k, nn, bits, block = a["K"], a["N"], a["bits"], a["block_size"]
    q = numpy_helper.to_array(inits[n.input[1]]).astype(np.uint8).reshape(nn, -1)
    if bits == 4:
        q = np.stack([q & 0x0F, q >> 4], axis=-1).reshape(nn, -1)
    elif bits != 8:
        raise ExportError(f"MatMulNBits with {bits} bits is not read back")
    blocks = q.shape[1] // block
    scales = numpy_helper.to_array(inits[n.input[2]]).astype(np.float32).reshape(nn, blocks)
    if len(n.input) > 3 and n.input[3]:
        zp = numpy_helper.to_array(inits[n.input[3]]).astype(np.uint8).reshape(nn, -1)
        if bits == 4:
            zp = np.stack([zp & 0x0F, zp >> 4], axis=-1).reshape(nn, -1)
        zp = zp[:, :blocks].astype(np.float32)
    else:
        zp = np.full((nn, blocks), float(1 << (bits - 1)), dtype=np.float32)
    w = (q.reshape(nn, blocks, block).astype(np.float32) - zp[:, :, None]) * scales[:, :, None]
    return w.reshape(nn, -1)[:, :k]


def dequantized_eager(model, path: Path):
    """A copy of `model` with the file's quantized weights put back (dequantized) in place of its own:
    the eager model the ONNX file was exported from."""
    import onnx
    import torch

    graph = onnx.load(str(path), load_external_data=True)
    weights = _dequantized(graph)
    shared = any(n.op_type == "GatherBlockQuantized" for n in graph.graph.node)
    eager = copy.deepcopy(model)
    tied = eager.lm_head.weight is eager.get_input_embeddings().weight
    for name, w in weights.items():
        t = torch.from_numpy(w)
        path_hf = name.replace(".attn.", ".self_attn.")
        if name == "lm_head":
            if tied and not shared:  # the embedding table stays float, the head alone got the grid
                eager.lm_head.weight = torch.nn.Parameter(t.clone())
            else:
                eager.lm_head.weight.data.copy_(t)
            continue
        try:
            eager.get_submodule(path_hf).weight.data.copy_(t)
            continue
        except AttributeError:
            pass
        parent, leaf = path_hf.rsplit(".", 1)
        mod = eager.get_submodule(parent)
        if leaf == "qkv_proj":
            parts = [getattr(mod, p) for p in ("q_proj", "k_proj", "v_proj")]
            rows = 0
            for p in parts:
                p.weight.data.copy_(t[rows:rows + p.out_features])
                rows += p.out_features
        elif leaf in ("gate_proj", "up_proj") and hasattr(mod, "gate_up_proj"):
            half = mod.gate_up_proj.out_features // 2
            sl = slice(0, half) if leaf == "gate_proj" else slice(half, 2 * half)
            mod.gate_up_proj.weight.data[sl].copy_(t)
        else:
            raise ExportError(f"the ONNX file's weight {name!r} has no place in the {model.config.model_type} model")
    return eager.eval()


def own_layers(weights: dict) -> int:
    """How many projections edgeslm's GgufLinear runs (files written before the count: one node each)."""
    return weights.get("gguf_linear_modules", weights.get("gguf_linear", 0))


def export_decoder(work: Path, model, tokenizer, g, quant, log, log_file: Path, probe):
    """model.onnx by onnxruntime-genai's builder; its session is edgeslm's own onnxruntime loop (the device
    runner's); the eager model it stands for is the model with the file's dequantized weights (float: the model
    before compression, eager None). `quant`: the quantize pass's plan or None; `probe(step)`: the task's probe
    of an eager model. Returns tasks.base.Exported."""
    from edgeslm.formats.base import Exported, ExportResult
    from edgeslm.models.gguf_grid import BLOCK, builder_grids, grid_facts, grid_origin, grid_words

    q = quant.config if quant is not None else None
    carried = quant.carried if quant is not None else None
    method = q.method if q is not None else None
    grids, skipped = builder_grids(*carried, model) if carried else (None, {})
    block = BLOCK if grids else (q.group_size if q else 32)
    own_ops = q is not None and q.onnx_ops == "edgeslm"
    with log.step(f"onnx: model builder ({PRECISION[method][0]})"):
        export = export_onnx_decoder(model, tokenizer, work, method, block, g.max_context, log_file, grids=grids,
                                     own_ops=own_ops)
    eager = None
    if q is not None:
        from edgeslm.verify.decoders import hf_step

        with log.step("onnx: eager model with the file's weights"):
            eager_model = dequantized_eager(model, work / FILE)
            eager = probe(hf_step(eager_model))
            del eager_model
    w = export["weights"]
    for name, grid in (grids or {}).items():  # what the graph could not hold exactly, and why
        if name not in w["carried"]:
            where = grid.get("gguf") if isinstance(grid.get("gguf"), str) else name
            skipped[where] = (f"{grid['type']}: no exact form in onnxruntime's own ops (onnx_ops = \"edgeslm\" runs "
                              "it as GgufLinear)" if not own_ops else
                              f"{grid['type']}: its rows are not a multiple of 16 (GgufLinear's tiles)")
    quantization = None if q is None else {"method": q.method, "bits": w["bits"], "block_size": w["block_size"],
                                           "activations": "int8 dynamic" if w["accuracy_level"] == 4 else "float",
                                           "layers": w["matmul_nbits"] + own_layers(w),
                                           "grid": "symmetric, round to nearest"}
    if grids is not None:
        own = own_layers(w)
        quantization["grid"] = (
            f"{grid_words(grids)} in {len(w['carried'])} of {w['matmul_nbits'] + own} layers"
            + (f" ({own} as edgeslm's GgufLinear over the file's blocks, edgeslm's op library on the device)"
               if own else "")
            + (" (Q4_1: the minimums as zero points, their rest through per-block input sums)"
               if any(grids[m]["type"] == "Q4_1" for m in w["carried"]) and not own else "")
            + "; the rest symmetric, round to nearest")
        quantization["gguf_grid" if grid_origin(grids) == "GGUF" else "carried_grid"] = grid_facts(
            grids, w["carried"], skipped)

    def session():
        # the device's own session (edgeslm's loop, its op library from the runtime folder built for this machine),
        # in a process of its own that loads what the device loads: its peak RSS is what the device will need
        from edgeslm.formats.isolated import isolated_step

        return isolated_step("onnx", work / FILE, export, g.max_context)

    precision = "fp32" if q is None else q.method
    if q is not None and grids is not None:
        from edgeslm.models.gguf_grid import carried_precision

        precision = carried_precision(q.method, grids, w["carried"], w["matmul_nbits"] + own_layers(w))
    result = ExportResult(file=FILE, runtime="onnxruntime", precision=precision, quantization=quantization,
                          export=export)
    return Exported(result=result, session=session, eager=eager,
                    against="eager PyTorch with the file's dequantized weights" if q is not None
                    else "eager PyTorch (transformers' KV cache, same calls)")
