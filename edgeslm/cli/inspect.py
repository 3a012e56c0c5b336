"""validate / recipes / targets / explain / schema: read-only commands that never import torch."""

from __future__ import annotations

import json
import os
import typing
from pathlib import Path

import click
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from edgeslm.cli.app import main
from edgeslm.config import catalog
from edgeslm.config.base import unwrap, read_toml
from edgeslm.config.devices import Inventory
from edgeslm.config.passes import PASS_TYPES
from edgeslm.config.recipe import Recipe
from edgeslm.config.target import Target, load_target_file
from edgeslm.errors import EXIT_INTERNAL, EdgeSLMError
from edgeslm.pipeline import planning


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
def validate(files: tuple[Path, ...], as_json: bool) -> None:
    """Check recipes, targets and devices.toml (keys, types, files, combinations, the model source)
    without building, importing torch or using the network. FILES may also name shipped recipes or targets."""
    results, codes = [], set()
    for f in files:
        try:
            results.append({"file": str(f), "ok": True, "summary": planning.validate_file(f)})
        except EdgeSLMError as exc:
            codes.add(exc.exit_code)
            results.append({"file": str(f), "ok": False, "error": str(exc)})
        except Exception as exc:  # noqa: BLE001 - a bug for this file must not hide the other files' results
            if os.environ.get("EDGESLM_DEBUG"):
                raise
            codes.add(EXIT_INTERNAL)
            results.append({"file": str(f), "ok": False, "error": f"{f}: internal error: {type(exc).__name__}: "
                            f"{exc} (this is a bug in edgeslm; please report it)"})
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        for r in results:
            if r["ok"]:
                click.echo(f"ok   {r['file']}: {r['summary']}")
            else:
                click.echo(f"error: {r['error']}", err=True)
    if codes:  # a bug in edgeslm outweighs bad input: the exit code says which kind of failure it was
        raise SystemExit(EXIT_INTERNAL if EXIT_INTERNAL in codes else max(codes))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def recipes(as_json: bool) -> None:
    """List the recipes that ship with edgeslm."""
    rows = []
    for name, path in catalog.shipped("recipes").items():
        data = read_toml(path)
        rows.append({"name": name, "description": data.get("description", ""), "path": str(path),
                     "targets": data.get("targets", [])})
    _print_rows(rows, as_json, "recipes")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def targets(as_json: bool) -> None:
    """List the targets that ship with edgeslm."""
    rows = []
    for name, path in catalog.shipped("targets").items():
        t = load_target_file(path)
        rows.append({"name": name, "description": t.description, "arch": t.arch,
                     "preset": t.quantization.preset, "path": str(path)})
    _print_rows(rows, as_json, "targets")


def _print_rows(rows: list[dict], as_json: bool, kind: str = "") -> None:
    if not rows and kind:
        looked = ", ".join(str(d) for d in catalog.candidate_dirs(kind))
        click.echo(f"no shipped {kind} found; looked in: {looked} (set EDGESLM_{kind.upper()}_PATH to add a "
                   "folder)", err=True)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['description']}")


SCHEMAS = {"recipe": Recipe, "target": Target, "devices": Inventory}


@main.command()
@click.argument("kind", type=click.Choice(sorted(SCHEMAS)))
@click.option("--json", "as_json", is_flag=True, help="Print the JSON schema instead.")
def explain(kind: str, as_json: bool) -> None:
    """Print every key of a recipe, target or devices file with its meaning and default."""
    model = SCHEMAS[kind]
    if as_json:
        click.echo(json.dumps(model.model_json_schema(), indent=2))
        return
    for line in explain_lines(model, kind):
        click.echo(line)


@main.command()
@click.argument("kind", type=click.Choice(["manifest", "profile", "probe", "report"]))
def schema(kind: str) -> None:
    """Print the JSON Schema of what edgeslm writes, for other tools: a build's manifest.json (manifest), a device's
    profile result (profile) or probe (probe), or `report --format json` (report). The same files ship in the
    package (edgeslm/data/schemas)."""
    from edgeslm.artifacts.schemas import shipped

    click.echo(shipped(kind), nl=False)


def explain_lines(model: type[BaseModel], kind: str, width: int = 100) -> list[str]:
    """Each key with its kind and default on one line, its meaning wrapped under it (at most `width` columns)."""
    import textwrap

    lines: list[str] = []

    def walk(m: type[BaseModel], prefix: str) -> None:
        for name, field in m.model_fields.items():
            key = f"{prefix}{field.alias or name}"
            inner = unwrap(field.annotation)
            if typing.get_origin(inner) is dict:
                inner = unwrap(typing.get_args(inner)[1])
                key = f"{key}.NAME"
            table = isinstance(inner, type) and issubclass(inner, BaseModel)
            many = typing.get_origin(field.annotation) in (list, tuple)
            if field.default is not PydanticUndefined:
                default = "" if isinstance(field.default, BaseModel) or field.default in (None, (), []) \
                    else f" = {json.dumps(field.default)}"
            elif field.default_factory is not None:
                default = ""
            else:
                default = " (required)"
            kind_text = _type_name(field.annotation)
            if typing.get_origin(field.annotation) is typing.Literal and len(typing.get_args(field.annotation)) == 1:
                kind_text, default = f"always {json.dumps(typing.get_args(field.annotation)[0])}", ""
            if table:
                kind_text = ("list of tables" if many else "table") + (", optional" if field.default is None else "")
            lines.append(f"{key}: {kind_text}{default}")
            if field.description:
                lines.extend(textwrap.wrap(field.description, width, initial_indent="    ", subsequent_indent="    "))
            if table and not many:
                walk(inner, key + ".")

    walk(model, "")
    if kind == "recipe":
        for tag, base in PASS_TYPES.items():
            for cls in base.variants():
                lines.append("")
                lines += textwrap.wrap(f"[[passes]] type = \"{tag}\": {' '.join((cls.__doc__ or '').split())}".rstrip(),
                                       width, subsequent_indent="    ")
                walk(cls, "passes[].")
    if kind == "devices":
        lines.append("A device named 'local' always exists: this machine, no SSH.")
    return lines


def _type_name(annotation) -> str:
    """A key's kind in a user's words: string, integer, number, true/false, a list of ..., one of "a", "b"."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        kinds = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(kinds) + (", optional" if type(None) in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args) if len(args) > 1 else json.dumps(args[0])
    if origin in (list, tuple):
        item = next((a for a in args if a is not Ellipsis), str)
        return f"list of {_type_name(item)}"
    if origin is dict:
        return "table"
    if origin is typing.Annotated:
        return _type_name(args[0])
    names = {str: "string", int: "integer", float: "number", bool: "true/false", type(None): "none"}
    if annotation in names:
        return names[annotation]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))