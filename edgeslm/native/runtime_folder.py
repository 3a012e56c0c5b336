"""The torch-free runtime folder a device needs for decoder programs (and edgeslm's onnxruntime ops), per
architecture: libedgeslm_et.so (edgeslm's shim and llama kernels) beside the shared libraries of the pinned
executorch wheel, and libedgeslm_ort.so (edgeslm's onnxruntime ops). An installed edgeslm ships both
architectures' folders, built with the wheel (native/prebuilt/<arch>, see setup.py), and takes them as they are.
A source checkout (or a prebuilt folder whose sources or executorch version differ from this install's) builds
the folder on first use and caches it: for another architecture than this machine's, the libraries come from
that architecture's wheel of the same executorch version (pip download from the configured package index), and
both edgeslm libraries are cross-compiled (aarch64: g++-aarch64-linux-gnu).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from edgeslm.errors import UserError
from edgeslm.hashing import cache_home, sha256_file
from edgeslm.native import build as native
from edgeslm.native.ort_headers import HEADER, ort_headers

WHEEL_PLATFORMS = {"aarch64": "manylinux_2_28_aarch64", "x86_64": "manylinux_2_28_x86_64"}
ARCH_NAMES = {"arm64": "aarch64", "amd64": "x86_64"}
PREBUILT = Path(__file__).resolve().parent / "prebuilt"


def _arch(arch: str) -> str:
    arch = ARCH_NAMES.get(arch.lower(), arch.lower())
    if arch not in WHEEL_PLATFORMS:
        raise UserError(f"no ExecuTorch runtime build for architecture {arch!r} (supported: "
                        f"{', '.join(WHEEL_PLATFORMS)})")
    return arch


def _base(version: str) -> str:
    return version.split("+")[0]


def prebuilt(arch: str) -> Path | None:
    """The folder shipped in the package for `arch` when it was built from these sources for this install's
    executorch version (else None: build one)."""
    from importlib import metadata

    folder = PREBUILT / _arch(arch)
    try:
        meta = json.loads((folder / "runtime.json").read_text())
    except (OSError, ValueError):
        return None
    try:
        installed = _base(metadata.version("executorch"))
    except metadata.PackageNotFoundError:
        installed = None  # a host that only deploys: the programs were made where executorch is
    if not isinstance(meta, dict) or meta.get("sources") != native.sources_hash() or not meta.get("onnxruntime_ops"):
        return None
    if installed is not None and _base(str(meta.get("executorch"))) != installed:
        return None
    if not all((folder / n).is_file() for n in (*native.LIBS, native.SHIM)):
        return None
    return folder


def runtime_folder(arch: str, timeout: float = 900) -> Path:
    """The runtime folder for `arch`: the package's own when it ships one that fits, else built on first use
    (seconds) and cached."""
    arch = _arch(arch)
    shipped = prebuilt(arch)
    if shipped is not None:
        return shipped
    et = native.installed_executorch() if arch == platform.machine() else executorch_package(arch, timeout)
    version = native.installed_version(et)
    headers = ort_headers()  # the op library's header: the folder changes with it
    h = hashlib.sha256(f"{arch}\n{version}\n{sha256_file(headers / HEADER)}\n{native.sources_hash()}\n".encode())
    folder = cache_home() / "et-runtime" / f"{arch}-{h.hexdigest()[:16]}"
    if (folder / "runtime.json").is_file():
        return folder
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        native.build(tmp, arch, et, timeout=timeout, ort_include=headers)
    except RuntimeError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"cannot build the ExecuTorch runtime for {arch}: {str(exc).splitlines()[0]}") from None
    try:
        os.replace(tmp, folder)
    except OSError:  # built meanwhile by another process
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def executorch_package(arch: str, timeout: float = 900) -> Path:
    """The `executorch` package folder (lib/, include/, version.py) of the installed version's wheel
    for `arch`, downloaded once."""
    from importlib import metadata

    version = metadata.version("executorch").split("+")[0]
    dest = cache_home() / "executorch-wheels" / f"{version}-{arch}"
    if (dest / "executorch" / "version.py").is_file():
        return dest / "executorch"
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    py = f"{sys.version_info.major}{sys.version_info.minor}"
    cmd = [sys.executable, "-m", "pip", "download", "-q", f"executorch=={version}", "--no-deps",
           "--only-binary=:all:", "--platform", WHEEL_PLATFORMS[arch], "--python-version", py, "-d", str(tmp)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        r = None
    wheels = list(tmp.glob("executorch-*.whl"))
    if r is None or r.returncode != 0 or not wheels:
        shutil.rmtree(tmp, ignore_errors=True)
        why = "timed out" if r is None else ((r.stderr or r.stdout).strip().splitlines() or ["no wheel"])[-1][:160]
        raise UserError(f"cannot fetch executorch {version}'s {arch} libraries ({why}); the device's "
                        "ExecuTorch runtime is built from that wheel: check the package index or network")
    with zipfile.ZipFile(wheels[0]) as z:
        for name in z.namelist():
            if name.startswith(("executorch/lib/", "executorch/include/")) or name == "executorch/version.py":
                z.extract(name, tmp)
    wheels[0].unlink()
    try:
        os.replace(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest / "executorch"
