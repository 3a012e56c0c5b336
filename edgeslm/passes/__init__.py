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

from typing import Callable

from edgeslm.config.passes import FinetuneConfig, PassConfig, PruneConfig, QuantizeConfig, pass_tag, register_config
from edgeslm.passes.base import ExportPlan, PassContext, PassError

__all__ = ["ExportPlan", "PassContext", "PassError", "register_pass", "run_passes"]

HANDLERS: dict[str, Callable] = {}


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


def run_passes(ctx: PassContext, passes, before_compression: Callable[[PassContext], None], cache=None) -> None:
    """Run `passes` in order; `before_compression` is called once, just before the first pass that
    compresses (or after the last pass when none does). `cache` (edgeslm.passes.cache.PassCache) skips
    the longest leading run of cacheable passes whose result it holds, and keeps what it computes; when that
    run goes past the first compressing pass, the model before compression is loaded from the cache first so
    `before_compression` sees it. ctx.memo(name, compute) keeps a value computed on that model."""
    first = next((i for i, cfg in enumerate(passes) if cfg.compresses), len(passes))
    recorded, start = False, 0
    if cache is not None:
        ctx.memo = lambda name, compute: cache.remember(passes, first, name, compute)
        avail = cache.available(passes)
        if first > 0 and first not in avail:  # the model before compression is not kept: run from there
            avail = {u for u in avail if u <= first}
        best = max(avail, default=0)
        before = []
        if best > first and first > 0:
            before = cache.load(ctx, passes, first)
            if before is None:
                best = 0
        if best > first:
            before_compression(ctx)
            recorded = True
            facts = cache.load(ctx, passes, best)
            start, ctx.facts = (best, ctx.facts + facts) if facts is not None else (first, ctx.facts + before)
        elif best > 0:
            facts = cache.load(ctx, passes, best)
            if facts is not None:
                start, ctx.facts = best, ctx.facts + facts
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
