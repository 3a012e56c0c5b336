"""Where shipped recipes and targets live, and lookup of targets by name."""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path

from edgeslm.config.base import read_toml
from edgeslm.config.passes import QuantizeConfig
from edgeslm.config.devices import Inventory, load_inventory
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
        is_file = _is_target_file(name)
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


def _is_target_file(name: str) -> bool:
    return name.endswith(".toml") or os.sep in name


def check_plan(loaded: LoadedRecipe, target: Target) -> None:
    """Everything that can be known impossible before loading a model fails here, in milliseconds."""
    from edgeslm.config.target import consistency

    recipe, file = loaded.recipe, str(path_for_display(loaded.path))
    from edgeslm.passes import HANDLERS  # torch-free: handlers are imported only when a pass runs

    for i, p in enumerate(recipe.passes):
        if p.type not in HANDLERS and not type(p).handler:
            raise ConfigError(file, f"passes[{i}].type", f"pass {p.type!r} has no handler registered",
                              "register one with edgeslm.passes.register_pass, or remove the pass")
    for fmt in recipe.export.formats:
        if fmt not in target.formats:
            raise ConfigError(file, "export.formats", f"target {target.name!r} cannot run {fmt}",
                              f"it runs {', '.join(target.formats)}; remove {fmt} or pick another target")
    for i, q in enumerate(recipe.passes):
        if isinstance(q, QuantizeConfig) and q.preset != "target" and target.arch != "auto":
            problem = consistency(target.arch, target.features, q.preset)
            if problem:
                raise ConfigError(file, f"passes[{i}].preset", f"does not suit target {target.name!r}: {problem}",
                                  "use preset = \"target\" (the target's own preset)")


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
    """Validate one file fully (including cross references, the model source and the files it names)
    without importing torch or touching the network. Returns a one-line summary. A name that is not a
    file but a shipped recipe or target is validated too."""
    if not path.exists() and not _is_target_file(str(path)):
        for kind in ("recipes", "targets"):
            found = shipped(kind).get(str(path))
            if found is not None:
                path = found
                break
    kind = classify_file(path)
    if kind == "devices":
        if not path.exists():
            raise ConfigError(str(path), None, "file not found", "check the path")
        inv: Inventory = load_inventory(path)
        for name, dev in inv.devices.items():
            try:
                load_target(dev.target)
            except UserError as exc:
                raise ConfigError(str(path), f"devices.{name}.target", str(exc)) from None
            if dev.identity_file:
                from edgeslm.inputs import InputError, check_regular

                try:
                    check_regular(Path(dev.identity_file).expanduser(), "private key file")
                except InputError as exc:
                    raise ConfigError(str(path), f"devices.{name}.identity_file", f"{dev.identity_file} {exc.problem}",
                                      "fix the path, or remove the key to use ssh-agent or ~/.ssh/config") from None
        return f"devices: {len(inv.devices)} device(s) + local"
    if kind == "target":
        t = load_target_file(path)
        return f"target {t.name}: {t.arch}, {', '.join(t.formats)}"
    loaded = load_recipe(path)
    file = str(path_for_display(loaded.path))
    for i, name in enumerate(loaded.recipe.targets):
        try:
            target = load_target(name)
        except UserError as exc:
            raise ConfigError(file, f"targets[{i}]", str(exc)) from None
        check_plan(loaded, target)
    source_note = check_source(loaded)
    data_note = check_datasets(loaded)
    r = loaded.recipe
    quant = r.quantize.method if r.quantize else "fp32"
    return (f"recipe {r.name}: {r.model.task}, {quant}, {', '.join(r.export.formats)} for "
            f"{', '.join(r.targets)}; model {source_note}{data_note}")


def check_datasets(loaded: LoadedRecipe) -> str:
    """Read every local dataset the recipe names (hub datasets are checked when built)."""
    from edgeslm.datasets import load_dataset

    from edgeslm.config.passes import FinetuneConfig
    from edgeslm.config.recipe import dataset_for

    recipe, file = loaded.recipe, str(path_for_display(loaded.path))
    notes, found = [], {}
    for name, spec in recipe.datasets.items():
        if spec.source.startswith("hf:"):
            notes.append(f"{name}: hub dataset {spec.source[3:]}")
            continue
        d = found[name] = load_dataset(name, spec, loaded.base_dir, file)
        notes.append(f"{name}: {len(d.labels)} labels, {len(d.train)} train / {len(d.eval)} eval texts")
    fine_tuned = any(isinstance(p, FinetuneConfig) for p in recipe.passes)
    target = dataset_for(recipe, recipe.eval.dataset) if recipe.eval else None
    if target in found and recipe.model.task == "sequence-classification" and not fine_tuned:
        _check_labels(loaded, found[target].labels, file)
    return ("; datasets " + "; ".join(notes)) if notes else ""


def _check_labels(loaded: LoadedRecipe, labels: list[str], file: str) -> None:
    """Without fine-tuning, the eval data's labels must be the model's own (config.json id2label, by name,
    or class numbers below num_labels)."""
    from edgeslm.errors import ModelSourceError
    from edgeslm.models.checks import read_config
    from edgeslm.models.sources import resolve_source

    try:
        folder = resolve_source(loaded.recipe.model.source, loaded.base_dir, loaded.recipe.model.revision,
                                download=False).folder
        config = read_config(loaded.recipe.model.source, folder)
    except ModelSourceError:
        return  # a hub model not downloaded yet: checked when built
    from edgeslm.datasets import is_int_label

    id2label = config.get("id2label") or {}  # read_config checked: a table of strings; num_labels an integer
    names = {str(v) for v in id2label.values()}
    n = len(id2label) or config.get("num_labels") or 2
    if all(lb in names for lb in labels) or all(is_int_label(lb) and 0 <= int(lb) < n for lb in labels):
        return
    raise ConfigError(file, "eval.dataset", f"labels {labels[:5]} are not among the model's labels "
                      f"({', '.join(sorted(names)[:8]) or 'none'})",
                      "fine-tune on this dataset first (a finetune pass), or use a checkpoint trained on these labels")


def check_source(loaded: LoadedRecipe) -> str:
    """The recipe's model source exists and holds a model edgeslm can build (offline: a hub id that is not
    in the local cache is only checked for its form). Returns a short description."""
    from edgeslm.errors import ModelSourceError
    from edgeslm.models.checks import check_model_folder
    from edgeslm.models.sources import classify, resolve_source

    m = loaded.recipe.model
    file = str(path_for_display(loaded.path))
    kind, _ = classify(m.source, loaded.base_dir)
    try:
        source = resolve_source(m.source, loaded.base_dir, m.revision, download=False)
    except ModelSourceError as exc:
        if kind == "hub" and "not available" in str(exc):
            from edgeslm.models.sources import HUB_ID

            if HUB_ID.match(m.source.removeprefix("hf:")):
                return f"{m.source} (hub id, not in the local cache: downloaded at build time)"
        raise ConfigError(file, "model.source", str(exc)) from None
    try:
        facts = check_model_folder(m.source, source.folder, m.task, source.gguf)
    except ModelSourceError as exc:
        raise ConfigError(file, "model.source", str(exc)) from None
    return f"{facts.model_type} from {source.kind} {source.folder}"


__all__ = ["shipped", "load_target", "find_recipe", "select_targets", "check_plan", "validate_file",
           "project_root", "load_inventory"]
