"""The encoder tasks (embedding, sequence-classification, fill-mask): one forward pass, one output;
their build is edgeslm.stages, their device loop edgeslm.runner.encoders. An encoder's memory is measured
by profiling, not predicted, and its report row has no fields of its own: the defaults."""

from __future__ import annotations

from edgeslm.tasks.base import TaskUnit


class EncoderTask(TaskUnit):
    builder = "edgeslm.stages:build_into"
