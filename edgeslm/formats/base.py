"""Exporters: one module per format behind one small interface, looked up by format name.

An exporter turns the (already passed-through) PyTorch module into a file for its runtime, applies
the export-stage passes (quantization) in that runtime's own terms, and can run the file in the real
runtime on the host for verification.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from edgeslm.config.passes import QuantizeConfig
from edgeslm.config.recipe import Recipe
from edgeslm.config.target import Target

Inputs = dict[str, np.ndarray]


@dataclass
class ExportContext:
    loaded: Any  # edgeslm.models.loader.LoadedModel, after every pass
    recipe: Recipe
    target: Target  # resolved
    workdir: Path
    calibration: Callable[[], list[Inputs]]  # tokenized calibration samples, computed on demand
    step: Callable[[str], AbstractContextManager]
    plan: Any = None  # edgeslm.passes.ExportPlan: what the passes left for the exporters to realise

    @property
    def quant(self) -> QuantizeConfig | None:
        q = self.prepared_quant()
        return q.config if q is not None else None

    def prepared_quant(self):
        """The quantize pass's plan (passes.quantize.PreparedQuant), or None for a float build."""
        return getattr(self.plan, "quantization", None)

    def module(self):
        """The module to export: the model as the passes left it (smoothed for int8)."""
        return self.loaded.module

    def example_inputs(self, seq_len: int | None = None) -> Inputs:
        """Real tokenized text, padded or truncated to `seq_len` tokens, batch `inputs.batch_size`."""
        seq = seq_len or self.recipe.inputs.max_seq_len
        text = "Edge devices run compressed language models close to the data they serve. " * 40
        one = self.loaded.tokenize([text], max_len=seq, min_len=seq)
        return {k: np.repeat(v, self.recipe.inputs.batch_size, axis=0) for k, v in one.items()}


@dataclass
class ExportResult:
    file: str  # relative to the build folder
    runtime: str
    precision: str
    quantization: dict | None = None
    export: dict = field(default_factory=dict)


class Exporter(Protocol):
    format: str
    suffix: str

    def export(self, ctx: ExportContext) -> ExportResult: ...

    def runner(self, path: Path, threads: int, quantization: dict | None = None) -> Callable[[Inputs], np.ndarray]:
        """Load `path` in the real runtime; the callable runs one input dict and returns the output.
        `quantization` is the artifact's quantization facts (the runtime may need them to judge whether
        this host computes the artifact as the target will); the callable may carry a `note` saying how
        it ran."""
        ...


def precision_of(quant: QuantizeConfig | None) -> str:
    return "fp32" if quant is None else {"dynamic-int8": "int8-dynamic", "static-int8": "int8-static"}[quant.method]


@dataclass
class Exported:
    """A format adapter's answer to the build loop: the file's facts (`result`, an ExportResult); `session()`,
    which opens the file in the device runner's own runtime session and returns the callable that runs it
    (encoders: inputs -> output; decoders: step(tokens, start) -> logits); `eager`, what the eager model the file
    was exported from gives on the task's probe (encoders: None, the task holds the reference outputs; decoders:
    the probe's logits, None meaning the model before compression); `against`, that model in words; `quiet`, a
    context the session's native code runs in; `facts`, what the adapter adds to the manifest entry of the
    pass that planned it (quantize)."""

    result: Any
    session: Callable[[], Callable]
    eager: Any = None
    against: str = ""
    quiet: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    facts: dict | None = None
