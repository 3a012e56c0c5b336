"""build(recipe, target): plan -> resolve -> (cache) -> load -> passes -> export -> verify -> manifest."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgeslm import __version__
from edgeslm.artifacts import cache
from edgeslm.artifacts.manifest import Manifest, read_manifest
from edgeslm.config.recipe import LoadedRecipe
from edgeslm.config.target import Target
from edgeslm.errors import CheckFailed
from edgeslm.hashing import HashMemo
from edgeslm.models.checks import check_model_folder
from edgeslm.models.sources import resolve_source
from edgeslm.pipeline.planning import check_files, check_plan
from edgeslm.tasks import task_unit


@dataclass
class StepLog:
    """Timing of each step; `on_step` lets the CLI show progress."""

    on_step: Callable[[str], contextlib.AbstractContextManager] | None = None
    steps: list[dict] = field(default_factory=list)
    progress: Callable[[str], None] = lambda message: None  # a line of progress inside a step

    @contextlib.contextmanager
    def step(self, name: str):
        t0 = time.perf_counter()
        ctx = self.on_step(name) if self.on_step else contextlib.nullcontext()
        with ctx:
            yield
        self.steps.append({"name": name, "seconds": round(time.perf_counter() - t0, 3)})


@dataclass
class BuildResult:
    folder: Path
    manifest: Manifest
    cached: bool
    seconds: float
    note: str = ""  # e.g. modified files restored from the cache


def build_dir(out: Path, recipe_name: str, target_name: str) -> Path:
    return out / recipe_name / target_name


def plan(loaded: LoadedRecipe, targets: list[Target]) -> list[Target]:
    """Check every (recipe, target) pair before any work; returns resolved targets."""
    resolved = [t.resolved() for t in targets]
    check_files(loaded)
    for t in resolved:
        check_plan(loaded, t)
    return resolved


def build(loaded: LoadedRecipe, target: Target, out: Path, force: bool = False,
          log: StepLog | None = None) -> BuildResult:
    """Build one artifact set for one (resolved) target."""
    t0 = time.perf_counter()
    log = log or StepLog()
    recipe = loaded.recipe
    folder = build_dir(out, recipe.name, target.name)
    source = resolve_source(recipe.model.source, loaded.base_dir, recipe.model.revision)
    check_model_folder(source.spec, source.folder, recipe.model.task, source.gguf)  # milliseconds, before any work
    memo = HashMemo()
    model_files = source.fingerprint(memo)
    memo.save()
    tools = cache.tool_versions()
    unit = task_unit(recipe.model.task)
    key = cache.cache_key({
        "recipe": loaded.content_hash(),
        # a task whose artifacts do not depend on the CPU target is built once for all of a recipe's targets
        "target": "any" if unit.target_independent else target.model_dump(mode="json"),
        "model": model_files, "tools": tools, "edgeslm": [__version__, cache.code_hash()],
    })
    cache.clean_stale(folder.parent)
    # one build per key at a time: a second process (another target of the same recipe, a parallel CI job)
    # waits for the first and takes its result from the store
    with cache.key_lock(key, log.progress):
        if not force:
            hit = cache.lookup(key, folder, memo)
            memo.save()
            if hit is not None:
                cache.materialize(hit.folder, folder)
                note = cache.retarget(folder, target)
                return BuildResult(folder, read_manifest(folder), True, time.perf_counter() - t0,
                                   "; ".join(filter(None, (hit.note, note))))
        return _build_new(loaded, target, source, model_files, tools, key, folder, unit, force, log, t0)


def _build_new(loaded, target, source, model_files, tools, key, folder, unit, force, log, t0) -> BuildResult:
    recipe = loaded.recipe
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    work = folder.with_name(f".{folder.name}.build-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    made_parent = not folder.parent.exists()
    work.mkdir(parents=True)
    try:
        manifest = unit.build_into(work, loaded, target, source, model_files, tools, key, log, started, t0, force)
        if manifest.status == "ok":
            cache.store(work, key, replace=force)
        cache.replace_dir(work, folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if made_parent:  # a build that failed leaves no empty folders behind
            with contextlib.suppress(OSError):
                folder.parent.rmdir()
        raise
    if manifest.status != "ok":
        from edgeslm.verify import describe_failure

        bad = [f"{a.name}: " + ", ".join(filter(None, (describe_failure(a.verification),
                                                         describe_failure(a.compression, "vs original"))))
               for a in manifest.artifacts if a.verification and not a.verification.passed]
        exc = CheckFailed(f"{recipe.name} for {target.name}: verification failed: " + "; ".join(bad)
                          + f" (artifacts kept in {folder} for inspection; relax [verify] or change the passes)")
        exc.result = BuildResult(folder, manifest, False, time.perf_counter() - t0)  # for the full table
        raise exc
    return BuildResult(folder, manifest, False, time.perf_counter() - t0)
