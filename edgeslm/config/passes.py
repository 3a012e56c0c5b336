"""Pass configurations: one small frozen class per pass, selected by `type` in `[[passes]]`.

The handlers that carry them out live in `edgeslm.passes` (they import torch); this module must
stay importable without torch so that `edgeslm validate` is fast. Adding a pass means adding a class
here (and to `PassConfig`) and registering a handler; no caller changes.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from edgeslm.config.base import StrictModel


class CalibrationSpec(StrictModel):
    source: str = Field(
        "builtin",
        description="Text used to calibrate static activation ranges: 'builtin' (bundled English "
        "sentences), a .txt file (one text per line), or a folder of .txt files (one text each). "
        "Relative paths are relative to the recipe file.",
    )
    samples: int = Field(64, ge=1, le=100000, description="Number of texts to calibrate on.")
    method: Literal["minmax", "percentile", "entropy"] = Field(
        "minmax", description="How ranges are derived from calibration statistics (ONNX).")


class QuantizeConfig(StrictModel):
    """Post-training int8 quantization, realised per export format."""

    stage: ClassVar[str] = "export"  # applied by each exporter, in its own runtime's terms
    type: Literal["quantize"] = "quantize"
    method: Literal["dynamic-int8", "static-int8"] = Field(
        description="dynamic-int8: int8 weights, activations quantized at run time (no data needed). "
        "static-int8: int8 weights and activations with ranges fixed by calibration data.")
    granularity: Literal["per-channel", "per-tensor"] = Field(
        "per-channel", description="Weight scale granularity. per-channel keeps accuracy "
        "(MiniLM: cosine 0.989 vs 0.962 per-tensor with plain dynamic int8).")
    preset: Literal["target", "arm-s8s8", "x86-u8u8", "x86-u8s8", "x86-u8s8-reduced"] = Field(
        "target", description="Integer formats: 'target' takes the target's preset; the others force "
        "symmetric s8 activations/s8 weights (ARM), u8/u8 (x86 without VNNI), u8/s8 (x86 with VNNI) "
        "or u8/s8 with 7-bit weights (reduce_range).")
    smooth_alpha: float | None = Field(
        0.7, ge=0, le=1, description="SmoothQuant migration strength: activation outlier channels are "
        "moved into the weights before quantizing (exact in float). 0 disables. Measured on MiniLM "
        "(dynamic int8, ONNX): cosine 0.973 without, 0.994 with alpha 0.7.")
    keep_sensitive_float: bool | None = Field(
        None, description="Keep the FFN down-projections (width-reducing Linear layers, the most "
        "outlier-sensitive) in float. Default: true for static-int8, false for dynamic-int8.")
    embeddings: bool = Field(
        False, description="Also store the word-embedding table in int8 (per row). ONNX with dynamic-int8 "
        "only for now. MiniLM: 23.5 MB instead of 59.2 MB, embedding cosine 0.9923 instead of 0.9936.")
    exclude: tuple[str, ...] = Field(
        (), description="Glob patterns of module paths or node names kept in float "
        "(e.g. '*encoder.layer.0.*', '*pooler*').")
    calibration: CalibrationSpec | None = Field(
        None, description="Texts for activation statistics: static ranges and SmoothQuant scales "
        "(defaults to the bundled texts).")


# Later passes (fine-tune, prune) join here as
# `Annotated[Union[QuantizeConfig, PruneConfig, ...], Field(discriminator="type")]`.
PassConfig = QuantizeConfig

PASS_TYPES: dict[str, type[StrictModel]] = {"quantize": QuantizeConfig}
