"""Shared machinery for declarative files: strict frozen models, TOML loading, located errors.

Every file edgeslm reads is parsed into a frozen pydantic model whose fields carry their own
documentation (`Field(description=...)`), so `edgeslm explain` can print them. Unknown keys are
errors with a did-you-mean suggestion, never silently ignored.
"""

from __future__ import annotations

import difflib
import tomllib
import typing
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict

from edgeslm.errors import ConfigError

SCHEMA_VERSION = 1


def _format_name(value: str) -> str:
    from edgeslm.contract.formats import known

    return known(value)


def _task_name(value: str) -> str:
    from edgeslm.contract.tasks import known

    return known(value)


# a task's name, checked against the table of tasks (a task registered at run time is accepted)
TaskName = typing.Annotated[str, pydantic.AfterValidator(_task_name)]

# an artifact format's name, checked against the table of formats when a file is read (so a format registered
# at run time is accepted, and an unknown one names the near miss and the choices)
FormatName = typing.Annotated[str, pydantic.AfterValidator(_format_name)]


class StrictModel(BaseModel):
    """Frozen, no unknown keys, documented fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
PATTERN_WORDS = {
    NAME_PATTERN: "lower-case letters, digits, '.', '_' and '-', starting with a letter or digit",
}


def read_toml(path: Path, kind: str = "recipe") -> dict[str, Any]:
    """A TOML file as a dict; every way of failing is a one-line ConfigError naming the file. `kind` (recipe,
    target, devices) sets the size limit (edgeslm.inputs.LIMITS): only a regular file is read (a FIFO or
    /dev/zero would hang or never end), no larger than that, nested at most MAX_DEPTH levels."""
    from edgeslm.contract.documents import MAX_DEPTH, DocumentError, check_depth
    from edgeslm.inputs import InputError, read_file

    try:
        raw = read_file(path, kind, what="TOML file")
    except InputError as exc:
        raise ConfigError(str(path), None, exc.problem, exc.fix) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), None, f"not a UTF-8 text file (undecodable byte at offset {exc.start}; "
                          "binary?)", "give a TOML text file saved as UTF-8") from None
    if "\x00" in text:
        raise ConfigError(str(path), None, "not a text file (it holds NUL bytes)", "give a TOML text file")
    text = text.removeprefix("\ufeff")  # a UTF-8 BOM (some editors write one) is not part of the TOML
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise ConfigError(str(path), None, f"is nested deeper than {MAX_DEPTH} levels",
                          "no edgeslm file nests more than a few tables or lists") from None
    except ValueError as exc:  # TOMLDecodeError, and an integer of more than 4300 digits
        raise ConfigError(str(path), None, f"not valid TOML: {str(exc).splitlines()[0][:200]}",
                          "fix the syntax") from None
    try:
        check_depth(data, MAX_DEPTH)
    except DocumentError:
        raise ConfigError(str(path), None, f"is nested deeper than {MAX_DEPTH} levels",
                          "no edgeslm file nests more than a few tables or lists") from None
    _refuse_dates(data, str(path), ())
    return data


def _refuse_dates(value: Any, file: str, loc: tuple) -> None:
    """TOML dates and times have no meaning in edgeslm files (and do not survive JSON): name the key."""
    import datetime as dt

    if isinstance(value, (dt.date, dt.time)):
        raise ConfigError(file, _loc_to_key(loc), "a TOML date or time is not valid here",
                          "write it as a quoted string if you meant text")
    if isinstance(value, dict):
        for k, v in value.items():
            _refuse_dates(v, file, (*loc, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _refuse_dates(v, file, (*loc, i))


def parse(model: type[BaseModel], data: dict[str, Any], file: str, context: dict | None = None,
          prefix: tuple = ()):
    """Validate `data` strictly against `model`: no coercion ("32" is not 32, 1 and "yes" are not true;
    TOML arrays are lists, integers are numbers). The first problem becomes a one-line ConfigError."""
    import json

    try:
        text = json.dumps(data)
    except (TypeError, ValueError) as exc:
        raise ConfigError(file, None, f"holds a value edgeslm cannot read ({exc})") from None
    try:
        return model.model_validate_json(text, strict=True, context=context)
    except pydantic.ValidationError as exc:
        raise error_from_pydantic(exc, model, file, prefix) from None


def _loc_to_key(loc: tuple) -> str:
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key += ("." if key else "") + str(part)
    return key


def unwrap(annotation: Any) -> Any:
    """Strip Optional/list/Annotated down to a model class (or a list of union members)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return unwrap(typing.get_args(annotation)[0])
    if origin in (list, tuple, set, frozenset):
        return unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return unwrap(members[0])
        return [unwrap(m) for m in members]
    return annotation


def _union_member(members: list, tag: str):
    for m in members:
        if isinstance(m, type) and issubclass(m, BaseModel):
            t = m.model_fields.get("type")
            if t is not None and tag in typing.get_args(t.annotation):
                return m
    return None


def allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    owner = resolve_owner(model, loc)
    if owner is None:
        return []
    return [f.alias or name for name, f in owner.model_fields.items()]


