"""Runtimes on the device, one unit per artifact format. A unit is opened once (importing the runtime,
timed apart from loading a model) and then opens artifacts in the two shapes the tasks need:

    rt = open_runtime("onnx", et_runtime=None)      # RUNTIMES[format](et_runtime)
    run = rt.encoder(path, threads, input_order)    # run(feeds: dict of numpy arrays) -> first output
    step = rt.decoder(path, threads, export, max_context)  # step(tokens, start) -> logits of the last token

The build host verifies its artifacts through these same units (edgeslm.formats.base and edgeslm.generation
call them), so the host and the device run a file the same way.

ExecuTorch runs in one of three engines, picked in this order: edgeslm's torch-free shim over the executorch
libraries (a runtime folder given by --et-runtime or $EDGESLM_ET_RUNTIME: it also has the decoder kernels),
the official `executorch.runtime` (imports torch), or executorch-numpy-runtime (numpy only).
"""

from __future__ import annotations

import json
import os

from edgeslm.runner.errors import RunnerError
from edgeslm.runner.facts import dist_version, has_module


ORT_OPS = "libedgeslm_ort.so"  # edgeslm's onnxruntime op library, in the runtime folder


def _kernel(library: str) -> str:
    """The instruction set of the GGUF kernels (Q4_1, Q8_0) edgeslm's op library runs on this CPU."""
    import ctypes

    try:
        f = ctypes.CDLL(library).es_gguf_kernel
        f.restype = ctypes.c_char_p
        return f().decode()
    except (OSError, AttributeError):
        return "?"


class OnnxRuntime:
    format = "onnx"

    def __init__(self, et_runtime: str | None = None):
        import onnxruntime  # noqa: F401 - imported here, so the caller times it

        self.name = "onnxruntime " + (dist_version("onnxruntime") or "?")
        folder = et_runtime or os.environ.get("EDGESLM_ET_RUNTIME")
        self.ops = os.path.join(folder, ORT_OPS) if folder and os.path.isfile(os.path.join(folder, ORT_OPS)) else None

    def encoder(self, path: str, threads: int, order: list | None = None):
        """`order` is not needed: onnxruntime takes inputs by name (the ones the graph has)."""
        import onnxruntime as ort

        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        so.log_severity_level = 3
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        return lambda feeds: sess.run(None, {k: feeds[k] for k in names})[0]

    def decoder(self, path: str, threads: int, export: dict, max_context: int):
        """onnxruntime-genai's decoder layout in edgeslm's own loop (runner/ort_decoder.py); `export` is the
        artifact's export facts (its kv_cache: layers, kv_heads, head_dim)."""
        from edgeslm.runner.ort_decoder import OrtDecoder

        kv = (export or {}).get("kv_cache") or {}
        try:
            dims = [int(kv[k]) for k in ("layers", "kv_heads", "head_dim")]
        except (KeyError, TypeError, ValueError):
            raise RunnerError(f"{os.path.basename(path)}: the manifest does not give its KV cache "
                              "(export.kv_cache layers, kv_heads, head_dim)") from None
        ops = None
        if (export or {}).get("custom_ops"):  # the file has edgeslm's GgufLinear nodes
            if self.ops is None:
                raise RunnerError(f"{os.path.basename(path)} needs edgeslm's onnxruntime ops ({ORT_OPS}): give "
                                  "--et-runtime DIR (edgeslm deploy uploads it)")
            ops = self.ops
            if "; edgeslm ops" not in self.name:
                self.name += f"; edgeslm ops, GGUF kernels {_kernel(ops)}"
        dec = OrtDecoder(path, threads, *dims, int(max_context), ops_library=ops)
        self.name = self.name.split("; spinning")[0] + f"; {dec.spinning}"  # a decoder's result says which
        return dec


