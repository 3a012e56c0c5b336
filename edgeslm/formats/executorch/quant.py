"""int8 for ExecuTorch/XNNPACK through PT2E (torchao prepare_pt2e / convert_pt2e).

Only nn.Linear layers are annotated (`set_module_type`): quantizing the mask arithmetic as well
(`set_global`) dropped MiniLM's cosine to 0.22. Measured on MiniLM at seq 128 (cosine min vs fp32):
dynamic 0.9988 (per-token activations); static 0.936, 0.991 with the FFN down-projections kept out.
"""

from __future__ import annotations

import torch


def _quantizer_class():
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import get_new_attr_name_with_prefix

    class FloatScalarsOnlyQuantizer(XNNPACKQuantizer):
        """XNNPACKQuantizer.transform_for_annotation turns the scalar operand of *every* add/mul into
        a float32 buffer, including integer index arithmetic (transformers' `arange(n) + offset` in
        mask construction), which then fails in `aten.index` during calibration with `IndexError:
        tensors used as indices must be long...`. Convert only floating-point add/mul."""

        def transform_for_annotation(self, model):
            for n in model.graph.nodes:
                if n.op != "call_function" or n.target not in (torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor):
                    continue
                val = n.meta.get("val")
                if val is None or not val.dtype.is_floating_point:
                    continue
                args = []
                for a in n.args:
                    if isinstance(a, torch.fx.Node):
                        args.append(a)
                        continue
                    name = get_new_attr_name_with_prefix("_tensor_constant_")(model)
                    t = torch.tensor(float(a), dtype=val.dtype)
                    model.register_buffer(name, t)
                    with model.graph.inserting_before(n):
                        ga = model.graph.create_node("get_attr", name, (), {})
                        ga.meta["val"] = val.fake_mode.from_tensor(t, static_shapes=True)
                    args.append(ga)
                n.args = tuple(args)
            model.recompile()
            return model

    return FloatScalarsOnlyQuantizer


def quantize_pt2e(module, example: tuple, dynamic_shapes, ctx):
    """Returns the quantized module (ready for torch.export) and the facts for the manifest."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    q = ctx.quant
    static = q.method == "static-int8"
    per_channel = q.granularity == "per-channel"
    config = get_symmetric_quantization_config(is_per_channel=per_channel, is_dynamic=not static)
    quantizer = _quantizer_class()()
    prepared = ctx.prepared_quant()
    kept = prepared.kept_float
    linear = [name for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)]
    if kept:
        for name in linear:  # annotate layer by layer; the quantizer cannot un-annotate
            if name not in kept:
                quantizer.set_module_name(name, config)
    else:
        quantizer.set_module_type(torch.nn.Linear, config)

    graph = torch.export.export(module, example, dynamic_shapes=dynamic_shapes, strict=False).module()
    observed = prepare_pt2e(graph, quantizer)
    samples = ctx.calibration() if static else []
    names = list(ctx.loaded.input_names)
    for s in samples or [dict(zip(names, (t.numpy() for t in example)))]:
        observed(*(torch.from_numpy(s[n]) for n in names))
    converted = convert_pt2e(observed)
    return converted, {
        "method": q.method, "granularity": q.granularity, "tool": "torchao PT2E + XNNPACKQuantizer",
        "weights": "s8 symmetric " + ("per-channel" if per_channel else "per-tensor"),
        "activations": "s8 static per-tensor (calibrated)" if static else "s8 dynamic per-token",
        "calibration_samples": len(samples), **prepared.facts,
        "quantized_linear": len(linear) - len(kept),
    }


class ByteEmbedding(torch.nn.Module):
    """A word-embedding table stored as int8 with one scale per row (symmetric), looked up with
    ExecuTorch's `quantized_decomposed::embedding_byte` kernel (in the portable quantized kernels and in
    executorch-numpy-runtime): the table is 4x smaller and dequantized row by row at lookup."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        w = weight.detach().float()
        scale = (w.abs().amax(1) / 127.0).clamp(min=1e-12)
        self.register_buffer("qweight", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scale)
        self.num_embeddings, self.embedding_dim = w.shape

    def forward(self, ids):
        return torch.ops.quantized_decomposed.embedding_byte.dtype(self.qweight, self.scales, None, -127, 127, ids,
                                                                   dtype=torch.float32)


def quantize_word_embeddings(module, hf) -> tuple[torch.nn.Module, dict]:
    """A copy of `module` whose word-embedding table is int8 (ByteEmbedding). A table tied to an output
    layer (masked-LM heads) keeps its float copy for that layer."""
    import copy

    import executorch.exir.passes._quant_patterns_and_replacements  # noqa: F401 - defines the op

    table = hf.get_input_embeddings()
    name = next(n for n, m in module.named_modules() if m is table)
    module = copy.deepcopy(module)
    parent_name, _, child = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    original = getattr(parent, child)
    setattr(parent, child, ByteEmbedding(original.weight))
    tied = any(isinstance(m, torch.nn.Linear) and m.weight is original.weight for m in module.modules())
    return module, {"embedding_table": name, "embedding": "int8 per row (embedding_byte)",
                    "embedding_tied_float_copy": tied}
