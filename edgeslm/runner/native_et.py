"""ExecuTorch without torch: the runner's binding (ctypes) to `libedgeslm_et.so`, the C shim over the
executorch wheel's own runtime libraries (see native/edgeslm_et.cpp and native/build.py).

    rt = NativeRuntime("/path/to/folder/with/libedgeslm_et.so", threads=2)
    method = rt.load("model.pte")          # "forward"
    outputs = method([ids, mask])          # numpy arrays in, numpy arrays (copies) out
"""

from __future__ import annotations

import ctypes
import os

from edgeslm.runner.errors import RunnerError

LIBRARY = "libedgeslm_et.so"
ABI_VERSION = 1
_DTYPES = ("float32", "int64", "int32", "int8", "uint8", "bool", "float16")  # codes 0.. of the shim
MAX_DIMS = 16


def _executorch_custom_ops_first() -> None:
    """In a process with torch (the build host), executorch's Python runtime shares this library's runtime
    libraries (same sonames), and its custom ops library aborts the process if it finds the llama kernels
    already registered. This library registers a kernel only when it is missing, so executorch's go first.
    On the device (no torch) nothing is imported."""
    import sys

    if sys.modules.get("torch") is None:
        return
    try:
        import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
    except (ImportError, OSError):
        pass


class NativeRuntime:
    def __init__(self, folder: str, threads: int = 0):
        path = os.path.join(folder, LIBRARY)
        if not os.path.isfile(path):
            raise RunnerError(f"no {LIBRARY} in {folder}")
        _executorch_custom_ops_first()
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            raise RunnerError(f"cannot load {path}: {exc}") from None
        if lib.es_abi_version() != ABI_VERSION:
            raise RunnerError(f"{path} speaks ABI {lib.es_abi_version()}, this runner {ABI_VERSION}: rebuild it")
        vp, ip, i64p = ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int64)
        lib.es_load.restype = vp
        lib.es_load.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
        lib.es_free.argtypes = [vp]
        lib.es_run.argtypes = [vp, ctypes.c_int, ctypes.POINTER(vp), ip, ip, i64p, ctypes.c_char_p, ctypes.c_int]
        lib.es_num_outputs.argtypes = [vp]
        lib.es_output.argtypes = [vp, ctypes.c_int, ctypes.POINTER(vp), ip, ip, i64p, ctypes.c_int]
        self.lib = lib
        self.threads = lib.es_set_threads(int(threads))
        try:  # the instruction set of edgeslm::gguf_linear's kernels (Q4_1, Q8_0) on this CPU
            lib.es_gguf_kernel.restype = ctypes.c_char_p
            self.kernel = lib.es_gguf_kernel().decode()
        except AttributeError:  # a library from before the operator
            self.kernel = None

    def load(self, pte: str, method: str = "forward") -> "NativeMethod":
        return NativeMethod(self.lib, pte, method)


class NativeMethod:
    def __init__(self, lib, pte: str, method: str):
        self.lib, self._err = lib, ctypes.create_string_buffer(1024)
        if not os.path.isfile(pte):
            raise RunnerError(f"no such program: {pte}")
        self.handle = lib.es_load(pte.encode(), method.encode(), self._err, len(self._err))
        if not self.handle:
            raise RunnerError(self._err.value.decode(errors="replace") or f"cannot load {pte}")

    def __call__(self, inputs: list) -> list:
        import numpy as np

        arrays = [np.ascontiguousarray(a) for a in inputs]
        codes = []
        for a in arrays:
            name = "bool" if a.dtype == np.bool_ else a.dtype.name
            if name not in _DTYPES:
                raise RunnerError(f"input dtype {a.dtype} is not supported by {LIBRARY}")
            codes.append(_DTYPES.index(name))
        n = len(arrays)
        ptrs = (ctypes.c_void_p * n)(*[a.ctypes.data for a in arrays])
        dtypes = (ctypes.c_int * n)(*codes)
        ndims = (ctypes.c_int * n)(*[a.ndim for a in arrays])
        shapes = (ctypes.c_int64 * max(1, sum(a.ndim for a in arrays)))(*[s for a in arrays for s in a.shape])
        if self.lib.es_run(self.handle, n, ptrs, dtypes, ndims, shapes, self._err, len(self._err)) != 0:
            raise RunnerError(self._err.value.decode(errors="replace"))
        outs = []
        for i in range(self.lib.es_num_outputs(self.handle)):
            data, code, ndim = ctypes.c_void_p(), ctypes.c_int(), ctypes.c_int()
            sizes = (ctypes.c_int64 * MAX_DIMS)()
            if self.lib.es_output(self.handle, i, ctypes.byref(data), ctypes.byref(code), ctypes.byref(ndim),
                                  sizes, MAX_DIMS) != 0 or code.value < 0:
                raise RunnerError(f"output {i} is not a tensor of a supported dtype")
            dtype = np.dtype(_DTYPES[code.value])
            shape = tuple(sizes[:ndim.value])
            count = int(np.prod(shape)) if shape else 1
            buf = (ctypes.c_char * (count * dtype.itemsize)).from_address(data.value) if count else b""
            outs.append(np.frombuffer(buf, dtype=dtype, count=count).reshape(shape).copy())
        return outs

    def __del__(self):
        handle, self.handle = getattr(self, "handle", None), None
        if handle:
            self.lib.es_free(handle)
