"""What every task unit has (edgeslm.tasks.task_unit gives the unit of a task); a task overrides what differs."""

from __future__ import annotations

import importlib

from edgeslm.config.tasks import TaskInfo


class TaskUnit:
    """What every task has; a task overrides what differs. `builder`: module:function of its build."""

    generates = False
    builder = ""
    repeats = (100, 10)  # (measured runs, warm-up runs) of a profile by default
    # whether the artifacts are the same for every CPU target (then a recipe's targets share one build)
    target_independent = False

    def __init__(self, info: TaskInfo):
        self.info, self.name = info, info.name

    def build_into(self, *args, **kwargs):
        module, _, fn = self.builder.partition(":")
        return getattr(importlib.import_module(module), fn)(*args, **kwargs)

    def profile_args(self, new_tokens: int) -> list[str]:
        return []

    def fit_problem(self, probe: dict, manifest) -> str | None:
        return None

    def report_fields(self, result: dict) -> dict | None:
        return None
