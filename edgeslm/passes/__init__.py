"""Pass handlers. Config classes live in edgeslm.config.passes (torch-free).

A handler is registered for a config class; model-stage passes transform the PyTorch model in place
before export (fine-tuning and pruning will land here), export-stage passes (quantize) are realised by
each exporter in its runtime's terms.
"""

from __future__ import annotations

from typing import Callable

MODEL_PASS_HANDLERS: dict[type, Callable] = {}


def register_model_pass(config_cls: type):
    def deco(fn):
        MODEL_PASS_HANDLERS[config_cls] = fn
        return fn
    return deco


def apply_model_passes(model, passes, log) -> None:
    for cfg in passes:
        if getattr(cfg, "stage", "model") != "model":
            continue
        handler = MODEL_PASS_HANDLERS[type(cfg)]
        with log.step(f"pass: {cfg.type}"):
            handler(model, cfg)
