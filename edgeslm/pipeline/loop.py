"""The one build loop, for every task: load -> passes -> reference outputs -> export per format -> judge ->
manifest. What differs between tasks is the task unit's TaskBuild (edgeslm.tasks); what differs between
formats is the format unit's adapters (edgeslm.formats); the passes are edgeslm.passes'."""

from __future__ import annotations

from edgeslm.artifacts.manifest import Manifest
from edgeslm.passes import run_passes
from edgeslm.pipeline import manifest as manifests
from edgeslm.tasks import task_unit
from edgeslm.tasks.base import BuildContext


def run(b: BuildContext) -> Manifest:
    task = task_unit(b.recipe.model.task).build(b)
    pctx = task.load()
    run_passes(pctx, b.recipe.passes, task.before_compression, task.pass_cache())
    pctx.teacher = None
    task.after_passes(pctx)
    done = {}
    for fmt in task.export_order():
        done[fmt] = task.judge(fmt, task.export(fmt, pctx), pctx)
    artifacts = [done[f] for f in b.recipe.export.formats]
    body = task.finish(artifacts, pctx)
    return manifests.write(b, body, artifacts, pctx.facts)
