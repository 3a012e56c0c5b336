"""Pass configurations: one small frozen class per pass, selected by `type` in `[[passes]]`.

The handlers that carry them out live in `edgeslm.passes` (they import torch); this module must
stay importable without torch so that `edgeslm validate` is fast. Adding a pass means adding a class
here (and to `PassConfig`) and registering a handler; no caller changes.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

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
    preset: Literal["target", "arm-s8s8", "x86-u8s8-reduced", "x86-u8s8"] = Field(
        "target", description="Integer formats: 'target' takes the target's preset; the others "
        "force symmetric s8 activations/s8 weights (ARM), u8/s8 with 7-bit weights (x86 without "
        "VNNI), or u8/s8 full range (x86 with VNNI).")
    exclude: tuple[str, ...] = Field(
        (), description="Glob patterns of layer/node names kept in float (e.g. '*pooler*').")
    keep_sensitive_float: bool = Field(
        True, description="Keep the layers edgeslm knows to be sensitive for the architecture "
        "in float (see the closing note of the quantization work).")
    calibration: CalibrationSpec | None = Field(
        None, description="Calibration data for static-int8 (defaults to builtin when omitted).")

    @model_validator(mode="after")
    def _calibration_only_for_static(self):
        if self.method != "static-int8" and self.calibration is not None:
            raise ValueError("calibration only applies to method = \"static-int8\"; remove [calibration]")
        return self


# Later passes (fine-tune, prune) join here as
# `Annotated[Union[QuantizeConfig, PruneConfig, ...], Field(discriminator="type")]`.
PassConfig = QuantizeConfig

PASS_TYPES: dict[str, type[StrictModel]] = {"quantize": QuantizeConfig}
