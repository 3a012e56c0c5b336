"""Artifact formats on the build host: one folder per format (formats/onnx, formats/executorch) holding its
encoder exporter, decoder adapter and quantization lowering, and one unit (formats/unit.FormatUnit) that the
build, deploy and reports ask. The names and what a device needs are the contract's table
(edgeslm.contract.formats); each format's device session is edgeslm.runner.runtimes'.

    unit = format_unit("executorch")
    unit.exporter()                  # the encoder exporter: export + run on the host
    unit.export_decoder(work, ...)   # a decoder file, its runtime session and eager model (tasks.base.Exported)
    unit.device_package(task)        # the device probe's runtime that must be installed (None: deploy uploads it)
    unit.uploads_runtime(task)       # deploy ships edgeslm's own runtime folder for it

A new format: a folder here with its unit, a row in contract.formats, a session class in runner.runtimes,
and `register_format(unit)` (which a test can call too). Importing this package imports neither torch nor
any exporter.
"""

from __future__ import annotations

from edgeslm.contract.formats import FORMATS as ROWS
from edgeslm.contract.formats import NUMPY_INSTALL
from edgeslm.errors import UserError
from edgeslm.formats.executorch import UNIT as EXECUTORCH
from edgeslm.formats.onnx import UNIT as ONNX
from edgeslm.formats.unit import FormatUnit

FORMATS: dict[str, FormatUnit] = {u.name: u for u in (ONNX, EXECUTORCH)}

__all__ = ["FORMATS", "NUMPY_INSTALL", "FormatUnit", "format_unit", "register_format"]


def register_format(unit: FormatUnit) -> FormatUnit:
    """Add a format unit (its contract row must be registered: edgeslm.contract.formats.register)."""
    if unit.name not in ROWS:
        raise ValueError(f"format {unit.name!r} has no row in edgeslm.contract.formats; register one first")
    FORMATS[unit.name] = unit
    return unit


def format_unit(fmt: str) -> FormatUnit:
    if fmt not in FORMATS:
        raise UserError(f"unknown artifact format {fmt!r}: edgeslm knows {', '.join(FORMATS)}")
    return FORMATS[fmt]
