"""Target files (targets/*.toml): a CPU, what it can run, and the integer formats that suit it."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edgeslm.config.base import FormatName, NAME_PATTERN, SCHEMA_VERSION, StrictModel, parse, read_toml

Arch = Literal["aarch64", "x86_64"]

PRESETS = {
    # symmetric s8 activations and weights: what ARM int8 NEON / dot-product kernels take natively
    "arm-s8s8": dict(activation="s8", weight="s8", symmetric_activations=True, reduce_range=False),
    # x86 without VNNI: u8 x s8 through vpmaddubsw saturates at int16; u8 x u8 kernels cannot.
    # Measured on MiniLM (dynamic int8, SmoothQuant): u8/u8 cosine 0.994, u8/s8 7-bit 0.979.
    "x86-u8u8": dict(activation="u8", weight="u8", symmetric_activations=False, reduce_range=False),
    # x86 with VNNI (vpdpbusd): u8 x s8 accumulates in int32 without saturation
    "x86-u8s8": dict(activation="u8", weight="s8", symmetric_activations=False, reduce_range=False),
    # the classic non-VNNI remedy: 7-bit weights (costs accuracy, see above)
    "x86-u8s8-reduced": dict(activation="u8", weight="s8", symmetric_activations=False, reduce_range=True),
}


def preset_shaping(method: str, preset: str) -> dict:
    """What of an int8 preset shapes the files an int8 `method` writes (and how this host verifies them):
    dynamic-int8 stores only weights (activations are quantized at run time), so only the weight type and
    range matter; static-int8 stores activation scales too. Targets that agree on it share one build."""
    p = PRESETS[preset]
    if method == "dynamic-int8":
        return {"weight": p["weight"], "reduce_range": p["reduce_range"]}
    return dict(p)


class QuantPreset(StrictModel):
    preset: Literal["arm-s8s8", "x86-u8u8", "x86-u8s8", "x86-u8s8-reduced", "auto"] = Field(
        description="Integer formats for int8 passes: arm-s8s8 (symmetric s8 activations, s8 weights), "
        "x86-u8u8 (x86 without VNNI: no u8 x s8 saturation), x86-u8s8 (VNNI), x86-u8s8-reduced "
        "(7-bit weights), or auto (chosen from the detected ISA; host only).")


class Target(StrictModel):
    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Target format version.")
    name: str = Field(pattern=NAME_PATTERN, description="Target name used with --target.")
    description: str = Field(description="One line shown by `edgeslm targets`.")
    arch: Arch | Literal["auto"] = Field(description="CPU architecture (uname -m), or auto (host only).")
    cpu: str | None = Field(None, description="CPU core, e.g. cortex-a72 (informational, and used to "
                            "pick the emulated CPU).")
    features: tuple[str, ...] = Field((), description="ISA features that matter for kernels, as "
                                      "/proc/cpuinfo names them (asimd, asimddp, avx2, avx512_vnni...).")
    formats: tuple[FormatName, ...] = Field(
        ("onnx", "executorch"), min_length=1, description="Formats this target can run (onnx, executorch).")
    onnx_runtime: Literal["onnxruntime"] = Field("onnxruntime", description="Runtime for .onnx files.")
    executorch_backend: Literal["xnnpack"] = Field("xnnpack", description="Delegate for .pte files.")
    threads: int = Field(0, ge=0, le=256, description="Default inference threads (0 = all cores).")
    quantization: QuantPreset = Field(description="Integer formats that suit this ISA.")
    detect: bool = Field(False, description="Fill arch and features from the machine edgeslm runs on.")

    @model_validator(mode="after")
    def _auto_only_when_detecting(self):
        if not self.detect and (self.arch == "auto" or self.quantization.preset == "auto"):
            raise ValueError("arch/preset 'auto' needs detect = true (only the host target detects)")
        if self.arch != "auto":
            problem = consistency(self.arch, self.features, self.quantization.preset)
            if problem:
                raise ValueError(problem)
        return self

    def resolved(self) -> "Target":
        """The concrete target: for a detecting target, this machine's arch, features and preset."""
        if not self.detect:
            return self
        arch, features = detect_host()
        preset = self.quantization.preset
        if preset == "auto":
            preset = preset_for(arch, features)
        return self.model_copy(update={"arch": arch, "features": features,
                                       "quantization": QuantPreset(preset=preset)})

    @property
    def preset(self) -> dict:
        return PRESETS[self.quantization.preset]


ARM_FEATURES = frozenset({"asimd", "asimddp", "i8mm", "fphp", "asimdhp", "sve", "sve2", "bf16", "neon",
                          "fp", "crc32", "atomics", "dotprod"})
X86_FEATURES = frozenset({"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
                          "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16"})
VNNI = frozenset({"avx512_vnni", "avx_vnni"})


def consistency(arch: str, features: tuple[str, ...], preset: str) -> str | None:
    """Why (arch, features, preset) cannot describe one real CPU, or None."""
    wrong = sorted(set(features) & (X86_FEATURES if arch == "aarch64" else ARM_FEATURES))
    if wrong:
        return (f"features {', '.join(wrong)} are not {arch} features; list what /proc/cpuinfo shows on "
                f"the device")
    if preset == "auto":
        return None
    if arch == "aarch64" and not preset.startswith("arm-"):
        return f"preset {preset!r} is for x86 CPUs; an aarch64 target takes 'arm-s8s8'"
    if arch == "x86_64" and preset.startswith("arm-"):
        return f"preset {preset!r} is for ARM CPUs; an x86_64 target takes x86-u8u8, x86-u8s8 or x86-u8s8-reduced"
    if arch == "x86_64" and preset == "x86-u8s8" and not VNNI & set(features):
        return ("preset 'x86-u8s8' needs VNNI (avx512_vnni or avx_vnni in features): without it u8 x s8 "
                "products saturate; use 'x86-u8u8' (or 'x86-u8s8-reduced')")
    return None


def preset_for(arch: str, features: tuple[str, ...]) -> str:
    if arch == "aarch64":
        return "arm-s8s8"
    if {"avx512_vnni", "avx_vnni"} & set(features):
        return "x86-u8s8"
    return "x86-u8u8"


INTERESTING_FEATURES = ("asimd", "asimddp", "i8mm", "fphp", "asimdhp", "sve", "avx2", "fma", "avx512f",
                        "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "f16c")


def detect_host() -> tuple[str, tuple[str, ...]]:
    arch = platform.machine().lower()
    arch = {"arm64": "aarch64", "amd64": "x86_64"}.get(arch, arch)
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                flags.update(value.split())
    except OSError:
        pass
    return arch, tuple(f for f in INTERESTING_FEATURES if f in flags)


def load_target_file(path: Path) -> Target:
    return parse(Target, read_toml(path, "target"), str(path))
