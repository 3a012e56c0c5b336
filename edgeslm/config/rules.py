"""Rules of a recipe that span its sections (a pass against the task, the formats, the datasets), each
yielding (key, problem, fix); load_recipe raises the first as a located ConfigError."""

from __future__ import annotations

from edgeslm.config.data import dataset_for
from edgeslm.config.passes import FinetuneConfig, PruneConfig, QuantizeConfig
from edgeslm.contract.tasks import TASKS


def cross_checks(recipe):
    """Rules that span sections, each yielding (key, problem, fix)."""
    m = recipe.model
    task = TASKS[m.task]
    labelled, decoder = task.labelled, task.head == "decoder"
    if m.num_labels is not None and not labelled:
        yield "model.num_labels", "only applies to task = \"sequence-classification\"", "remove it"
    quant = [(i, p) for i, p in enumerate(recipe.passes) if isinstance(p, QuantizeConfig)]
    if len(quant) > 1:
        yield f"passes[{quant[1][0]}]", "only one quantize pass is allowed", "remove one"
    if quant and any(not isinstance(p, QuantizeConfig) for p in recipe.passes[quant[0][0] + 1:]):
        yield (f"passes[{quant[0][0]}]", "quantize must be the last pass (it is realised by the exporters, "
               "after every change to the model)", "move it after finetune and prune")
    known = ", ".join(recipe.datasets) or "none defined"
    uses = [(f"passes[{i}].dataset", p.dataset) for i, p in enumerate(recipe.passes)
            if isinstance(p, (FinetuneConfig, PruneConfig))]
    uses += [(f"passes[{i}].recovery.dataset", p.recovery.dataset) for i, p in enumerate(recipe.passes)
             if isinstance(p, PruneConfig) and p.recovery is not None]
    if recipe.eval is not None:
        uses.append(("eval.dataset", recipe.eval.dataset))
    for key, name in uses:
        if dataset_for(recipe, name) is None:
            yield (key, f"no dataset {name!r}" if name else "names no dataset and the recipe has "
                   f"{len(recipe.datasets)} (datasets: {known})",
                   "add a [datasets.NAME] table" if not recipe.datasets else "name one of the recipe's datasets")
    for i, p in enumerate(recipe.passes):
        if isinstance(p, FinetuneConfig) and not labelled:
            yield f"passes[{i}]", f"finetune trains sequence classifiers; the task is {m.task!r}", \
                "use task = \"sequence-classification\""
        if isinstance(p, PruneConfig) and p.importance == "taylor" and not labelled:
            yield f"passes[{i}].importance", "taylor importance needs labels (sequence-classification)", \
                "use importance = \"magnitude\""
        if isinstance(p, PruneConfig) and p.recovery is not None and not labelled:
            yield f"passes[{i}].recovery", "recovery fine-tuning needs a sequence-classification task", "remove it"
    if decoder:
        for i, p in enumerate(recipe.passes):
            if not isinstance(p, QuantizeConfig):
                yield (f"passes[{i}]", f"{m.task} takes only a quantize pass, not {p.type!r}",
                       "remove it")
        for i, q in quant:
            if "onnx" in recipe.export.formats and q.group_size not in (16, 32, 64, 128, 256):
                yield (f"passes[{i}].group_size", f"ONNX decoders quantize in blocks of 16, 32, 64, 128 or 256 "
                       f"input channels, not {q.group_size}", "use 32, or export.formats = [\"executorch\"]")
            if q.algorithm == "gptq" and (q.method != "8da4w" or q.group_size != 32):
                yield (f"passes[{i}].algorithm", f"gptq chooses int4 grids in groups of 32 (method 8da4w, group_size "
                       f"32), not {q.method} with group_size {q.group_size}",
                       "set method = \"8da4w\" and group_size = 32, or algorithm = \"rtn\"")
        if recipe.eval is not None:
            yield "eval", f"{m.task} is judged by perplexity and next-token agreement, not [eval]", \
                "remove [eval]"
    for i, q in quant:
        if q.algorithm != "rtn" and not decoder:
            yield (f"passes[{i}].algorithm", f"{q.algorithm} chooses int4 grids for decoders (text-generation); "
                   f"the task is {m.task!r}", "remove it")
        if q.embeddings and q.method != "dynamic-int8" and "onnx" in recipe.export.formats \
                and not decoder:
            yield (f"passes[{i}].embeddings", "int8 embeddings in ONNX are implemented with dynamic-int8 only",
                   "set embeddings = false, use method = \"dynamic-int8\", or export.formats = [\"executorch\"]")
        if q.max_accuracy_drop is not None and recipe.eval is None:
            yield (f"passes[{i}].max_accuracy_drop", "needs a task metric to search against",
                   "add [eval] with a dataset")
        if q.method not in task.quantize_methods:
            yield (f"passes[{i}].method", f"task {task.name!r} does not allow {q.method}",
                   task.quantize_refusal or f"use one of {', '.join(sorted(task.quantize_methods))}")
