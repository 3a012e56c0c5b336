"""int8 for ONNX with onnxruntime.quantization, in the target's integer formats.

Measured on all-MiniLM-L6-v2 (seq 128, minimum embedding cosine vs fp32 over 16 sentences): plain
per-channel dynamic int8 0.960-0.973 whatever the weight type; with SmoothQuant (alpha 0.7, see
passes.smoothquant) 0.994; also keeping the FFN down-projections in float 0.9975. Static QDQ of the
down-projection input fails on its own (0.856), so static int8 keeps them in float by default.
Handlers are registered per quantize method; adding a method means adding one function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from edgeslm.config.target import PRESETS
from edgeslm.errors import InternalError, UserError
from edgeslm.formats.onnx import graph as onnx_graph

HANDLERS: dict[str, Callable] = {}


def register(method: str):
    def deco(fn):
        HANDLERS[method] = fn
        return fn
    return deco


def quantize_onnx(src: Path, dst: Path, ctx) -> dict:
    """Quantize the exported (already smoothed, see passes.quantize) graph in the target's formats."""
    import onnx

    q = ctx.quant
    preset_name = ctx.target.quantization.preset if q.preset == "target" else q.preset
    preset = PRESETS[preset_name]
    prepared = ctx.prepared_quant()
    model = onnx.load(str(src), load_external_data=False)
    found = onnx_graph.nodes_of_modules(model, prepared.kept_float)
    missing = set(prepared.kept_float) - set(found.values())
    if missing:
        raise InternalError(f"no ONNX node found for float-kept Linear layers {sorted(missing)[:3]}")
    excluded = sorted(found)
    matmuls = {n.name for n in onnx_graph.weight_matmuls(model)}
    del model
    facts = {"method": q.method, "granularity": q.granularity, "preset": preset_name,
             "weights": f"{preset['weight']} " + ("per-channel" if q.granularity == "per-channel" else "per-tensor")
             + (", 7-bit (reduce_range)" if preset["reduce_range"] else ""), **prepared.facts,
             "quantized_linear": len(matmuls - set(excluded))}
    facts.update(HANDLERS[q.method](src, dst, ctx, preset, excluded))
    return facts


def _weight_type(preset: dict):
    from onnxruntime.quantization import QuantType

    return QuantType.QInt8 if preset["weight"] == "s8" else QuantType.QUInt8


@register("dynamic-int8")
def _dynamic(src: Path, dst: Path, ctx, preset: dict, excluded: list[str]) -> dict:
    from onnxruntime.quantization import quantize_dynamic

    ops = ["MatMul", "Gather"] if ctx.quant.embeddings else ["MatMul"]
    quantize_dynamic(
        str(src), str(dst), op_types_to_quantize=ops,
        weight_type=_weight_type(preset),
        per_channel=ctx.quant.granularity == "per-channel",
        reduce_range=preset["reduce_range"],
        nodes_to_exclude=excluded,
        extra_options={"MatMulConstBOnly": True},
    )
    return {"tool": "onnxruntime.quantization.quantize_dynamic", "ops": ops,
            "activations": "u8 dynamic per tensor (onnxruntime's DynamicQuantizeLinear is u8 whatever the "
                           "preset), one scale for the whole batch",
            "batch_dependent": "a text's output depends slightly on the other texts in its batch (shared "
                               "activation scale); see batch*_vs_alone_cosine_min in the verification"}


@register("static-int8")
def _static(src: Path, dst: Path, ctx, preset: dict, excluded: list[str]) -> dict:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    samples = ctx.calibration()
    if not samples:
        raise UserError("static-int8 needs calibration texts; none were found")
    spec = ctx.quant.calibration
    method_name = spec.method if spec else "minmax"
    if method_name != "minmax":
        # Percentile/Entropy need same-shape batches: pad every sample to the longest one.
        samples = _pad_all(samples)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(samples)

        def get_next(self):
            return next(self.it, None)

    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[method_name]
    quantize_static(
        str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"],
        per_channel=ctx.quant.granularity == "per-channel",
        reduce_range=preset["reduce_range"],
        activation_type=QuantType.QInt8 if preset["activation"] == "s8" else QuantType.QUInt8,
        weight_type=_weight_type(preset),
        nodes_to_exclude=excluded, calibrate_method=method,
        extra_options={"ActivationSymmetric": preset["symmetric_activations"], "WeightSymmetric": True,
                       "MatMulConstBOnly": True},
    )
    return {"tool": "onnxruntime.quantization.quantize_static (QDQ)", "calibration_samples": len(samples),
            "calibration_method": method_name,
            "activations": f"{preset['activation']} static per tensor (calibrated), "
                           + ("symmetric" if preset["symmetric_activations"] else "asymmetric")}


def _pad_all(samples: list[dict]) -> list[dict]:
    import numpy as np

    longest = max(s["input_ids"].shape[1] for s in samples)
    out = []
    for s in samples:
        pad = longest - s["input_ids"].shape[1]
        out.append({k: np.pad(v, ((0, 0), (0, pad))) for k, v in s.items()})
    return out
