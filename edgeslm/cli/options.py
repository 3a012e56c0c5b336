"""Options, option types and helpers shared by the commands (pip's cmdoptions.py, small): the inventory a
command reads, the build folder a recipe argument stands for, and the bounds of what a device is asked.

Every argument of `run` and `profile` is checked by click or here before anything touches a device: a
bound that only the device would enforce costs an upload first and then answers with the device's text.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import click

from edgeslm.config.devices import load_default_inventory, load_inventory
from edgeslm.contract import MAX_ITERS, MAX_SEED, MAX_THREADS, MAX_TOKENS, MAX_TOP_K  # noqa: F401 (the bounds)
from edgeslm.errors import UserError

MAX_SECONDS = 86_400.0  # --min-seconds: a day; a device's profile_timeout (default 3600) ends a run sooner


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange, without NaN (it passes every range comparison) or infinities."""

    name = "finite float range"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


class IntList(click.ParamType):
    """A comma-separated list of integers in [lo, hi] ("1,2,4"), at most `most` of them, as a tuple."""
    name = "N[,N...]"

    def __init__(self, lo: int, hi: int, most: int = 16):
        self.lo, self.hi, self.most = lo, hi, most

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            values = tuple(int(x) for x in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)
        if len(values) > self.most or not all(self.lo <= v <= self.hi for v in values):
            self.fail(f"give at most {self.most} values, each in [{self.lo}, {self.hi}] (got {value})", param, ctx)
        return values


def threads_option(help_text: str):
    return click.option("--threads", type=click.IntRange(0, MAX_THREADS), default=None,
                        help=f"{help_text} (at most {MAX_THREADS}).")


def check_prompt(prompt: str) -> str:
    """A prompt `run` can tokenize: not empty, and UTF-8 text (the shell passes other bytes through as lone
    surrogates, which a tokenizer cannot take)."""
    if prompt == "":
        raise UserError("PROMPT is empty; give the text the model should continue (or answer, with --chat)")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:
        ch = prompt[exc.start]
        what = f"byte 0x{ord(ch) - 0xDC00:02x}" if 0xDC80 <= ord(ch) <= 0xDCFF else f"character U+{ord(ch):04X}"
        raise UserError(f"PROMPT is not UTF-8 text ({what} at position {exc.start}); give the prompt as UTF-8 "
                        "(check the terminal's encoding, e.g. LANG=C.UTF-8)") from None
    return prompt


devices_option = click.option(
    "--devices", "devices_file", type=click.Path(path_type=Path), default=None,
    help="Inventory file (default: $EDGESLM_DEVICES, else ./devices.toml and ./devices.local.toml).")
accept_option = click.option(
    "--accept-new-host-key", is_flag=True,
    help="Trust on first use: record an unknown host key in known_hosts. A changed key is always refused.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print results as JSON on stdout.")


def inventory(path: Path | None):
    """--devices FILE, else $EDGESLM_DEVICES, else ./devices.toml with ./devices.local.toml (the untracked file
    `devices emulate start --add-to` writes). A file the user named must exist; the defaults may be absent
    (then only `local` is there)."""
    named = path or (Path(os.environ["EDGESLM_DEVICES"]) if os.environ.get("EDGESLM_DEVICES") else None)
    if named is None:
        return load_default_inventory()
    return load_inventory(named, required=True), str(named)


def build_for(arg: str, target_name: str, out: Path) -> Path:
    """A build folder: ARG itself, or the recipe ARG built (or taken from the cache) for the target."""
    p = Path(arg)
    if (p / "manifest.json").is_file():
        return p
    if p.suffix in (".onnx", ".pte") or (p.is_dir() and not p.suffix == ".toml"):
        from edgeslm.cli.imports import not_a_build

        hint = not_a_build(p)
        if hint:
            raise UserError(hint)
    from edgeslm.cli.console import quiet_native_output
    from edgeslm.config.catalog import find_recipe, load_target
    from edgeslm.pipeline import build, plan

    loaded = find_recipe(arg)
    if target_name not in loaded.recipe.targets:
        raise UserError(f"recipe {loaded.recipe.name} does not list target {target_name!r}; add it to its targets")
    target = plan(loaded, [load_target(target_name)])[0]
    with quiet_native_output(out / ".logs" / f"{loaded.recipe.name}-{target.name}.log"):
        return build(loaded, target, out).folder


def figure(value, spec: str) -> str:
    """A figure of a result as `spec` formats it, '-' when the result does not hold it."""
    return "-" if isinstance(value, bool) or not isinstance(value, (int, float)) else format(value, spec)
