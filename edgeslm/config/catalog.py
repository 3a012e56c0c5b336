"""Where shipped recipes and targets live, and lookup of targets by name."""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path

from edgeslm.config.base import read_toml
from edgeslm.config.devices import Inventory, load_inventory
from edgeslm.config.recipe import LoadedRecipe, load_recipe, path_for_display
from edgeslm.config.target import Target, load_target_file
from edgeslm.errors import ConfigError, UserError


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _search_dirs(kind: str) -> list[Path]:
    dirs = []
    env = os.environ.get(f"EDGESLM_{kind.upper()}_PATH")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs.append(project_root() / kind)
    dirs.append(Path(sys.prefix) / "share" / "edgeslm" / kind)
    return [d for d in dirs if d.is_dir()]


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


def select_targets(loaded: LoadedRecipe, requested: tuple[str, ...]) -> list[Target]:
    """Targets to build for; `all` means every target the recipe lists."""
    recipe = loaded.recipe
    if not requested:
        requested = ("host",) if "host" in recipe.targets else (recipe.targets[0],)
    names: list[str] = []
    for r in requested:
        names += list(recipe.targets) if r == "all" else [r]
    out = []
    for name in dict.fromkeys(names):
        if name not in recipe.targets and not name.endswith(".toml"):
            raise ConfigError(str(path_for_display(loaded.path)), "targets",
                              f"target {name!r} is not listed by this recipe",
                              f"add it to targets or choose one of: {', '.join(recipe.targets)}")
        out.append(load_target(name))
    return out


def check_plan(loaded: LoadedRecipe, target: Target) -> None:
    """Everything that can be known impossible before loading a model fails here, in milliseconds."""
    recipe, file = loaded.recipe, str(path_for_display(loaded.path))
    for fmt in recipe.export.formats:
        if fmt not in target.formats:
            raise ConfigError(file, "export.formats", f"target {target.name!r} cannot run {fmt}",
                              f"it runs {', '.join(target.formats)}; remove {fmt} or pick another target")
    q = recipe.quantize
    if q is not None and q.preset == "arm-s8s8" and target.arch == "x86_64":
        raise ConfigError(file, "passes.preset", f"arm-s8s8 does not suit x86 target {target.name!r}",
                          "use preset = \"target\"")


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


def validate_file(path: Path) -> str:
    """Validate one file fully (including cross references). Returns a one-line summary."""
    kind = classify_file(path)
    if kind == "devices":
        inv: Inventory = load_inventory(path) if path.exists() else None
        if inv is None:
            raise ConfigError(str(path), None, "file not found", "check the path")
        for name, dev in inv.devices.items():
            try:
                load_target(dev.target)
            except UserError as exc:
                raise ConfigError(str(path), f"devices.{name}.target", str(exc)) from None
        return f"devices: {len(inv.devices)} device(s) + local"
    if kind == "target":
        t = load_target_file(path)
        return f"target {t.name}: {t.arch}, {', '.join(t.formats)}"
    loaded = load_recipe(path)
    for i, name in enumerate(loaded.recipe.targets):
        try:
            target = load_target(name)
        except UserError as exc:
            raise ConfigError(str(path_for_display(loaded.path)), f"targets[{i}]", str(exc)) from None
        check_plan(loaded, target)
    r = loaded.recipe
    quant = r.quantize.method if r.quantize else "fp32"
    return f"recipe {r.name}: {r.model.task}, {quant}, {', '.join(r.export.formats)} for {', '.join(r.targets)}"


__all__ = ["shipped", "load_target", "find_recipe", "select_targets", "check_plan", "validate_file",
           "project_root", "load_inventory"]
