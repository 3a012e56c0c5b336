"""Build the torch-free ExecuTorch runtime for the device: `libedgeslm_et.so` (edgeslm_et.cpp, a C ABI
for ctypes) beside the shared libraries of the pinned executorch wheel that it links. None of them needs
libtorch; the folder is self-contained (rpath $ORIGIN) and is what a device needs to run .pte files.

    python -m edgeslm.runner.native.build OUT [--arch x86_64|aarch64] [--executorch DIR]

DIR is the `executorch` package folder of a wheel for that architecture (default: the installed one,
for this machine's architecture). aarch64 needs `aarch64-linux-gnu-g++` (Debian: g++-aarch64-linux-gnu).
Host-only code (it is left out of the runner bundle).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
from pathlib import Path

from edgeslm.runner.runtimes import ORT_OPS  # the op library (ort_gguf.cpp), beside the shim

HERE = Path(__file__).resolve().parent
LIBS = ("libexecutorch.so", "libexecutorch_backend_xnnpack.so", "libexecutorch_kernels_optimized.so",
        "libexecutorch_kernels_quantized.so", "libexecutorch_threadpool.so")
SOURCES = ("edgeslm_et.cpp", "gguf_linear.cpp")
COMPILERS = {"x86_64": "g++", "aarch64": "aarch64-linux-gnu-g++"}


def installed_executorch() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("executorch")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("executorch is not installed here; pass --executorch DIR")
    return Path(list(spec.submodule_search_locations)[0])


def build(out: Path, arch: str | None = None, executorch: Path | None = None, timeout: float = 300,
          ort_include: Path | None = None) -> Path:
    """Compile the shim into OUT and copy the runtime libraries beside it; returns OUT/libedgeslm_et.so.
    With `ort_include` (the folder of onnxruntime_c_api.h), edgeslm's onnxruntime op library goes beside it."""
    arch = arch or platform.machine()
    if arch not in COMPILERS:
        raise RuntimeError(f"no build for architecture {arch!r}: {', '.join(COMPILERS)}")
    et = executorch or installed_executorch()
    cxx = shutil.which(COMPILERS[arch])
    if cxx is None:
        raise RuntimeError(f"{COMPILERS[arch]} not found (apt-get install g++"
                           f"{'-aarch64-linux-gnu' if arch == 'aarch64' else ''})")
    out.mkdir(parents=True, exist_ok=True)
    for name in LIBS:
        shutil.copy2(et / "lib" / name, out / name)
    target = out / "libedgeslm_et.so"
    cmd = [cxx, "-O3", "-std=c++17", "-DET_USE_THREADPOOL", "-shared", "-fPIC", *[str(HERE / f) for f in SOURCES],
           f"-I{HERE / 'include'}", f"-I{et / 'include'}",
           f"-I{et / 'include/executorch/runtime/core/portable_type/c10'}", f"-L{out}",
           "-Wl,--no-as-needed", *[f"-l{n[3:-3]}" for n in LIBS], "-Wl,-rpath,$ORIGIN", "-o", str(target)]
    _compile(cmd, target, timeout)
    if ort_include is not None:
        build_ort(out / ORT_OPS, arch, ort_include, timeout)
    (out / "runtime.json").write_text(json.dumps({"executorch": installed_version(et), "arch": arch, "abi": 1,
                                                  "onnxruntime_ops": ort_include is not None}) + "\n")
    return target


def build_ort(target: Path, arch: str, include: Path, timeout: float = 300) -> Path:
    """Compile edgeslm's onnxruntime custom op library (ort_gguf.cpp) to TARGET against the onnxruntime C API
    header in INCLUDE; it links nothing of onnxruntime."""
    cxx = shutil.which(COMPILERS[arch]) if arch in COMPILERS else None
    if cxx is None:
        raise RuntimeError(f"no compiler for {arch!r} ({COMPILERS.get(arch, '?')})")
    target.parent.mkdir(parents=True, exist_ok=True)
    cmd = [cxx, "-O3", "-std=c++17", "-shared", "-fPIC", "-fvisibility=hidden", str(HERE / "ort_gguf.cpp"),
           f"-I{include}", "-o", str(target)]
    _compile(cmd, target, timeout)
    return target


def _compile(cmd: list[str], target: Path, timeout: float) -> None:
    """Run the compiler; a failure is a RuntimeError whose first line says why (the compiler's first error,
    else its last line, else its exit status) and whose next lines hold the end of its output."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"building {target.name} failed: the compiler took more than {timeout:g}s") from None
    if r.returncode != 0:
        lines = [ln.strip() for ln in (r.stderr or r.stdout or "").splitlines() if ln.strip()]
        first = next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else
                     f"{Path(cmd[0]).name} exited with status {r.returncode} and printed nothing")
        raise RuntimeError(f"building {target.name} failed: {first[:300]}\n{r.stderr[-3000:]}")


def installed_version(et: Path) -> str:
    """__version__ of the executorch package folder (its version.py), e.g. 1.5.1+cpu."""
    match = re.search(r'__version__\s*=\s*"([^"]+)"', (et / "version.py").read_text())
    return match.group(1) if match else "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--arch", choices=sorted(COMPILERS))
    ap.add_argument("--executorch", type=Path)
    args = ap.parse_args()
    print(build(args.out, args.arch, args.executorch))


if __name__ == "__main__":
    main()
