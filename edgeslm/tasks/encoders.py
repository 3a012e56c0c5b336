"""The encoder tasks (embedding, sequence-classification, fill-mask): one forward pass, one output;
their part of the build is tasks/encoder_build.py, their device loop edgeslm.runner.encoders. An encoder's memory
is measured by profiling, not predicted, and its report row has no fields of its own: the defaults."""

from __future__ import annotations

from edgeslm.tasks.base import TaskUnit


class EncoderTask(TaskUnit):
    def build(self, bctx):
        from edgeslm.tasks.encoder_build import EncoderBuild

        return EncoderBuild(bctx)
