"""Results as the reports read them: `parse(data)` -> a typed Manifest or ProfileResult, or ResultProblem (one line);
`problem_with(data)` -> that line, or None.

A result file can come from anywhere (a CI artifact, a colleague's baseline, a disk that filled up), so
everything the report, its renderers and the gate read from it is typed here first, by the records themselves
(artifacts.manifest, contract.results): a name is a string, a latency a finite positive number, a flag a string.
A result that parses never makes `rows`, `compare` or a renderer fail; one that does not is skipped and named by
the caller.
"""

from __future__ import annotations

from edgeslm.contract import BASELINE_SCHEMA, MANIFEST_SCHEMA, PROFILE_SCHEMA, REPORT_SCHEMA

KINDS = {s.rsplit("/", 1)[0]: s for s in (MANIFEST_SCHEMA, PROFILE_SCHEMA, REPORT_SCHEMA, BASELINE_SCHEMA)}


def kind_of(data) -> str | None:
    """The edgeslm kind a document claims ("edgeslm.manifest", ...), whatever its version, else None."""
    schema = data.get("schema") if isinstance(data, dict) else None
    if isinstance(schema, str) and schema.rsplit("/", 1)[0] in KINDS:
        return schema.rsplit("/", 1)[0]
    return None


def schema_problem(data, expected: str) -> str | None:
    """A document of `expected`'s kind written by another edgeslm version (or not of that kind at all)."""
    schema = data.get("schema") if isinstance(data, dict) else None
    if schema == expected:
        return None
    if kind_of(data) == expected.rsplit("/", 1)[0]:
        return (f"schema {_short(schema)} was written by another edgeslm version; this one reads {expected} "
                f"({_redo(expected)} with this edgeslm)")
    return f"schema {_short(schema)}, expected {expected}"


def _redo(schema: str) -> str:
    return {MANIFEST_SCHEMA: "rebuild it", PROFILE_SCHEMA: "profile again", BASELINE_SCHEMA: "save the baseline "
            "again (report --save-baseline)"}.get(schema, "make it again")


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _recipe_gate_problem(m) -> str | None:
    """The one part of a manifest a report reads that the recipe's own schema, not the manifest's, types."""
    gate = m.recipe.content.get("gate")
    if gate is None:
        return None
    if not isinstance(gate, dict):
        return "recipe.content.gate is not an object"
    spec = gate.get("fail_on")
    if spec is not None and not isinstance(spec, str):
        return "recipe.content.gate.fail_on is not a string"
    return None


class ResultProblem(ValueError):
    """Why a document cannot be reported (one line)."""


def parse(data):
    """A manifest (artifacts.manifest.Manifest) or a profile result (contract.results.ProfileResult) from a JSON
    value, typed all the way down, or ResultProblem saying why it cannot be reported."""
    from edgeslm.contract.tasks import TASKS

    kind = kind_of(data)
    if kind == MANIFEST_SCHEMA.rsplit("/", 1)[0]:
        problem = schema_problem(data, MANIFEST_SCHEMA)
        if problem:
            raise ResultProblem(problem)
        from edgeslm.artifacts.manifest import Manifest

        try:
            m = Manifest.model_validate(data)
        except ValueError as exc:
            first = exc.errors()[0] if hasattr(exc, "errors") else {}
            where = ".".join(str(x) for x in first.get("loc", ())) or "?"
            raise ResultProblem(f"not a valid build manifest ({where}: {str(first.get('msg', exc))[:200]})") from None
        problem = _recipe_gate_problem(m)
        if problem:
            raise ResultProblem(f"not a valid build manifest ({problem})")
        return m
    if kind == PROFILE_SCHEMA.rsplit("/", 1)[0]:
        from edgeslm.contract.results import ProfileResult, ResultError

        try:
            p = ProfileResult.from_dict(data)
        except ResultError as exc:
            raise ResultProblem(f"not a valid profile result ({exc})") from None
        if p.build.task not in TASKS:
            raise ResultProblem(f"not a valid profile result (build.task {_short(p.build.task)} is not a task "
                                "edgeslm knows)")
        return p
    if kind == REPORT_SCHEMA.rsplit("/", 1)[0]:
        raise ResultProblem(f"is an edgeslm report ({_short(data.get('schema'))}), not a result; give the build "
                            "folders or profile results it was made from")
    if kind == BASELINE_SCHEMA.rsplit("/", 1)[0]:
        raise ResultProblem("is a baseline marker, not a result; give the baseline folder")
    schema = data.get("schema") if isinstance(data, dict) else None
    raise ResultProblem(f"not an edgeslm manifest or profile result (schema {_short(schema)})")


def problem_with(data) -> str | None:
    """Why a manifest or profile result cannot be reported, or None."""
    try:
        parse(data)
    except ResultProblem as exc:
        return str(exc)
    return None
