"""Tasks on the device, one unit per manifest `task`: the module that checks and profiles an artifact of
that kind. A unit has `profile(job) -> dict`, the task's part of the profile result: `runtime` (name),
`settings`, `parity` (with `passed`), `latency_ms` (statistics, with `cv`), `samples_ms`, `load_ms`,
`memory_kb` (with `peak_rss`), `load` (runner.budget.load_between over the timed runs), `partial` (when the
budget or the host ended measuring early: Budget.partial), and what the task adds (`task` for an encoder's eval split, `generation`
for a decoder's TTFT and decode speed). runner/profile.py adds what every result carries."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from edgeslm.contract.tasks import TASKS
from edgeslm.runner.budget import Budget
from edgeslm.runner.errors import RunnerError



@dataclass(frozen=True)
class Job:
    """What `runner profile` was asked to do, for one artifact of one build."""
    build_dir: str
    manifest: dict
    artifact: dict
    threads: int
    warmup: int
    iters: int
    min_seconds: float = 0.0
    seq_len: int | None = None  # encoders: the input length timed
    eval_rows: int | None = None  # encoders: None = no eval, 0 = all of it, N = the first N texts
    et_runtime: str | None = None  # edgeslm's ExecuTorch runtime folder
    new_tokens: int = 64  # decoders: decode steps timed
    prompt_lengths: tuple | None = None  # decoders: prompt lengths timed (None: PROMPT_LENGTHS that fit)
    budget: Budget = field(default_factory=lambda: Budget(None))  # time budget, stop requests, progress lines


def task_unit(task: str):
    """The device module of a task."""
    if task not in TASKS:
        raise RunnerError(f"this runner does not know task {task!r} ({', '.join(TASKS)}); deploy with a newer edgeslm")
    return importlib.import_module(f"edgeslm.runner.{TASKS[task].device_loop}")