def resolve_owner(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """Walk `loc` (minus its last element) through nested models, lists and tagged unions."""
    current: Any = model
    skip_key = False
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if skip_key:  # the user's name for an entry of a dict[str, Model]
            skip_key = False
            continue
        if isinstance(current, list):  # a union: the loc names the tag next
            current = _union_member(current, part)
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            # dict[str, Model] values: the loc part is the dict key
            return None
        current = unwrap(field.annotation)
        if typing.get_origin(current) is dict:
            current = unwrap(typing.get_args(current)[1])
            skip_key = True
    if isinstance(current, list):
        return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def annotation_at(model: type[BaseModel], loc: tuple) -> Any:
    """The declared type of the value at `loc` (through nested models, lists, dicts and tagged unions)."""
    current: Any = model
    for part in loc:
        current = _strip_optional(current)
        origin = typing.get_origin(current)
        if origin is typing.Annotated:
            current = _strip_optional(typing.get_args(current)[0])
            origin = typing.get_origin(current)
        if isinstance(part, int):
            if origin in (list, tuple, set, frozenset):
                current = typing.get_args(current)[0]
                continue
            return None
        if origin is dict:
            current = typing.get_args(current)[1]
            continue
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            member = _union_member(list(typing.get_args(current)), part)
            if member is None:
                return None
            current = member
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part)
            if field is None:
                return None
            current = field.annotation
            continue
        return None
    return current


def _strip_optional(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _strip_optional(members[0])
    if origin is typing.Annotated:
        inner = typing.get_args(annotation)[0]
        stripped = _strip_optional(inner)
        return stripped if stripped is not inner else annotation
    return annotation


def describe(annotation: Any) -> str:
    """A type in words for error messages ("a list of strings, e.g. [\"onnx\"]")."""
    annotation = _strip_optional(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return describe(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (list, tuple, set, frozenset):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        item = _strip_optional(args[0]) if args else Any
        if item is FormatName:  # choices from the live table of formats
            from edgeslm.contract.formats import FORMATS

            names = list(FORMATS)
            example = "[" + ", ".join(f'"{n}"' for n in names[:2]) + "]"
            return f"a list of one of {', '.join(repr(n) for n in names)}, e.g. {example}"
        examples = {str: '["a", "b"]', int: "[1, 2]", float: "[0.5, 1.0]", bool: "[true, false]"}
        if typing.get_origin(item) is typing.Literal:
            example = "[" + ", ".join(f'"{a}"' for a in typing.get_args(item)[:2]) + "]"
            return f"a list of {describe(item)}, e.g. {example}"
        plural = {str: "strings", int: "whole numbers", float: "numbers", bool: "booleans"}.get(item, "tables")
        return f"a list of {plural}, e.g. {examples.get(item, '[{...}]')}"
    if origin is dict or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return "a table ([section] or { key = value })"
    return {bool: "true or false (a TOML boolean, without quotes)", int: "a whole number (without quotes)",
            float: "a number (without quotes)", str: "a string in quotes"}.get(annotation, "another kind of value")


def _given(value: Any) -> str:
    kind = {str: "a string", bool: "a boolean", int: "a whole number", float: "a number", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)
    text = repr(value) if not isinstance(value, (list, dict)) else kind
    return text if isinstance(value, (list, dict)) else f"{text} ({kind})"


def error_from_pydantic(exc: pydantic.ValidationError, model: type[BaseModel], file: str,
                        prefix: tuple = ()) -> ConfigError:
    errors = exc.errors(include_url=False)
    # a misspelt key shows up as "unknown key" plus "missing": name the typo, with the near miss
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(err["loc"])
    key = _loc_to_key(prefix + loc)
    kind = err["type"]
    ctx = err.get("ctx") or {}
    given = err.get("input")
    if kind == "extra_forbidden":
        choices = allowed_keys(model, loc)
        close = difflib.get_close_matches(str(loc[-1]), choices, n=1, cutoff=0.6)
        fix = f"did you mean {close[0]}?" if close else (
            f"valid keys: {', '.join(choices)}" if choices else "remove it")
        return ConfigError(file, key, "unknown key", fix)
    if kind == "missing":
        return ConfigError(file, key, "required key is missing", "add it; see `edgeslm explain`")
    if kind in ("literal_error", "enum"):
        expected = ctx.get("expected", "")
        choices = [c.strip().strip("'") for c in str(expected).replace(" or ", ",").split(",") if c.strip()]
        close = difflib.get_close_matches(str(given), choices, n=1, cutoff=0.6)
        fix = f"did you mean '{close[0]}'?" if close else f"choose one of: {expected}"
        return ConfigError(file, key, f"invalid value {given!r}", fix)
    if kind == "union_tag_invalid":
        return ConfigError(file, key + ".type" if key else "type",
                           f"unknown type {ctx.get('tag')!r}", f"choose one of: {ctx.get('expected_tags')}")
    if kind == "union_tag_not_found":
        return ConfigError(file, key + ".type" if key else "type", "required key is missing",
                           "every entry needs a 'type'")
    if kind == "string_pattern_mismatch":
        words = PATTERN_WORDS.get(ctx.get("pattern"), f"text matching {ctx.get('pattern')}")
        return ConfigError(file, key, f"{given!r} is not a valid name", f"use {words}")
    if kind.endswith("_type") or kind.endswith("_parsing") or kind in ("int_from_float", "model_attributes_type"):
        return ConfigError(file, key, f"expected {describe(annotation_at(model, loc))}, got {_given(given)}")
    bounds = {"greater_than_equal": ("at least", "ge"), "less_than_equal": ("at most", "le"),
              "greater_than": ("above", "gt"), "less_than": ("below", "lt")}
    if kind in bounds:
        words, name = bounds[kind]
        return ConfigError(file, key, f"must be {words} {ctx.get(name)}, got {given!r}")
    if kind in ("too_short", "string_too_short"):
        n = ctx.get("min_length", 1)
        what = "must not be empty" if n == 1 else f"needs at least {n} entries"
        return ConfigError(file, key, what + (f", got {given!r}" if isinstance(given, str) else ""))
    if kind in ("too_long", "string_too_long"):
        return ConfigError(file, key, f"is too long (at most {ctx.get('max_length')})")
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return ConfigError(file, key or None, msg)
