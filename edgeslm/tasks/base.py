"""What every task unit has (edgeslm.tasks.task_unit gives the unit of a task), and what the one build loop
(edgeslm.pipeline.loop) hands a task and gets back from it:

    BuildContext   one build's inputs (recipe, target, resolved source, cache key, work folder, step log)
    TaskBuild      a task's part of one build: load, the hook before compression, reference outputs, export
                   per format (through the format units), judge, and the task's part of the manifest
    Exported       what a format adapter hands back (formats.base): the file's facts, its session, its eager model
    ManifestBody   the task's part of the manifest (the loop writes the rest, once for every task)
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgeslm.contract.tasks import TaskInfo
from edgeslm.formats.base import Exported

__all__ = ["BuildContext", "Exported", "ManifestBody", "StepLog", "TaskBuild", "TaskUnit"]


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
class BuildContext:
    """One build's inputs, as the loop hands them to the task (instead of eleven positional arguments)."""

    loaded: Any  # edgeslm.config.recipe.LoadedRecipe
    target: Any  # edgeslm.config.target.Target (resolved)
    source: Any  # edgeslm.models.sources.ResolvedSource
    model_files: dict  # the source's fingerprint (file -> sha256, size)
    tools: dict  # tool versions (part of the cache key)
    key: str  # the cache key
    work: Path  # the folder being built (moved into place by the pipeline once done)
    log: StepLog
    started: str  # ISO time the build started
    t0: float  # perf_counter at the start
    force: bool = False  # rebuild: do not read the pass cache either

    @property
    def recipe(self):
        return self.loaded.recipe

    @property
    def file(self) -> str:
        """The recipe file as error messages name it."""
        from edgeslm.config.recipe import path_for_display

        return str(path_for_display(self.loaded.path))

    @property
    def log_file(self) -> Path:
        """Where a tool's own chatter goes (beside the build folder, not in it)."""
        return self.work.parent / f"{self.target.name}.onnx-builder.log"


@dataclass
class ManifestBody:
    """The task's part of a manifest; edgeslm.pipeline.manifest writes the rest (version, key, recipe, target,
    source, tools, build host, status, files) for every task alike."""

    model: dict
    inputs: list
    outputs: list
    shapes: dict
    reference: dict
    warnings: list = field(default_factory=list)
    evaluation: dict | None = None


class TaskBuild:
    """A task's part of one build, called by the loop in this order:

        pctx = load()                                   # the model, the PassContext the passes change
        run_passes(pctx, ..., before_compression, pass_cache())
        after_passes(pctx)                              # reference outputs of the model as passed
        for fmt in export_order(): judge(fmt, export(fmt, pctx), pctx)   # -> Artifact
        finish(artifacts, pctx)                         # reference file; -> ManifestBody
    """

    def __init__(self, bctx: BuildContext):
        self.b = bctx

    def load(self):
        raise NotImplementedError

    def before_compression(self, pctx) -> None:
        pass

    def pass_cache(self):
        return None

    def after_passes(self, pctx) -> None:
        pass

    def export_order(self) -> list[str]:
        return list(self.b.recipe.export.formats)

    def export(self, fmt: str, pctx) -> Exported:
        raise NotImplementedError

    def judge(self, fmt: str, exported: Exported, pctx):
        raise NotImplementedError

    def finish(self, artifacts: list, pctx) -> ManifestBody:
        raise NotImplementedError


class TaskUnit:
    """What every task has; a task overrides what differs. `build`: its TaskBuild class (imported when a
    build asks for it, so importing a unit imports no torch)."""

    generates = False
    repeats = (100, 10)  # (measured runs, warm-up runs) of a profile by default
    # whether the artifacts are the same for every CPU target (then a recipe's targets share one build)
    target_independent = False

    def __init__(self, info: TaskInfo):
        self.info, self.name = info, info.name

    def build(self, bctx: BuildContext) -> TaskBuild:
        raise NotImplementedError(f"task {self.name} has no build")

    def profile_args(self, new_tokens: int, prompt_lengths: tuple | None = None) -> list[str]:
        return []

    def target_part(self, recipe, target) -> dict | str:
        """What of the (resolved) `target` shapes this task's files: the build's cache key holds only this, so
        a recipe's targets that would get the same bytes share one build. Encoders: the formats the target
        runs and, for an int8 pass on the target's preset, the part of the preset that its method stores."""
        if self.target_independent:
            return "any"
        from edgeslm.config.passes import Int8QuantizeConfig
        from edgeslm.config.target import preset_shaping

        part = {"formats": sorted(target.formats)}
        for p in recipe.passes:
            if isinstance(p, Int8QuantizeConfig) and p.preset == "target":
                part["int8"] = preset_shaping(p.method, target.quantization.preset)
        return part

    def fit_problem(self, probe: dict, manifest) -> str | None:
        return None

    def report_fields(self, result) -> dict | None:
        """The task's own figures for a report row, from a contract.results.ProfileResult (None: none)."""
        return None
