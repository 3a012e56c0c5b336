"""Tasks on the build host, one unit per recipe `task`. A unit owns what differs between tasks outside the
device runner (whose own units are edgeslm.runner.tasks):

    unit = task_unit("text-generation")
    unit.info                      # config.tasks.TaskInfo: output, metrics, the quantization it takes
    unit.build(bctx)               # its part of one build (tasks.base.TaskBuild), driven by edgeslm.pipeline.loop
    unit.profile_args(new_tokens)  # what the device runner's `profile` needs besides the common options
    unit.repeats                   # (measured runs, warm-up runs) a profile makes unless told
    unit.fit_problem(probe, m)     # why a build would not fit a device (None: it fits, or not checked)
    unit.report_fields(result)     # the task's own figures for a report row (None: none)
    unit.generates                 # whether `edgeslm run` can generate text with its builds
    unit.target_independent        # whether its artifacts are the same for every CPU target

Importing this package imports neither torch nor the exporters; a build does.
"""

from __future__ import annotations

from edgeslm.contract.tasks import TASKS, TaskRow, register
from edgeslm.errors import UserError
from edgeslm.tasks.base import TaskUnit

__all__ = ["TaskUnit", "register_task", "task_unit"]

# task name -> its host unit class (the built-in ones: every encoder task is an EncoderTask)
UNITS: dict[str, type[TaskUnit]] = {}


def register_task(row: TaskRow, unit: type[TaskUnit]) -> type[TaskUnit]:
    """Add a task: its row in the contract's table (recipes may then name it) and its host unit."""
    register(row)
    UNITS[row.name] = unit
    return unit


def _builtin() -> None:
    from edgeslm.tasks.encoders import EncoderTask
    from edgeslm.tasks.generation import GenerationTask

    for name, row in TASKS.items():
        UNITS.setdefault(name, GenerationTask if row.head == "decoder" else EncoderTask)


def task_unit(task: str) -> TaskUnit:
    """The host unit of a task (a manifest's or a recipe's `task`)."""
    if task not in UNITS:
        _builtin()
    if task not in TASKS or task not in UNITS:
        raise UserError(f"unknown task {task!r}: edgeslm knows {', '.join(UNITS)}")
    return UNITS[task](TASKS[task])
