"""Runtimes on the build host, one unit per artifact format: what the format needs on a device and the
exporters that make its files (whose device sessions are edgeslm.runner.runtimes).

    rt = runtime_unit("executorch")
    rt.exporter()                  # the encoder exporter (edgeslm.exporters.*): export + run on the host
    rt.build_decoder(work, ...)    # a decoder artifact, judged: (Artifact, teacher-forced logits, pass facts)
    rt.device_package(task)        # the device probe's runtime that must be installed (None: deploy uploads it)
    rt.uploads_runtime(task)       # deploy ships edgeslm's own runtime folder for it

Importing this module imports neither torch nor any exporter.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from edgeslm.errors import UserError


@dataclass(frozen=True)
class RuntimeUnit:
    format: str
    suffix: str
    package: str  # the key of the device probe's `runtimes` saying it imports there
    install: str  # how to install it on a device
    exporter_ref: str  # module:class of the encoder exporter
    decoder_ref: str  # module:function making and judging a decoder artifact
    rewires_model: bool = False  # the decoder export changes the loaded model in place: built last
    own_runtime: frozenset = frozenset()  # tasks whose artifacts run in edgeslm's runtime folder (deploy uploads it)

    def exporter(self):
        module, _, cls = self.exporter_ref.partition(":")
        return getattr(importlib.import_module(module), cls)()

    def build_decoder(self, *args, **kwargs):
        module, _, fn = self.decoder_ref.partition(":")
        return getattr(importlib.import_module(module), fn)(*args, **kwargs)

    def uploads_runtime(self, task: str) -> bool:
        return task in self.own_runtime

    def device_package(self, task: str) -> str | None:
        return None if self.uploads_runtime(task) else self.package


RUNTIMES = {r.format: r for r in (
    RuntimeUnit("onnx", ".onnx", "onnxruntime", "python3 -m pip install onnxruntime numpy",
                "edgeslm.exporters.onnx:OnnxExporter", "edgeslm.generation.onnx_export:build_decoder"),
    RuntimeUnit("executorch", ".pte", "executorch",
                "python3 -m pip install executorch-numpy-runtime numpy  (Python >= 3.12)",
                "edgeslm.exporters.executorch:ExecuTorchExporter", "edgeslm.generation.executorch_export:build_decoder",
                rewires_model=True, own_runtime=frozenset({"text-generation"})),
)}
NUMPY_INSTALL = "python3 -m pip install numpy"


def runtime_unit(fmt: str) -> RuntimeUnit:
    if fmt not in RUNTIMES:
        raise UserError(f"unknown artifact format {fmt!r}: edgeslm knows {', '.join(RUNTIMES)}")
    return RUNTIMES[fmt]
