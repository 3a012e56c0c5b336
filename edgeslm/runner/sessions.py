"""Runtimes on the device: import one (timed apart from loading the model) and run an artifact."""

from __future__ import annotations

from edgeslm.runner.errors import RunnerError
from edgeslm.runner.facts import _dist_version, _has_module


def import_runtime(fmt: str, et_runtime: str | None = None):
    """Import the runtime for `fmt` (measured apart from loading the model). Returns (name, loader).
    For .pte, `et_runtime` (or $EDGESLM_ET_RUNTIME): a folder holding libedgeslm_et.so and the executorch
    libraries it links (edgeslm.runner.native.build) - torch-free, and it has the decoder operators;
    else `executorch.runtime` when installed, else executorch-numpy-runtime."""
    import os

    et_runtime = et_runtime or os.environ.get("EDGESLM_ET_RUNTIME") or None
    if fmt == "executorch" and et_runtime:
        from edgeslm.runner.native_et import NativeRuntime

        import json

        holder = {}

        def load_native(path, threads, order):
            if "rt" not in holder:
                holder["rt"] = NativeRuntime(et_runtime, threads)
            method = holder["rt"].load(path)
            return lambda feeds: method([feeds[k] for k in order])[0]

        try:
            with open(os.path.join(et_runtime, "runtime.json")) as f:
                version = json.load(f).get("executorch", "?")
        except (OSError, ValueError, AttributeError):
            version = "?"
        return f"edgeslm-et (executorch {version} libraries)", load_native
    if fmt == "onnx":
        import onnxruntime as ort

        def load_onnx(path, threads, order):
            so = ort.SessionOptions()
            if threads:
                so.intra_op_num_threads = threads
            so.log_severity_level = 3
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            names = [i.name for i in sess.get_inputs()]
            return lambda feeds: sess.run(None, {k: feeds[k] for k in names})[0]

        return "onnxruntime " + (_dist_version("onnxruntime") or "?"), load_onnx
    if fmt == "executorch":
        if _has_module("executorch.runtime"):
            import torch  # the official runtime speaks torch tensors
            from executorch.runtime import Runtime

            try:  # portable quantized kernels (embedding_byte: int8 embedding tables)
                import executorch.kernels.quantized  # noqa: F401
            except (ImportError, OSError):
                pass

            def load_et(path, threads, order):
                if threads:
                    try:
                        from executorch.extension.pybindings import portable_lib

                        portable_lib._unsafe_reset_threadpool(threads)
                    except (ImportError, AttributeError):
                        pass
                method = Runtime.get().load_program(path).load_method("forward")
                return lambda feeds: method.execute([torch.from_numpy(feeds[k]) for k in order])[0].numpy()

            return "executorch.runtime " + (_dist_version("executorch") or "?"), load_et
        if _has_module("executorch_numpy_runtime"):
            import executorch_numpy_runtime as en

            def load_np(path, threads, order):
                method = en.Runtime.get().load_program(path).load_method("forward")
                return lambda feeds: method([feeds[k] for k in order])[0]

            return "executorch-numpy-runtime " + (_dist_version("executorch-numpy-runtime") or "?"), load_np
        raise RunnerError("no ExecuTorch runtime on the device: pip install executorch-numpy-runtime "
                          "(Python >= 3.12, numpy only) or executorch")
    raise RunnerError(f"unknown format {fmt!r}")


class Session:
    """A loaded artifact: call with a dict of numpy arrays, get the first output."""

    def __init__(self, loader, path: str, threads: int, input_order: list):
        self._call = loader(path, threads, list(input_order))

    def __call__(self, feeds: dict):
        import numpy as np

        return np.asarray(self._call(feeds))
