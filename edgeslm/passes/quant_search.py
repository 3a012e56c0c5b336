"""Accuracy-aware quantization: per export format, try settings in order of compression until the task
metric holds (quantize.max_accuracy_drop), measured on the real artifact in its real runtime.

The candidates, most compressed first: the pass as configured; SmoothQuant alpha 0.5 and 0.85; the FFN
down-projections kept in float (their inputs carry the largest outliers); the attention output
projections as well; the first and the last layer entirely as well. Each one is exported, run on the eval
split and scored; the first whose drop against the model before quantization is within the limit wins.

neural-compressor was considered for this loop: its 3.x tuning API (`autotune` with a TuningConfig and an
eval function) quantizes with its own PyTorch algorithms in process and returns a PyTorch model; it has
no ONNX or ExecuTorch/XNNPACK back end, and what must hold is the accuracy of the artifact that ships,
in its runtime. So the loop is this one, over edgeslm's own per-format quantizers.
"""

from __future__ import annotations

import dataclasses
import time

from edgeslm.config.passes import QuantizeConfig
from edgeslm.errors import CheckFailed

ATTENTION_OUT = ("*attention.output.dense", "*attention.dense", "*attention.out_lin")


def _layer_patterns(hf) -> tuple[str, ...]:
    n = getattr(hf.config, "num_hidden_layers", None) or getattr(hf.config, "n_layers", None)
    if not n or hf.config.model_type == "albert":  # ALBERT's layers share one set of weights
        return ()
    return ("*layer.0.*", f"*layer.{n - 1}.*")


def candidates(q: QuantizeConfig, hf) -> list[tuple[str, QuantizeConfig]]:
    out = [("as configured", q)]
    for alpha in (0.5, 0.85):
        if q.smooth_alpha != alpha:
            out.append((f"SmoothQuant alpha {alpha}", q.model_copy(update={"smooth_alpha": alpha})))
    keep = q.model_copy(update={"keep_sensitive_float": True})
    if not q.keep_sensitive_float:
        out.append(("FFN down-projections in float", keep))
    attn = keep.model_copy(update={"exclude": tuple(q.exclude) + ATTENTION_OUT})
    out.append(("+ attention output projections in float", attn))
    layers = _layer_patterns(hf)
    if layers:
        out.append(("+ first and last layer in float", attn.model_copy(update={"exclude": attn.exclude + layers})))
    return out


def search(fmt: str, exporter, ectx, prepared, evalset, batch: int, before: float, log) -> tuple:
    """Export `fmt` with each candidate until the metric holds. Returns (ExportResult, runner, facts)."""
    from edgeslm.passes.base import ExportPlan
    from edgeslm.passes.quantize import prepare

    q: QuantizeConfig = prepared.config
    limit = q.max_accuracy_drop
    model = ectx.loaded
    trials = []
    for name, cand in candidates(q, model.hf):
        t0 = time.perf_counter()
        with log.step(f"{fmt}: accuracy-aware quantization, trial {len(trials) + 1}: {name}"):
            p = prepared if cand == q else prepare(prepared.base_module, cand, ectx.calibration, model.input_names)
            p.config, p.base_module = cand, prepared.base_module
            trial = dataclasses.replace(ectx, loaded=dataclasses.replace(model, module=p.module),
                                        plan=ExportPlan(quantization=p))
            result = exporter.export(trial)
            run = exporter.runner(ectx.workdir / result.file, threads=0, quantization=result.quantization)
            score = evalset.score(run, batch, evalset.centroids(run, batch))
        drop = round((before - score["value"]) * 100, 3)
        trials.append({"candidate": name, "value": score["value"], "drop_points": drop,
                       "seconds": round(time.perf_counter() - t0, 1), "kept_float": len(p.kept_float),
                       "smooth_alpha": cand.smooth_alpha})
        log.progress(f"{fmt} trial {len(trials)} ({name}): {evalset.metric} {score['value']:.4f}, drop {drop:+.2f} "
                     f"points (limit {limit:g})")
        if drop <= limit:
            facts = {"limit_points": limit, "chosen": name, "trials": trials,
                     "why": f"the most compressed setting whose {evalset.metric} drop ({drop:+.2f} points) is within "
                            f"{limit:g}"}
            return result, run, facts, trial
    tried = "; ".join(f"{t['candidate']}: {t['drop_points']:+.2f}" for t in trials)
    raise CheckFailed(f"{fmt}: no quantization setting keeps the {evalset.metric} drop within {limit:g} points "
                      f"(tried {tried}); raise max_accuracy_drop, or leave this format in float")
