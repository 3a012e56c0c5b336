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
