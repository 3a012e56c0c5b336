"""Passes: each a config class (edgeslm.config.passes) plus a registered handler; one verb runs them.

A handler takes the PassContext and its config and changes `ctx.model` (the PyTorch model) in place or
replaces its module, and may leave instructions for the exporters in `ctx.plan` (quantize does: which
layers stay float, the method, the preset). Passes run in recipe order. Before the first pass that
compresses, the pipeline's `before_compression` hook records the model as it is then: compression loss is
measured against it (and distillation learns from it).

    @register_pass(MyConfig)          # MyConfig: a PassConfig with type: Literal["my-pass"]
    def my_pass(ctx, cfg): ...

makes `[[passes]] type = "my-pass"` valid in recipes; no caller changes. Where it does not apply (a task, a
format, missing data) the config's `refuses(recipe, task)` says, and the recipe is refused before any work.
The built-in passes (quantize, finetune, prune) are registered the same way, at the end of this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from edgeslm.config.passes import FinetuneConfig, PassConfig, PruneConfig, QuantizeConfig, pass_tag, register_config
from edgeslm.errors import UserError

HANDLERS: dict[str, Callable] = {}


class PassError(UserError):
    """A pass cannot run as configured (no handler, data it cannot use)."""


def register_pass(config_cls: type[PassConfig]):
    """Register `config_cls` for its `type` and the decorated function as its handler."""
    register_config(config_cls)

    def deco(fn: Callable) -> Callable:
        HANDLERS[pass_tag(config_cls)] = fn
        return fn
    return deco


def handler_for(cfg: PassConfig, where: str = "passes") -> Callable:
    if cfg.type in HANDLERS:
        return HANDLERS[cfg.type]
    raise PassError(f"{where}: pass type {cfg.type!r} has no handler (known passes with handlers: "
                    f"{', '.join(sorted(HANDLERS))}); register one with edgeslm.passes.register_pass")


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

    def max_len(self, override: int | None = None) -> int:
        return override or self.recipe.inputs.max_seq_len


def run_passes(ctx: PassContext, passes, before_compression: Callable[[PassContext], None], cache=None) -> None:
    """Run `passes` in order; `before_compression` is called once, just before the first pass that
    compresses (or after the last pass when none does). `cache` (edgeslm.passes.cache.PassCache) skips
    the longest leading run of cacheable passes whose result it holds, and keeps what it computes."""
    recorded = False
    start = 0
    if cache is not None:
        start, facts = cache.restore(ctx, passes)
        ctx.facts += facts
    for i, cfg in enumerate(passes):
        if i < start:
            continue
        handler = handler_for(cfg, f"passes[{i}]")
        if cfg.compresses and not recorded:
            before_compression(ctx)
            recorded = True
        with ctx.step(f"pass {i}: {cfg.type}"):
            facts = handler(ctx, cfg) or {}
        ctx.facts.append({"type": cfg.type, **facts})
        if cache is not None:
            cache.keep(ctx, passes, i)
    if not recorded:
        before_compression(ctx)


# the built-in passes, registered as any other (their work imports torch when it runs, not here)
@register_pass(QuantizeConfig)
def _quantize(ctx, cfg):
    from edgeslm.passes.quantize import run

    return run(ctx, cfg)


@register_pass(FinetuneConfig)
def _finetune(ctx, cfg):
    from edgeslm.passes.finetune import run

    return run(ctx, cfg)


@register_pass(PruneConfig)
def _prune(ctx, cfg):
    from edgeslm.passes.prune import run

    return run(ctx, cfg)
