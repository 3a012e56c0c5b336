"""build(recipe, target): plan -> resolve -> (cache) -> load -> passes -> export -> verify -> manifest."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

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
from edgeslm.tasks.base import BuildContext, StepLog


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
        # only what of the target shapes the files: targets that would get the same bytes share one build
        "target": unit.target_part(recipe, target),
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
        work = folder.with_name(f".{folder.name}.build-{os.getpid()}")
        b = BuildContext(loaded=loaded, target=target, source=source, model_files=model_files, tools=tools, key=key,
                         work=work, log=log, started=now(), t0=t0, force=force)
        return _build_new(b, folder)


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _build_new(b: BuildContext, folder: Path) -> BuildResult:
    from edgeslm.pipeline import loop

    recipe, target, work, t0 = b.recipe, b.target, b.work, b.t0
    shutil.rmtree(work, ignore_errors=True)
    made_parent = not folder.parent.exists()
    work.mkdir(parents=True)
    try:
        manifest = loop.run(b)
        if manifest.status == "ok":
            cache.store(work, b.key, replace=b.force)
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
