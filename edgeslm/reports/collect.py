"""Gather build manifests and profile results from files and folders, joined by build cache key."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from edgeslm.artifacts.manifest import Artifact, Manifest
from edgeslm.contract.results import ProfileResult
from edgeslm.errors import UserError
from edgeslm.contract import (BASELINE_SCHEMA, MANIFEST_SCHEMA, NOISY_CV, PROFILE_SCHEMA, REPORT_SCHEMA,  # noqa: F401
                              artifact_size)
from edgeslm.contract.stats import stats
from edgeslm.reports.checks import ResultProblem, kind_of, parse, schema_problem
from edgeslm.tasks import task_unit

RESULT_KINDS = (MANIFEST_SCHEMA.rsplit("/", 1)[0], PROFILE_SCHEMA.rsplit("/", 1)[0])
BASELINE_MARKER = ".edgeslm-baseline.json"  # marks a folder `report --save-baseline` made


@dataclass
class Collected:
    manifests: dict[str, Manifest] = field(default_factory=dict)  # cache_key -> manifest
    profiles: list[ProfileResult] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # [{file, why}]: results found in a folder, unreadable


def _is_result_file(rel: Path) -> bool:
    """Files that must be edgeslm's own when found in a folder: build manifests and profile results."""
    return rel.name == "manifest.json" or "profiles" in rel.parts[:-1]


def read_result(f: Path, root: Path | None = None):
    """A result file's JSON value through inputs.read_json (regular file, size and depth caps; with `root`,
    links must stay inside it), or InputError naming the file."""
    from edgeslm.inputs import read_json

    return read_json(f, "result", root=root)


def check_marker(folder: Path) -> bool:
    """Whether `folder` is a baseline edgeslm saved (it holds the marker): a marker that cannot be read or was
    written by another edgeslm version is a UserError naming it (the folder's kind is then unknown)."""
    from edgeslm.inputs import InputError

    marker = folder / BASELINE_MARKER
    if not os.path.lexists(marker):
        return False
    try:
        data = read_result(marker, root=folder)
    except InputError as exc:
        raise UserError(f"{marker}: the baseline marker {exc.problem}; save the baseline again "
                        "(report --save-baseline) or remove the marker") from None
    problem = schema_problem(data, BASELINE_SCHEMA)
    if problem:
        raise UserError(f"{marker}: the baseline marker's {problem}")
    return True


def _json_files(folder: Path, skipped: list) -> list[Path]:
    """The *.json files under `folder` (links to folders not followed, .logs left out), in order; a folder
    that cannot be listed goes to `skipped`."""
    def unreadable(exc: OSError) -> None:
        skipped.append({"file": str(exc.filename), "why": f"folder cannot be read ({exc.strerror or exc})"})

    found = []
    for top, dirs, files in os.walk(folder, onerror=unreadable):
        dirs[:] = sorted(d for d in dirs if d != ".logs")
        found += [Path(top) / f for f in sorted(files) if f.endswith(".json")]
    return found


def collect(paths: list[Path]) -> Collected:
    """Manifests and profile results from files and folders.

    A file named on the command line that cannot be reported is an error naming it. A file found in a
    folder that should be a result (a manifest.json, anything under profiles/, anything in a baseline
    folder, or any file that says it is an edgeslm result) but cannot be read or reported is skipped and
    listed in `skipped` with why: one damaged file does not block every later report of a build. Other
    JSON files (tokenizer.json, config.json) are not results and are passed over."""
    from edgeslm.inputs import InputError

    out = Collected()
    for path in map(Path, paths):
        if not os.path.lexists(path):
            raise UserError(f"{path}: no such file or folder (give build folders, profile results or a baseline)")
        if not path.is_dir():
            try:
                data = read_result(path)
            except InputError as exc:
                raise UserError(f"{exc} (give a build folder, a profile result or a baseline)") from None
            try:
                _add(out, parse(data), path)
            except ResultProblem as exc:
                raise UserError(f"{path}: {exc}") from None
            continue
        baseline = check_marker(path)
        for f in _json_files(path, out.skipped):
            rel = f.relative_to(path)
            if f.name == BASELINE_MARKER:
                continue
            must = baseline or _is_result_file(rel)
            try:
                data = read_result(f, root=path)
            except InputError as exc:
                if must:
                    out.skipped.append({"file": str(f), "why": exc.problem})
                continue
            if not must and kind_of(data) not in RESULT_KINDS:
                continue  # not a result: a tokenizer.json, a config.json, a report kept beside the builds
            try:
                _add(out, parse(data), f)
            except ResultProblem as exc:
                out.skipped.append({"file": str(f), "why": str(exc)})
    if not out.manifests and not out.profiles:
        found = "" if not out.skipped else (
            f"; {len(out.skipped)} result file(s) skipped, e.g. {out.skipped[0]['file']}: {out.skipped[0]['why']}")
        raise UserError(f"no manifests or profile results found in {', '.join(map(str, paths))}{found}; "
                        "run `edgeslm build` / `edgeslm profile` first")
    return out


def _add(out: Collected, result, f: Path) -> None:
    if isinstance(result, Manifest):
        out.manifests[result.cache_key] = result
    else:
        out.profiles.append(result)
    out.sources.append(str(f))


def _metric(verification, name: str):
    return next((m.value for m in verification.metrics if m.name == name), None) if verification else None


