"""The encoder tasks (embedding, sequence-classification, fill-mask): one forward pass, one output;
their build is edgeslm.stages, their device loop edgeslm.runner.encoders."""

from __future__ import annotations

from edgeslm.config.tasks import TaskInfo


class EncoderTask:
    generates = False

    def __init__(self, info: TaskInfo):
        self.info, self.name = info, info.name

    def build_into(self, *args, **kwargs):
        from edgeslm.stages import build_into

        return build_into(*args, **kwargs)

    def profile_args(self, new_tokens: int) -> list[str]:
        return []

    def fit_problem(self, probe: dict, manifest) -> str | None:
        return None  # an encoder's memory is measured by profiling, not predicted

    def report_fields(self, result: dict) -> dict | None:
        return None
