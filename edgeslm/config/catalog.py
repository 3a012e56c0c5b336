"""Where shipped recipes and targets live, and lookup of targets by name."""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path

from edgeslm.config.base import read_toml
from edgeslm.config.devices import load_inventory
from edgeslm.config.recipe import LoadedRecipe, load_recipe, path_for_display
from edgeslm.config.target import Target, load_target_file
from edgeslm.errors import ConfigError, UserError


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def candidate_dirs(kind: str) -> list[Path]:
    """Where shipped recipes or targets are looked for, in order: $EDGESLM_<KIND>_PATH, the source
    checkout's top-level folder, the copy inside an installed wheel (edgeslm/shipped), share/edgeslm."""
    dirs = []
    env = os.environ.get(f"EDGESLM_{kind.upper()}_PATH")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    root = project_root()
    if (root / "pyproject.toml").is_file():  # a source checkout (editable install or run from the repo)
        dirs.append(root / kind)
    dirs.append(Path(__file__).resolve().parents[1] / "shipped" / kind)
    dirs.append(Path(sys.prefix) / "share" / "edgeslm" / kind)
    return dirs


def _search_dirs(kind: str) -> list[Path]:
    return [d for d in candidate_dirs(kind) if d.is_dir()]


def shipped(kind: str) -> dict[str, Path]:
    """name -> file for 'recipes' or 'targets'; earlier search dirs win."""
    found: dict[str, Path] = {}
    for d in _search_dirs(kind):
        for f in sorted(d.glob("*.toml")):
            found.setdefault(f.stem, f)
    return found


def target_names() -> list[str]:
    return sorted(shipped("targets"))


def load_target(name_or_path: str) -> Target:
    p = Path(name_or_path)
    if p.suffix == ".toml" or os.sep in name_or_path:
        return load_target_file(p)
    files = shipped("targets")
    if name_or_path not in files:
        close = difflib.get_close_matches(name_or_path, list(files), n=1)
        hint = f"did you mean {close[0]}?" if close else f"choose one of: {', '.join(sorted(files))}"
        raise UserError(f"unknown target {name_or_path!r} ({hint})")
    target = load_target_file(files[name_or_path])
    if target.name != name_or_path:
        raise ConfigError(str(files[name_or_path]), "name", f"is {target.name!r} but the file is "
                          f"{files[name_or_path].name}", "make them match")
    return target


def find_recipe(name_or_path: str) -> LoadedRecipe:
    p = Path(name_or_path)
    if p.exists() or p.suffix == ".toml" or os.sep in name_or_path:
        return load_recipe(p)
    files = shipped("recipes")
    if name_or_path in files:
        return load_recipe(files[name_or_path])
    close = difflib.get_close_matches(name_or_path, list(files), n=1)
    hint = f"did you mean {close[0]}?" if close else "give a recipe file or a name from `edgeslm recipes`"
    raise UserError(f"{name_or_path}: no such recipe file or shipped recipe ({hint})")


def select_targets(loaded: LoadedRecipe, requested: tuple[str, ...], warn=None) -> list[Target]:
    """Targets to build for; `all` means every target the recipe lists. A target given as a file is an
    explicit choice and is built even when the recipe does not list it (`warn` is told so)."""
    recipe = loaded.recipe
    if not requested:
        requested = ("host",) if "host" in recipe.targets else (recipe.targets[0],)
    names: list[str] = []
    for r in requested:
        names += list(recipe.targets) if r == "all" else [r]
    out = []
    for name in dict.fromkeys(names):
        is_file = is_target_file(name)
        if name not in recipe.targets and not is_file:
            raise ConfigError(str(path_for_display(loaded.path)), "targets",
                              f"target {name!r} is not listed by this recipe",
                              f"add it to targets or choose one of: {', '.join(recipe.targets)}")
        target = load_target(name)
        if is_file and target.name not in recipe.targets and warn:
            warn(f"target file {name} ({target.name}) is not in recipe {recipe.name}'s targets; building it "
                 "because it was given explicitly")
        out.append(target)
    return out


def is_target_file(name: str) -> bool:
    return name.endswith(".toml") or os.sep in name


def classify_file(path: Path) -> str:
    """'recipe', 'target' or 'devices' for `edgeslm validate`."""
    if path.name == "devices.toml":
        return "devices"
    if path.parent.name == "targets":
        return "target"
    if path.parent.name == "recipes":
        return "recipe"
    data = read_toml(path)
    if "devices" in data:
        return "devices"
    if "arch" in data or "quantization" in data:
        return "target"
    return "recipe"


__all__ = ["shipped", "load_target", "find_recipe", "select_targets", "classify_file", "project_root",
           "load_inventory"]