def rows(c: Collected) -> list[dict]:
    """One row per (device, recipe, target, artifact, threads): a thread grid (`profile --threads 1,2,4`) gives a
    row per thread count, its key ending in /<n>t; repeated runs of one row are pooled."""
    grouped: dict[tuple, list[ProfileResult]] = {}
    for p in c.profiles:
        key = (p.device.name or "?", p.build.recipe, p.build.target, p.artifact.name, p.settings.threads)
        grouped.setdefault(key, []).append(p)
    counts: dict[tuple, int] = {}
    for key in grouped:
        counts[key[:4]] = counts.get(key[:4], 0) + 1
    out = []
    for (device, recipe, target, art, threads), runs in sorted(grouped.items()):
        latest = max(runs, key=lambda r: r.started_at)
        # pool only repeated runs of the same build under the same settings; the others are counted
        pooled = [r for r in runs if r.build.cache_key == latest.build.cache_key
                  and pool_settings(r) == pool_settings(latest)]
        not_pooled, runs = len(runs) - len(pooled), pooled
        manifest = c.manifests.get(latest.build.cache_key)
        artifact = _artifact(manifest, art)
        samples = [s for r in runs for s in r.samples_ms or []]
        lat = stats(samples) if samples else latest.latency_ms.to_dict()
        flags = {f for r in runs for f in r.flags}
        if manifest is not None and manifest.reference.get("imported"):
            flags.add("imported")  # checked against its own run on the build host, not a PyTorch model
        if len(runs) > 1 and lat["cv"] > NOISY_CV:
            flags.add("noisy")  # each run may be steady while they disagree with each other
        full = [r.task for r in runs if r.task is not None and r.task.whole]
        tm = artifact.task_metric if artifact else None
        task = {"metric": manifest.evaluation.metric if manifest and manifest.evaluation else None,
                "host": tm.value if tm else None,
                "device": full[-1].value if full else None,
                "device_p50_ms_real_lengths": full[-1].latency_ms.p50 if full and full[-1].latency_ms else None}
        verification = artifact.verification if artifact else None
        out.append({
            "key": "/".join((device, recipe, target, art)) + (f"/{threads}t" if counts[device, recipe, target, art] > 1
                                                              else ""),
            "device": device, "recipe": recipe, "target": target, "artifact": art, "threads": threads,
            "format": latest.artifact.format, "precision": latest.artifact.precision,
            "runtime": latest.artifact.runtime, "size": latest.artifact.size,
            "latency_ms": {k: lat[k] for k in ("n", "p50", "p90", "p99", "mean", "stdev", "cv", "min", "max")},
            "runs": len(runs), "runs_not_pooled": not_pooled, "samples_ms": samples, "model_task": latest.build.task,
            "run_p50s": [r.latency_ms.p50 for r in runs],
            "peak_rss_kb": max(r.memory_kb.peak_rss for r in runs),
            "load_ms": latest.load_ms,
            "parity": {"passed": all(r.parity.passed for r in runs), "cosine_min": latest.parity.metric("cosine_min")},
            "accuracy": {"cosine_min": _metric(verification, "cosine_min"),
                         "top1_agreement": _metric(verification, "top1_agreement")},
            "task": task,
            "flags": sorted(flags),
            "cache_key": latest.build.cache_key,
            "recipe_sha256": manifest.recipe.sha256 if manifest else None,
            "tools": manifest.tools if manifest else {},
            "fingerprint": fingerprint(latest.device),
            "settings": latest.settings.to_dict(),
            "generation": task_unit(latest.build.task).report_fields(latest),
        })
    return out


def pool_settings(r: ProfileResult) -> tuple:
    """What must be equal for two runs of one build to be pooled into one row: the input shape, and a
    decoder's decode steps and prompt lengths (thread counts are rows of their own)."""
    s = r.settings
    return (s.seq_len, s.batch_size, s.extra.get("new_tokens"), tuple(s.extra.get("prompt_lengths") or ()))


def _artifact(manifest: Manifest | None, name: str) -> Artifact | None:
    return next((a for a in manifest.artifacts if a.name == name), None) if manifest else None


def fingerprint(device) -> dict:
    return {k: getattr(device, k) for k in ("arch", "cpu_model", "cores", "kernel", "python", "runtimes", "emulated")}


def builds_without_profiles(c: Collected) -> list[dict]:
    profiled = {p.build.cache_key for p in c.profiles}
    out = []
    for key, m in c.manifests.items():
        if key in profiled:
            continue
        for a in m.artifacts:
            out.append({"recipe": m.recipe.name, "target": m.target["name"], "artifact": a.name,
                        "precision": a.precision, "size": artifact_size(m.files, a.file),
                        "cosine_min": _metric(a.verification, "cosine_min"),
                        "task": {"metric": m.evaluation.metric if m.evaluation else None,
                                 "host": a.task_metric.value if a.task_metric else None},
                        "verified": a.verification.passed if a.verification else None})
    return out


def task_value(row: dict):
    """The task metric of a result: measured on the device when it was, else on the build host."""
    t = row.get("task") or {}
    return t.get("device") if t.get("device") is not None else t.get("host")


def pareto(rows: list[dict], cost: str = "latency") -> set[str]:
    """Keys of the results no other result beats on both the task metric and the cost (p50 latency or
    size) on the same device at the same thread count: the trade-offs worth choosing from."""
    def cost_of(r):
        return r["latency_ms"]["p50"] if cost == "latency" else r.get("size")

    front = set()
    for r in rows:
        acc, c = task_value(r), cost_of(r)
        if acc is None or c is None:
            continue
        beaten = any(o is not r and (o["device"], o.get("threads")) == (r["device"], r.get("threads"))
                     and task_value(o) is not None and cost_of(o) is not None
                     and task_value(o) >= acc and cost_of(o) <= c and (task_value(o) > acc or cost_of(o) < c)
                     for o in rows)
        if not beaten:
            front.add(r["key"])
    return front
