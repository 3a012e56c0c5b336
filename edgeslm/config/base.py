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


class StrictModel(BaseModel):
    """Frozen, no unknown keys, documented fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), None, "file not found", "check the path") from None
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot read file: {exc.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), None, f"not valid TOML: {exc}", "fix the syntax") from None


def parse(model: type[BaseModel], data: dict[str, Any], file: str, context: dict | None = None):
    """Validate `data` against `model`; the first problem becomes a one-line ConfigError."""
    try:
        return model.model_validate(data, context=context)
    except pydantic.ValidationError as exc:
        raise error_from_pydantic(exc, model, file) from None


def _loc_to_key(loc: tuple) -> str:
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key += ("." if key else "") + str(part)
    return key


def _unwrap(annotation: Any) -> Any:
    """Strip Optional/list/Annotated down to a model class (or a list of union members)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (list, tuple, set, frozenset):
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
        return [_unwrap(m) for m in members]
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
        current = _unwrap(field.annotation)
        if typing.get_origin(current) is dict:
            current = _unwrap(typing.get_args(current)[1])
            skip_key = True
    if isinstance(current, list):
        return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def error_from_pydantic(exc: pydantic.ValidationError, model: type[BaseModel], file: str) -> ConfigError:
    err = exc.errors(include_url=False)[0]
    loc = tuple(err["loc"])
    key = _loc_to_key(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        choices = allowed_keys(model, loc)
        close = difflib.get_close_matches(str(loc[-1]), choices, n=1, cutoff=0.6)
        fix = f"did you mean {close[0]}?" if close else (
            f"valid keys: {', '.join(choices)}" if choices else "remove it")
        return ConfigError(file, key, "unknown key", fix)
    if kind == "missing":
        return ConfigError(file, key, "required key is missing", "add it; see `edgeslm explain`")
    if kind in ("literal_error", "enum"):
        expected = err.get("ctx", {}).get("expected", "")
        given = err.get("input")
        choices = [c.strip().strip("'") for c in str(expected).replace(" or ", ",").split(",") if c.strip()]
        close = difflib.get_close_matches(str(given), choices, n=1, cutoff=0.6)
        fix = f"did you mean '{close[0]}'?" if close else f"choose one of: {expected}"
        return ConfigError(file, key, f"invalid value {given!r}", fix)
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return ConfigError(file, key + ".type" if key else "type",
                           f"unknown type {ctx.get('tag')!r}", f"choose one of: {ctx.get('expected_tags')}")
    if kind == "union_tag_not_found":
        return ConfigError(file, key + ".type" if key else "type", "required key is missing",
                           "every entry needs a 'type'")
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    given = err.get("input")
    if kind.endswith("_type") or kind.endswith("_parsing"):
        msg = f"{msg}, got {given!r}"
    return ConfigError(file, key or None, msg)
