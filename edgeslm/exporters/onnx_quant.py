"""int8 for ONNX with onnxruntime.quantization, in the target's integer formats.

Handlers are registered per quantize method; adding a method means adding one function.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Callable

from edgeslm.errors import UserError

HANDLERS: dict[str, Callable] = {}


def register(method: str):
    def deco(fn):
        HANDLERS[method] = fn
        return fn
    return deco


def quantize_onnx(src: Path, dst: Path, ctx) -> dict:
    q = ctx.quant
    preset_name = ctx.target.quantization.preset if q.preset == "target" else q.preset
    from edgeslm.config.target import PRESETS

    preset = PRESETS[preset_name]
    excluded = excluded_nodes(src, q.exclude)
    facts = HANDLERS[q.method](src, dst, ctx, preset, excluded)
    facts.update({"method": q.method, "granularity": q.granularity, "preset": preset_name,
                  "activation": preset["activation"], "weight": preset["weight"],
                  "reduce_range": preset["reduce_range"], "excluded_nodes": len(excluded)})
    return facts


def excluded_nodes(path: Path, patterns: tuple[str, ...]) -> list[str]:
    if not patterns:
        return []
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return [n.name for n in model.graph.node if any(fnmatch.fnmatch(n.name, p) for p in patterns)]


@register("dynamic-int8")
def _dynamic(src: Path, dst: Path, ctx, preset: dict, excluded: list[str]) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src), str(dst),
        weight_type=QuantType.QInt8 if preset["weight"] == "s8" else QuantType.QUInt8,
        per_channel=ctx.quant.granularity == "per-channel",
        reduce_range=preset["reduce_range"],
        nodes_to_exclude=excluded,
        extra_options={"MatMulConstBOnly": True},
    )
    return {"tool": "onnxruntime.quantization.quantize_dynamic", "activations": "dynamic u8 (per tensor)"}


@register("static-int8")
def _static(src: Path, dst: Path, ctx, preset: dict, excluded: list[str]) -> dict:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    samples = ctx.calibration()
    if not samples:
        raise UserError("static-int8 needs calibration texts; none were found")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(samples)

        def get_next(self):
            return next(self.it, None)

    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[(ctx.quant.calibration.method if ctx.quant.calibration else "minmax")]
    act = QuantType.QInt8 if preset["activation"] == "s8" else QuantType.QUInt8
    quantize_static(
        str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul", "Gemm"],
        per_channel=ctx.quant.granularity == "per-channel",
        reduce_range=preset["reduce_range"],
        activation_type=act, weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded, calibrate_method=method,
        extra_options={"ActivationSymmetric": preset["symmetric_activations"], "WeightSymmetric": True,
                       "MatMulConstBOnly": True},
    )
    return {"tool": "onnxruntime.quantization.quantize_static (QDQ)", "calibration_samples": len(samples),
            "calibration_method": method.name, "ops": ["MatMul", "Gemm"]}
