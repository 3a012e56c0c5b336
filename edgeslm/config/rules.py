"""Rules of a recipe that span its sections, each yielding (key, problem, fix); load_recipe raises the first as a
located ConfigError. What a pass cannot do for a task, its formats or its data is the pass config's own
declaration (config.passes: `refuses`), asked here for every pass alike."""

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
    for i, p in enumerate(recipe.passes):  # each pass says where it does not apply (config.passes)
        for key, problem, fix in p.refuses(recipe, task):
            yield f"passes[{i}]{key}", problem, fix
    if decoder and recipe.eval is not None:
        yield "eval", f"{m.task} is judged by perplexity and next-token agreement, not [eval]", "remove [eval]"
