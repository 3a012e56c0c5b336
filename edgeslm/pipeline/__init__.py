"""build(recipe, target): plan -> resolve -> (cache) -> the loop (pipeline.loop: load -> passes -> export ->
judge -> manifest, the same for every task).

    from edgeslm.pipeline import build, plan
    result = build(loaded, plan(loaded, [target])[0], out)   # -> BuildResult (folder, manifest, cached)

`pipeline.planning` checks a whole plan before any work (and is what `edgeslm validate` runs); `pipeline.build`
runs it, taking an unchanged build from the cache.
"""

from __future__ import annotations

from edgeslm.pipeline.build import BuildResult, StepLog, build, build_dir, plan

__all__ = ["BuildResult", "StepLog", "build", "build_dir", "plan"]
