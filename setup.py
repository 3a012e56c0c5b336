"""Ship the top-level recipes/ and targets/ inside the wheel (as edgeslm/shipped/), so an installed
edgeslm finds them. The top-level folders stay the one source; everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithShipped(build_py):
    def run(self):
        super().run()
        for kind in ("recipes", "targets"):
            dst = Path(self.build_lib) / "edgeslm" / "shipped" / kind
            dst.mkdir(parents=True, exist_ok=True)
            for f in sorted((ROOT / kind).glob("*.toml")):
                shutil.copyfile(f, dst / f.name)


setup(cmdclass={"build_py": BuildPyWithShipped})
