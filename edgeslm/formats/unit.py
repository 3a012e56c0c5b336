"""What a format unit is on the build host (edgeslm.formats.format_unit gives the unit of a format); a format
folder (formats/onnx, formats/executorch) subclasses it with its exporters. Importing this imports nothing
heavy: the units import their exporters (torch, onnx, executorch) only when asked for them."""

from __future__ import annotations

from edgeslm.contract.formats import FORMATS, FormatRow
from edgeslm.contract.tasks import TASKS


class FormatUnit:
    """An artifact format: the encoder exporter, the decoder adapter, and what a device needs for it."""

    name = ""
    any_batch = False  # its encoder files take any batch size (the build then checks batch consistency)
    rewires_model = False  # its decoder export changes the loaded model in place: built after the others
    own_runtime: frozenset = frozenset()  # task heads (contract.tasks) whose artifacts run in edgeslm's runtime folder (deploy uploads it)

    @property
    def row(self) -> FormatRow:
        return FORMATS[self.name]

    @property
    def format(self) -> str:
        return self.name

    @property
    def suffix(self) -> str:
        return self.row.suffix

    @property
    def package(self) -> str:
        return self.row.device_package

    @property
    def install(self) -> str:
        return self.row.install

    def exporter(self):
        """The encoder exporter (edgeslm.formats.base.Exporter): export, and run the file on the host."""
        raise NotImplementedError(f"format {self.name} exports no encoders")

    def export_decoder(self, work, model, tokenizer, g, quant, log, log_file, probe):
        """A decoder file and how to run it (tasks.base.Exported); `quant` the quantize pass's plan or None,
        `probe(step)` the task's probe of the eager model the file stands for."""
        raise NotImplementedError(f"format {self.name} exports no decoders")

    def decoder_problem(self, config) -> str | None:
        """Why this format cannot export a decoder of this transformers config (one line), checked right after
        loading, before any export; None: it can."""
        return None

    def uploads_runtime(self, task: str) -> bool:
        return task in TASKS and TASKS[task].head in self.own_runtime

    def device_package(self, task: str) -> str | None:
        """The device probe's runtime that must be installed (None: deploy uploads edgeslm's own)."""
        return None if self.uploads_runtime(task) else self.package
