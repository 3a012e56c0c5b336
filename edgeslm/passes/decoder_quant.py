"""The quantize pass on a decoder: it chooses, once and before anything is rounded, the integer grid both formats
carry as it is (GPTQ's, by neural-compressor on calibration text; or a GGUF source's own under
gguf_grid = "keep"), and leaves the plan in `ctx.plan.quantization`. Each format adapter then quantizes in its
own runtime's terms (formats/onnx/decoder.py: MatMulNBits; formats/executorch/decoder.py: torchao + XNNPACK),
as encoders' exporters carry out the encoder plan."""

from __future__ import annotations

from dataclasses import dataclass

from edgeslm.config.passes import WeightQuantizeConfig

GPTQ_ENOUGH_TOKENS = 8192  # fewer calibration tokens get a warning in the build


@dataclass
class DecoderQuantPlan:
    config: WeightQuantizeConfig
    carried: tuple | None = None  # (grids, {gguf tensor: why not carried}): a grid the formats carry as it is


def plan(ctx, cfg: WeightQuantizeConfig) -> dict:
    """Pass handler for a decoder (ctx.model a models.causal_lm.LoadedDecoder); `ctx.calibration()` gives the
    calibration token chunks."""
    model = ctx.model
    carried = None
    if cfg.method == "8da4w" and cfg.algorithm == "gptq":
        from edgeslm.passes.gptq import gptq_grids

        chunks = ctx.calibration()
        n_cal = sum(map(len, chunks))
        with ctx.step(f"GPTQ (neural-compressor) on {n_cal} calibration tokens"):
            carried = gptq_grids(model.hf, chunks, model.work)
        if n_cal < GPTQ_ENOUGH_TOKENS:
            ctx.warnings.append(f"GPTQ calibrated on {n_cal} tokens only (SmolLM2-135M: +72% perplexity on 819 "
                                "tokens, +43% on 32k); give [passes.calibration] source = a folder of text like the "
                                "task's")
    elif cfg.method == "8da4w" and model.source.gguf and cfg.gguf_grid == "keep":
        from edgeslm.models.gguf_grid import BLOCK, module_grids, not_carried_warning

        with ctx.step("read the GGUF's integer grid"):
            carried = module_grids(model.source.folder / model.source.gguf, model.hf)
        if not carried[0] and not carried[1]:  # a float GGUF (F32, F16, BF16): nothing to carry, quantized as any source
            carried = None
        group = BLOCK if carried and carried[0] else cfg.group_size  # int4 groups follow a carried grid's blocks
        scheme = (f"8da4w (int4 weights in groups of {group}, int8 activations"
                  + ("; the embedding table int8 per row" if cfg.embeddings else "") + ")")
        warning = not_carried_warning(carried[1], scheme) if carried else None
        if warning:
            ctx.warnings.append(warning)
    ctx.plan.quantization = DecoderQuantPlan(cfg, carried)
    return {"method": cfg.method, "group_size": cfg.group_size, "algorithm": cfg.algorithm}
