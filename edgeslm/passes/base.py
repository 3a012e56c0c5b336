"""What every pass handler gets and may raise: the PassContext the passes change, the ExportPlan they leave for
the formats, PassError."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from edgeslm.errors import UserError


class PassError(UserError):
    """A pass cannot run as configured (no handler, data it cannot use)."""


@dataclass
class ExportPlan:
    """What the exporters must realise beyond exporting the module (today: quantization)."""

    quantization: Any = None  # edgeslm.passes.quantize.PreparedQuant


@dataclass
class PassContext:
    model: Any  # models.loader.LoadedModel (encoders) or models.causal_lm.LoadedDecoder: what the passes change
    recipe: Any  # edgeslm.config.recipe.Recipe
    datasets: Callable[[str | None], Any]  # name (None: the only one) -> edgeslm.datasets.Dataset
    calibration: Callable[[], list]  # tokenized calibration samples (decoders: token chunks)
    step: Callable  # StepLog.step: a context manager per named step
    plan: ExportPlan = field(default_factory=ExportPlan)
    facts: list[dict] = field(default_factory=list)  # one entry per pass, into the manifest
    teacher: Any = None  # the model before compression (set by the pipeline's hook)
    progress: Callable[[str], None] = lambda message: None  # one-line progress (epochs, accuracy)
    warnings: list[str] = field(default_factory=list)  # for the build's warnings (console and manifest)
    # memo(name, compute): a JSON value computed on the model before compression, kept across builds (set by
    # run_passes when passes are cached); None: compute it
    memo: Callable[[str, Callable], Any] | None = None
    # load_teacher(source): an external teacher (a pass's `teacher`), loaded once and checked against the model
    load_teacher: Callable[[str], Any] | None = None

    def max_len(self, override: int | None = None) -> int:
        return override or self.recipe.inputs.max_seq_len
