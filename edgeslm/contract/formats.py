"""Artifact formats, as host and device name them: one row per format (its file suffix, the Python package a
device needs to run it, how to install that). The recipe's and target's `formats` are checked against this
table, the host's format units (edgeslm.formats) and the device's sessions (edgeslm.runner.runtimes) are
keyed by its names. Standard library only.

    FORMATS["onnx"].device_package      # "onnxruntime"
    register(FormatRow("tflite", ".tflite", "tflite_runtime", "pip install tflite-runtime"))
"""

from __future__ import annotations

from dataclasses import dataclass

NUMPY_INSTALL = "python3 -m pip install numpy"


@dataclass(frozen=True)
class FormatRow:
    name: str
    suffix: str
    device_package: str  # the key of the device probe's `runtimes` saying it imports there
    install: str  # how to install it on a device


FORMATS: dict[str, FormatRow] = {}


def register(row: FormatRow) -> FormatRow:
    """Add (or replace) a format's row."""
    FORMATS[row.name] = row
    return row


register(FormatRow("onnx", ".onnx", "onnxruntime", "python3 -m pip install onnxruntime numpy"))
register(FormatRow("executorch", ".pte", "executorch",
                   "python3 -m pip install executorch-numpy-runtime numpy  (Python >= 3.12)"))


def known(name) -> str:
    """`name` if it is a registered format, else ValueError naming the near miss and the choices."""
    import difflib

    if isinstance(name, str) and name in FORMATS:
        return name
    close = difflib.get_close_matches(str(name), list(FORMATS), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ValueError(f"unknown format {name!r} ({hint}choose one of: {', '.join(FORMATS)})")
