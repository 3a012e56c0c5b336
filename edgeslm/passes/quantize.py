"""The quantize pass: its model-level half runs here (decoders: decoder_quant.py), shared by every exporter (which Linear layers stay
in float, SmoothQuant scaling, exact in float); it leaves the plan in `ctx.plan.quantization` and each
exporter then quantizes in its own runtime's terms (onnx_quant, executorch_quant)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import torch

from edgeslm.config.passes import Int8QuantizeConfig, QuantizeConfig, WeightQuantizeConfig


@dataclass
class PreparedQuant:
    module: torch.nn.Module  # what the exporters export (smoothed copy, or the original)
    kept_float: list[str]  # Linear module names left unquantized
    facts: dict = field(default_factory=dict)
    config: QuantizeConfig | None = None
    base_module: torch.nn.Module | None = None  # the module before smoothing (accuracy-aware search)


def run(ctx, cfg: QuantizeConfig) -> dict:
    """Pass handler: plan the quantization; the model's module becomes the smoothed copy. A decoder's plan is
    passes.decoder_quant's (a decoder's weight quantization)."""
    if isinstance(cfg, WeightQuantizeConfig):
        from edgeslm.passes.decoder_quant import plan

        return plan(ctx, cfg)
    prepared = prepare(ctx.model.module, cfg, ctx.calibration, ctx.model.input_names)
    prepared.config, prepared.base_module = cfg, ctx.model.module
    ctx.model.module = prepared.module
    ctx.plan.quantization = prepared
    return {"method": cfg.method, "kept_float": len(prepared.kept_float),
            **{k: v for k, v in prepared.facts.items() if k != "kept_float"}}


def down_projections(module: torch.nn.Module) -> list[str]:
    """Width-reducing Linear layers (in_features > out_features): the FFN output projections.

    Their input is the post-GELU activation, whose outliers int8 handles worst (MiniLM, static int8:
    quantizing only these layers drops the embedding cosine to 0.856)."""
    return [name for name, m in module.named_modules()
            if isinstance(m, torch.nn.Linear) and m.in_features > m.out_features]


def prepare(module: torch.nn.Module, q: Int8QuantizeConfig, calibration, input_names) -> PreparedQuant:
    keep = q.keep_sensitive_float if q.keep_sensitive_float is not None else q.method == "static-int8"
    kept = down_projections(module) if keep else []
    if q.exclude:
        kept += [name for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)
                 and any(fnmatch.fnmatch(name, p) for p in q.exclude)]
    kept = sorted(set(kept))
    facts: dict = {"kept_float": kept}
    if q.smooth_alpha:
        from edgeslm.passes.smoothquant import smooth_linears

        module, facts["smoothquant"] = smooth_linears(module, calibration(), list(input_names),
                                                      q.smooth_alpha, skip=set(kept))
    return PreparedQuant(module, kept, facts)
