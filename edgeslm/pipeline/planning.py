"""Checking a build's whole plan before any work (ExecuTorch's valid_predecessor_stages): what can be known
impossible without loading a model fails here, in milliseconds, and `edgeslm validate` runs every check that
needs neither torch nor the network. Nothing here imports torch."""

from __future__ import annotations

from pathlib import Path

from edgeslm.config.catalog import classify_file, is_target_file, load_inventory, load_target, shipped
from edgeslm.config.devices import Inventory
from edgeslm.config.passes import Int8QuantizeConfig
from edgeslm.config.recipe import LoadedRecipe, file_keys, load_recipe, path_for_display
from edgeslm.config.target import Target, load_target_file
from edgeslm.contract.tasks import TASKS
from edgeslm.errors import ConfigError, UserError


def check_files(loaded: LoadedRecipe) -> None:
    """The text files and dataset sources the recipe names exist and read (binary, empty or missing files
    fail here, naming the key)."""
    from edgeslm.config.data import source_path
    from edgeslm.config.packages import install_hint
    from edgeslm.texts import read_texts

    recipe, file = loaded.recipe, str(path_for_display(loaded.path))
    for key, value in file_keys(recipe):
        read_texts(loaded.resolve_path(value), file=file, key=key)
    for name, spec in recipe.datasets.items():
        for key, src in (("source", spec.source), ("eval_source", spec.eval_source)):
            if src is None or src.startswith("hf:"):
                continue
            p = source_path(src, loaded.base_dir)
            if p is None:
                raise ConfigError(file, f"datasets.{name}.{key}", f"the package of {src!r} is not installed",
                                  f"install it: {install_hint(src)}")
            if not p.exists():
                raise ConfigError(file, f"datasets.{name}.{key}", f"{p} does not exist",
                                  "fix the path; relative paths start at the recipe's folder")
        if spec.source.startswith("hf:") or (spec.eval_source or "").startswith("hf:"):
            import importlib.util

            if importlib.util.find_spec("datasets") is None:
                raise ConfigError(file, f"datasets.{name}.source", "a hub dataset needs the package 'datasets', "
                                  "which is not installed", "pip install datasets (or point the source at a local file)")
    for i, p in enumerate(recipe.passes):
        for where, spec in ((f"passes[{i}].teacher", getattr(p, "teacher", None)),
                            (f"passes[{i}].recovery.teacher", getattr(getattr(p, "recovery", None), "teacher", None))):
            if spec:
                from edgeslm.errors import ModelSourceError
                from edgeslm.models.sources import resolve_source

                try:
                    resolve_source(spec, loaded.base_dir, download=False)
                except ModelSourceError as exc:
                    raise ConfigError(file, where, str(exc), "point it at the teacher model's folder") from None


def check_plan(loaded: LoadedRecipe, target: Target) -> None:
    """Everything that can be known impossible before loading a model fails here, in milliseconds."""
    from edgeslm.config.target import consistency

    recipe, file = loaded.recipe, str(path_for_display(loaded.path))
    from edgeslm.passes import HANDLERS  # torch-free: handlers import torch only when a pass runs

    for i, p in enumerate(recipe.passes):
        if p.type not in HANDLERS:
            raise ConfigError(file, f"passes[{i}].type", f"pass {p.type!r} has no handler registered",
                              "register one with edgeslm.passes.register_pass, or remove the pass")
    for fmt in recipe.export.formats:
        if fmt not in target.formats:
            raise ConfigError(file, "export.formats", f"target {target.name!r} cannot run {fmt}",
                              f"it runs {', '.join(target.formats)}; remove {fmt} or pick another target")
    for i, q in enumerate(recipe.passes):
        if isinstance(q, Int8QuantizeConfig) and q.preset != "target" and target.arch != "auto":
            problem = consistency(target.arch, target.features, q.preset)
            if problem:
                raise ConfigError(file, f"passes[{i}].preset", f"does not suit target {target.name!r}: {problem}",
                                  "use preset = \"target\" (the target's own preset)")


def validate_file(path: Path) -> str:
    """Validate one file fully (including cross references, the model source and the files it names)
    without importing torch or touching the network. Returns a one-line summary. A name that is not a
    file but a shipped recipe or target is validated too."""
    if not path.exists() and not is_target_file(str(path)):
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
    check_files(loaded)
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
    from edgeslm.config.data import dataset_for

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
    if target in found and TASKS[recipe.model.task].labelled and not fine_tuned:
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


