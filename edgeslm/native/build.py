"""Build edgeslm's native libraries for one architecture into a runtime folder (what a device runs decoders and
edgeslm's onnxruntime ops in): the executorch wheel's shared libraries copied in, then src/Makefile (the build
description) compiles libedgeslm_et.so against them and libedgeslm_ort.so against onnxruntime's C API header.
None of them needs libtorch; the folder is self-contained (rpath $ORIGIN).

    python -m edgeslm.native.build OUT [--arch x86_64|aarch64] [--executorch DIR] [--ort-include DIR]

DIR is the `executorch` package folder of a wheel for that architecture (default: the installed one, for this
machine's architecture). aarch64 needs `aarch64-linux-gnu-g++` (Debian: g++-aarch64-linux-gnu). The wheel's
build (setup.py) runs this for x86_64 and aarch64 and ships both folders (native/prebuilt/<arch>).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import re
import shutil
import subprocess
from pathlib import Path

from edgeslm.runner.runtimes import ORT_OPS  # the op library's file name, as the device runner loads it

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
LIBS = ("libexecutorch.so", "libexecutorch_backend_xnnpack.so", "libexecutorch_kernels_optimized.so",
        "libexecutorch_kernels_quantized.so", "libexecutorch_threadpool.so")
SHIM = "libedgeslm_et.so"
COMPILERS = {"x86_64": "g++", "aarch64": "aarch64-linux-gnu-g++"}


def sources_hash() -> str:
    """What the libraries are built from (the C++ and the Makefile): a prebuilt folder is taken only when its
    record matches these sources."""
    h = hashlib.sha256()
    for src in sorted(SRC.rglob("*")):
        if src.is_file() and (src.suffix in (".cpp", ".h") or src.name == "Makefile"):
            h.update(src.relative_to(SRC).as_posix().encode() + b"\0" + src.read_bytes())
    return h.hexdigest()


def installed_executorch() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("executorch")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("executorch is not installed here; pass --executorch DIR")
    return Path(list(spec.submodule_search_locations)[0])


def build(out: Path, arch: str | None = None, executorch: Path | None = None, timeout: float = 300,
          ort_include: Path | None = None) -> Path:
    """Copy the runtime libraries into OUT and build the shim (and, with `ort_include`, the folder of
    onnxruntime_c_api.h, edgeslm's onnxruntime op library) there; returns OUT/libedgeslm_et.so."""
    arch = arch or platform.machine()
    if arch not in COMPILERS:
        raise RuntimeError(f"no build for architecture {arch!r}: {', '.join(COMPILERS)}")
    et = executorch or installed_executorch()
    out.mkdir(parents=True, exist_ok=True)
    for name in LIBS:
        shutil.copy2(et / "lib" / name, out / name)
    make(out, arch, ["et"], timeout, ET=et)
    if ort_include is not None:
        make(out, arch, ["ort"], timeout, ORT_INCLUDE=ort_include)
    (out / "runtime.json").write_text(json.dumps({"executorch": installed_version(et), "arch": arch, "abi": 1,
                                                  "onnxruntime_ops": ort_include is not None,
                                                  "sources": sources_hash()}) + "\n")
    return out / SHIM


def build_ort(target: Path, arch: str, include: Path, timeout: float = 300) -> Path:
    """Build edgeslm's onnxruntime custom op library (ort_gguf.cpp) as TARGET (named ORT_OPS) against the
    onnxruntime C API header in INCLUDE; it links nothing of onnxruntime."""
    if target.name != ORT_OPS:
        raise RuntimeError(f"the op library is named {ORT_OPS}, not {target.name}")
    target.parent.mkdir(parents=True, exist_ok=True)
    make(target.parent, arch, ["ort"], timeout, ORT_INCLUDE=include)
    return target


def make(out: Path, arch: str, goals: list[str], timeout: float, **variables) -> None:
    """Run src/Makefile for `goals` into OUT with the compiler for `arch`; a failure is a RuntimeError whose first
    line says why (the compiler's first error, else its last line, else its exit status) and whose next lines
    hold the end of its output."""
    cxx = shutil.which(COMPILERS.get(arch, ""))
    if cxx is None:
        raise RuntimeError(f"{COMPILERS.get(arch, 'a compiler for ' + arch)} not found (apt-get install g++"
                           f"{'-aarch64-linux-gnu' if arch == 'aarch64' else ''})")
    tool = shutil.which("make")
    if tool is None:
        raise RuntimeError("make not found (apt-get install make)")
    target = out / (SHIM if goals == ["et"] else ORT_OPS)
    cmd = [tool, "-s", "-C", str(SRC), f"OUT={out.resolve()}", f"CXX={cxx}",
           *[f"{k}={Path(v).resolve()}" for k, v in variables.items()], *goals]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"building {target.name} failed: the compiler took more than {timeout:g}s") from None
    if r.returncode != 0:
        lines = [ln.strip() for ln in (r.stderr or r.stdout or "").splitlines()
                 if ln.strip() and not ln.startswith(("make:", "make["))]
        first = next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else
                     f"{Path(cxx).name} exited with status {r.returncode} and printed nothing")
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
    ap.add_argument("--ort-include", type=Path)
    args = ap.parse_args()
    print(build(args.out, args.arch, args.executorch, ort_include=args.ort_include))


if __name__ == "__main__":
    main()
