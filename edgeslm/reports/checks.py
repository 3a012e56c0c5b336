"""Why a manifest or profile result cannot be reported: `problem_with(data)` -> one line, or None.

A result file can come from anywhere (a CI artifact, a colleague's baseline, a disk that filled up), so
everything the report, its renderers and the gate read from it is checked here first, with the type each
of them uses: a name is text, a latency is a finite positive number, a flag is text. A result that passes
never makes `rows`, `compare` or a renderer fail; one that does not is skipped and named by the caller.
"""

from __future__ import annotations

import math

from edgeslm.contract import BASELINE_SCHEMA, MANIFEST_SCHEMA, PROFILE_SCHEMA, REPORT_SCHEMA

KINDS = {s.rsplit("/", 1)[0]: s for s in (MANIFEST_SCHEMA, PROFILE_SCHEMA, REPORT_SCHEMA, BASELINE_SCHEMA)}
MISSING = object()


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


def finite(v) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:  # an integer too large for a float
        return False


def number(v) -> bool:
    """A JSON number the renderers can format (NaN allowed: a broken model's metric is a result)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        float(v)
    except OverflowError:
        return False
    return True


TYPES = {
    "text": (lambda v: isinstance(v, str), "text"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "number": (number, "a number"),
    "positive": (lambda v: finite(v) and v > 0, "a finite number above 0"),
    "nonneg": (lambda v: finite(v) and v >= 0, "a finite number, at least 0"),
    "dict": (lambda v: isinstance(v, dict), "an object"),
    "list": (lambda v: isinstance(v, list), "a list"),
}


def _get(doc, path: str):
    for key in path.split("."):
        if not isinstance(doc, dict) or key not in doc:
            return MISSING
        doc = doc[key]
    return doc


def check(doc, spec: dict[str, tuple[str, bool]]) -> str | None:
    """The first key of `spec` ({dotted key: (type, optional)}) that `doc` lacks or holds with another type.
    Optional keys may be missing or null."""
    for path, (kind, optional) in spec.items():
        v = _get(doc, path)
        if v is MISSING or v is None:
            if optional:
                continue
            return f"{path} is missing"
        ok, what = TYPES[kind]
        if not ok(v):
            return f"{path} is not {what}"
    return None


LATENCY = ("n", "p50", "p90", "p99", "mean", "stdev", "cv", "min", "max")
PROFILE = {
    "started_at": ("text", False),
    "build.recipe": ("text", False), "build.target": ("text", False), "build.cache_key": ("text", False),
    "build.task": ("text", False),
    "artifact.name": ("text", False), "artifact.format": ("text", False), "artifact.precision": ("text", False),
    "artifact.runtime": ("text", False), "artifact.size": ("nonneg", True),
    "device.name": ("text", True), "device.arch": ("text", False), "device.cpu_model": ("text", False),
    "device.emulated": ("text", True), "device.runtimes": ("dict", True),
    **{f"latency_ms.{k}": ("nonneg", False) for k in LATENCY}, "latency_ms.p50": ("positive", False),
    "memory_kb.peak_rss": ("nonneg", False), "load_ms": ("nonneg", True),
    "parity.passed": ("bool", False), "parity.metrics": ("list", True),
    "flags": ("list", False), "settings": ("dict", False),
    "task": ("dict", True), "generation": ("dict", True),
}
TASK = {"metric": ("text", True), "value": ("number", True), "latency_ms.p50": ("nonneg", False)}
METRIC = {"name": ("text", False), "value": ("number", False)}
GENERATION = {"decode_tok_s": ("number", False), "perplexity_increase": ("number", True),
              "top5_agreement": ("number", True)}
MANIFEST = {"recipe.sha256": ("text", False), "recipe.content": ("dict", True), "recipe.content.gate": ("dict", True),
            "recipe.content.gate.fail_on": ("text", True), "evaluation.metric": ("text", True)}


def profile_problem(p: dict) -> str | None:
    """Why a profile result cannot be reported (beyond its schema's own check), or None."""
    from edgeslm.contract.tasks import TASKS
    from edgeslm.tasks import task_unit

    problem = check(p, PROFILE)
    if problem:
        return problem
    if p["build"]["task"] not in TASKS:
        return f"build.task {_short(p['build']['task'])} is not a task edgeslm knows"
    if any(not isinstance(f, str) for f in p["flags"]):
        return "flags holds something other than text"
    for i, m in enumerate(p["parity"].get("metrics") or []):
        problem = check(m, METRIC)
        if problem:
            return f"parity.metrics[{i}].{problem}"
    samples = p.get("samples_ms")
    if samples is not None and (not isinstance(samples, list) or not all(finite(s) and s > 0 for s in samples)):
        return "samples_ms is not a list of finite latencies above 0"
    if isinstance(p.get("task"), dict):
        problem = check(p["task"], TASK)
        if problem:
            return f"task.{problem}"
    fields = task_unit(p["build"]["task"]).report_fields(p)
    if fields is not None:
        problem = check(fields, GENERATION)
        pair = fields.get("decode_tok_s_p10_p90")
        if problem:
            return f"generation: {problem}"
        if not (isinstance(pair, list) and len(pair) == 2 and all(number(x) for x in pair)):
            return "generation.decode.tok_s_p10_p90 is not two numbers"
        if not all(number(v) for v in fields["ttft_ms"].values()):
            return "generation.ttft[].ttft_ms.p50 is not a number"
    return None


def manifest_problem(m: dict) -> str | None:
    """What a report reads of a (schema-valid) manifest that pydantic leaves untyped (dict[str, Any])."""
    problem = check(m, MANIFEST)
    if problem:
        return problem
    for a in m["artifacts"]:
        value = (a.get("task_metric") or {}).get("value")
        if value is not None and not number(value):
            return f"artifacts[{a['name']}].task_metric.value is not a number"
        for m in (a.get("verification") or {}).get("metrics", []):
            if not number(m.get("value")):
                return f"artifacts[{a['name']}].verification.metrics: {_short(m.get('name'))} is not a number"
    return None


def problem_with(data) -> str | None:
    """Why a manifest or profile result cannot be reported (its schema, missing or mistyped parts), or None."""
    kind = kind_of(data)
    if kind == MANIFEST_SCHEMA.rsplit("/", 1)[0]:
        problem = schema_problem(data, MANIFEST_SCHEMA)
        if problem:
            return problem
        from edgeslm.artifacts.manifest import Manifest

        try:
            Manifest.model_validate(data)
        except ValueError as exc:
            first = exc.errors()[0] if hasattr(exc, "errors") else {}
            where = ".".join(str(x) for x in first.get("loc", ())) or "?"
            return f"not a valid build manifest ({where}: {str(first.get('msg', exc))[:200]})"
        problem = manifest_problem(data)
        return f"not a valid build manifest ({problem})" if problem else None
    if kind == PROFILE_SCHEMA.rsplit("/", 1)[0]:
        from edgeslm.contract.results import ProfileResult, ResultError

        try:
            ProfileResult.from_dict(data)
        except ResultError as exc:
            return f"not a valid profile result ({exc})"
        problem = profile_problem(data)
        return f"not a valid profile result ({problem})" if problem else None
    if kind == REPORT_SCHEMA.rsplit("/", 1)[0]:
        return (f"is an edgeslm report ({_short(data.get('schema'))}), not a result; give the build folders or "
                "profile results it was made from")
    if kind == BASELINE_SCHEMA.rsplit("/", 1)[0]:
        return "is a baseline marker, not a result; give the baseline folder"
    schema = data.get("schema") if isinstance(data, dict) else None
    return f"not an edgeslm manifest or profile result (schema {_short(schema)})"
