"""Ship the top-level recipes/ and targets/ inside the wheel (as edgeslm/shipped/), so an installed edgeslm finds
them, and the native runtime folders for x86_64 and aarch64 (edgeslm/native/prebuilt/<arch>: edgeslm's ExecuTorch
shim and onnxruntime op library, built by edgeslm/native/src/Makefile, beside the executorch wheel's libraries for
that architecture), so an installed edgeslm deploys decoders without a compiler. The top-level folders stay the one
source; everything else is in pyproject.toml.

Building the wheel needs what a source checkout's first deploy needs (`make system-deps`: g++, the aarch64 cross
g++, onnxruntime's C API header) and the pinned executorch installed (`pip wheel --no-build-isolation`); the
aarch64 executorch libraries come from that version's aarch64 wheel on the package index. EDGESLM_NATIVE=skip
builds a wheel without them (its first deploy of a decoder then compiles, as a checkout does). An editable install
builds nothing: a checkout compiles on first use.
"""

import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
ARCHES = ("x86_64", "aarch64")


class BuildPyWithShipped(build_py):
    def run(self):
        super().run()
        for kind in ("recipes", "targets"):
            dst = Path(self.build_lib) / "edgeslm" / "shipped" / kind
            dst.mkdir(parents=True, exist_ok=True)
            for f in sorted((ROOT / kind).glob("*.toml")):
                shutil.copyfile(f, dst / f.name)
        if not getattr(self, "editable_mode", False) and os.environ.get("EDGESLM_NATIVE") != "skip":
            self.build_native(Path(self.build_lib) / "edgeslm" / "native" / "prebuilt")

    def build_native(self, dest: Path) -> None:
        sys.path.insert(0, str(ROOT))
        try:
            from edgeslm.errors import UserError
            from edgeslm.native import build as native
            from edgeslm.native.ort_headers import ort_headers
            from edgeslm.native.runtime_folder import executorch_package

            import platform

            headers = ort_headers()
            shutil.rmtree(dest, ignore_errors=True)
            for arch in ARCHES:
                et = native.installed_executorch() if arch == platform.machine() else executorch_package(arch)
                native.build(dest / arch, arch, et, ort_include=headers)
                print(f"edgeslm: native runtime folder for {arch} built into {dest / arch}")
        except (UserError, RuntimeError) as exc:
            sys.exit(f"edgeslm: cannot build the native libraries for the wheel: {str(exc).splitlines()[0]} "
                     "(make system-deps installs what they need; EDGESLM_NATIVE=skip builds a wheel without them)")
        finally:
            sys.path.remove(str(ROOT))


setup(cmdclass={"build_py": BuildPyWithShipped})