class ExecuTorchRuntime:
    format = "executorch"

    def __init__(self, et_runtime: str | None = None, from_env: bool = True):
        self.folder = et_runtime or (os.environ.get("EDGESLM_ET_RUNTIME") if from_env else None) or None
        self._native = None
        if self.folder:
            from edgeslm.runner import native_et  # noqa: F401 - ctypes only; the library loads with a model

            try:
                with open(os.path.join(self.folder, "runtime.json")) as f:
                    version = json.load(f).get("executorch", "?")
            except (OSError, ValueError, AttributeError):
                version = "?"
            self.engine, self.name = "native", f"edgeslm-et (executorch {version} libraries)"
        elif has_module("executorch.runtime"):
            import torch  # noqa: F401 - the official runtime speaks torch tensors
            from executorch.runtime import Runtime  # noqa: F401

            try:  # portable quantized kernels (embedding_byte: int8 embedding tables)
                import executorch.kernels.quantized  # noqa: F401
            except (ImportError, OSError):
                pass
            self.engine, self.name = "official", "executorch.runtime " + (dist_version("executorch") or "?")
        elif has_module("executorch_numpy_runtime"):
            import executorch_numpy_runtime  # noqa: F401

            self.engine = "numpy"
            self.name = "executorch-numpy-runtime " + (dist_version("executorch-numpy-runtime") or "?")
        else:
            raise RunnerError("no ExecuTorch runtime on the device: pip install executorch-numpy-runtime "
                              "(Python >= 3.12, numpy only) or executorch")

    def _method(self, path: str, threads: int):
        """The program's forward method in the native engine (one runtime, its threads set once)."""
        from edgeslm.runner.native_et import NativeRuntime

        if self._native is None:
            self._native = NativeRuntime(self.folder, threads)
            if self._native.kernel:
                self.name += f"; GGUF kernels {self._native.kernel}"
        return self._native.load(path)

    def encoder(self, path: str, threads: int, order: list | None = None):
        """`order`: the program's input names in order (the manifest's export.input_order); None: the order of
        the feeds given (the build host's, which exported the program)."""
        if self.engine == "native":
            method = self._method(path, threads)
            return lambda feeds: method([feeds[k] for k in order or feeds])[0]
        if self.engine == "official":
            import torch
            from executorch.runtime import Runtime

            if threads:
                try:
                    from executorch.extension.pybindings import portable_lib

                    portable_lib._unsafe_reset_threadpool(threads)
                except (ImportError, AttributeError):
                    pass
            method = Runtime.get().load_program(path).load_method("forward")
            return lambda feeds: method.execute([torch.from_numpy(feeds[k]) for k in order or feeds])[0].numpy()
        import executorch_numpy_runtime as en

        method = en.Runtime.get().load_program(path).load_method("forward")
        return lambda feeds: method([feeds[k] for k in order or feeds])[0]

    def decoder(self, path: str, threads: int, export: dict | None = None, max_context: int | None = None):
        """forward(tokens int64[1, n], start_pos int64[1]) -> logits [1, vocab]; needs the llama kernels:
        edgeslm's runtime folder, or the official runtime with executorch's custom ops (they import torch:
        the build host's way)."""
        import numpy as np

        if self.engine == "native":
            method = self._method(path, threads)
            call = lambda inputs: method(inputs)[0]  # noqa: E731 - the shim returns copies
        elif self.engine == "official":
            import torch
            from executorch.runtime import Runtime

            try:
                import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401 - llama::custom_sdpa, update_cache
            except (ImportError, OSError):
                raise RunnerError("text-generation programs need the llama kernels: give --et-runtime DIR "
                                  "(edgeslm deploy uploads it)") from None
            method = Runtime.get().load_program(path).load_method("forward")
            # a copy: the runtime may hand back its own output buffer, overwritten by the next call
            call = lambda inputs: method.execute([torch.from_numpy(a) for a in inputs])[0].numpy().copy()  # noqa: E731
        else:
            raise RunnerError("text-generation programs run in edgeslm's ExecuTorch runtime folder: give "
                              "--et-runtime DIR (edgeslm deploy uploads it)")

        def step(tokens, start):
            out = call([np.asarray([tokens], dtype=np.int64), np.asarray([start], dtype=np.int64)])
            return out.reshape(-1, out.shape[-1])[-1]

        return step


RUNTIMES = {r.format: r for r in (OnnxRuntime, ExecuTorchRuntime)}


def register_runtime(cls) -> type:
    """Add (or replace) the device session class of a format (keyed by its `format`, a contract.formats name)."""
    RUNTIMES[cls.format] = cls
    return cls


def open_runtime(fmt: str, et_runtime: str | None = None):
    """The runtime unit for an artifact format, imported (the caller times this apart from loading)."""
    if fmt not in RUNTIMES:
        raise RunnerError(f"unknown format {fmt!r}: {', '.join(RUNTIMES)}")
    return RUNTIMES[fmt](et_runtime)
