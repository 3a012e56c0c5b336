"""Gather build manifests and profile results from files and folders, joined by build cache key."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgeslm.errors import UserError
from edgeslm.contract import MANIFEST_SCHEMA, PROFILE_SCHEMA, REPORT_SCHEMA, artifact_size  # noqa: F401
from edgeslm.contract.results import ProfileResult, ResultError
from edgeslm.contract.stats import stats
from edgeslm.tasks import task_unit

PROFILE_KIND = PROFILE_SCHEMA.rsplit("/", 1)[0] + "/"
BASELINE_MARKER = ".edgeslm-baseline.json"  # marks a folder `report --save-baseline` made


@dataclass
class Collected:
    manifests: dict[str, dict] = field(default_factory=dict)  # cache_key -> manifest
    profiles: list[dict] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


def _is_result_file(f: Path) -> bool:
    """Files that must be edgeslm's own when found in a folder: build manifests and profile results."""
    return f.name == "manifest.json" or "profiles" in f.parts


def problem_with(data: dict) -> str | None:
    """Why a manifest or profile result cannot be reported (missing or mistyped parts), or None."""
    if data.get("schema") == MANIFEST_SCHEMA:
        from edgeslm.artifacts.manifest import Manifest

        try:
            Manifest.model_validate(data)
        except ValueError as exc:
            first = exc.errors()[0] if hasattr(exc, "errors") else {}
            where = ".".join(str(x) for x in first.get("loc", ())) or "?"
            return f"not a valid build manifest ({where}: {first.get('msg', exc)})"
        return None
    try:
        ProfileResult.from_dict(data)
    except ResultError as exc:
        return f"not a valid profile result ({exc})"
    return None


def collect(paths: list[Path]) -> Collected:
    """Manifests and profile results from files and folders. A file that should be one (a manifest.json,
    anything under profiles/, or a file named on the command line) but cannot be read is an error naming
    it, never silently left out of a report or a gate."""
    out = Collected()
    for path in paths:
        if not path.exists():
            raise UserError(f"{path}: no such file or folder (give build folders, profile results or a baseline)")
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*.json") if ".logs" not in p.parts)
        baseline = path.is_dir() and (path / BASELINE_MARKER).is_file()
        for f in files:
            if f.name == BASELINE_MARKER:
                continue
            must = path.is_file() or baseline or _is_result_file(f.relative_to(path) if f != path else Path(f.name))
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                if must:
                    raise UserError(f"{f}: not readable JSON ({str(exc).splitlines()[0][:80]}); rebuild or re-profile, "
                                    "or remove the file") from None
                continue
            schema = data.get("schema") if isinstance(data, dict) else None
            if schema == MANIFEST_SCHEMA or str(schema).startswith(PROFILE_KIND):
                problem = problem_with(data)
                if problem:
                    raise UserError(f"{f}: {problem}; rebuild or re-profile, or remove the file")
                if schema == MANIFEST_SCHEMA:
                    out.manifests[data["cache_key"]] = data
                else:
                    data["_file"] = str(f)
                    out.profiles.append(data)
            elif must:
                raise UserError(f"{f}: not an edgeslm manifest or profile result (schema {schema!r})")
            else:
                continue
            out.sources.append(str(f))
    if not out.manifests and not out.profiles:
        raise UserError(f"no manifests or profile results found in {', '.join(map(str, paths))}; "
                        "run `edgeslm build` / `edgeslm profile` first")
    return out


def _metric(verification: dict | None, name: str):
    for m in (verification or {}).get("metrics", []):
        if m["name"] == name:
            return m["value"]
    return None


def rows(c: Collected) -> list[dict]:
    """One row per (device, recipe, target, artifact); repeated runs of one key are pooled."""
    grouped: dict[tuple, list[dict]] = {}
    for p in c.profiles:
        key = (p["device"].get("name", "?"), p["build"]["recipe"], p["build"]["target"], p["artifact"]["name"])
        grouped.setdefault(key, []).append(p)
    out = []
    for (device, recipe, target, art), runs in sorted(grouped.items()):
        latest = max(runs, key=lambda r: r["started_at"])
        # pool only repeated runs of the same build under the same settings
        same = {k: latest["settings"].get(k) for k in ("threads", "seq_len", "batch_size")}
        runs = [r for r in runs if r["build"]["cache_key"] == latest["build"]["cache_key"]
                and all(r["settings"].get(k) == v for k, v in same.items())]
        manifest = c.manifests.get(latest["build"]["cache_key"], {})
        artifact = next((a for a in manifest.get("artifacts", []) if a["name"] == art), {})
        samples = [s for r in runs for s in r.get("samples_ms", [])]
        lat = stats(samples) if samples else latest["latency_ms"]
        parity_cos = _metric(latest["parity"], "cosine_min")
        full = [r["task"] for r in runs if isinstance(r.get("task"), dict) and r["task"].get("rows") == r["task"].get("of")]
        tm = artifact.get("task_metric") or {}
        task = {"metric": (manifest.get("evaluation") or {}).get("metric"), "host": tm.get("value"),
                "device": full[-1]["value"] if full else None,
                "device_p50_ms_real_lengths": full[-1]["latency_ms"]["p50"] if full else None}
        out.append({
            "key": "/".join((device, recipe, target, art)),
            "device": device, "recipe": recipe, "target": target, "artifact": art,
            "format": latest["artifact"]["format"], "precision": latest["artifact"]["precision"],
            "runtime": latest["artifact"]["runtime"], "size": latest["artifact"].get("size"),
            "latency_ms": {k: lat[k] for k in ("n", "p50", "p90", "p99", "mean", "stdev", "cv", "min", "max")},
            "runs": len(runs), "samples_ms": samples,
            "run_p50s": [r["latency_ms"]["p50"] for r in runs],
            "peak_rss_kb": max(r["memory_kb"]["peak_rss"] for r in runs),
            "load_ms": latest["load_ms"],
            "parity": {"passed": all(r["parity"]["passed"] for r in runs), "cosine_min": parity_cos},
            "accuracy": {"cosine_min": _metric(artifact.get("verification"), "cosine_min"),
                         "top1_agreement": _metric(artifact.get("verification"), "top1_agreement")},
            "task": task,
            "flags": sorted({f for r in runs for f in r["flags"]}),
            "cache_key": latest["build"]["cache_key"],
            "recipe_sha256": manifest.get("recipe", {}).get("sha256"),
            "tools": manifest.get("tools", {}),
            "fingerprint": fingerprint(latest["device"]),
            "settings": latest["settings"],
            "generation": task_unit(latest["build"]["task"]).report_fields(latest),
        })
    return out


def fingerprint(device: dict) -> dict:
    return {k: device.get(k) for k in ("arch", "cpu_model", "cores", "kernel", "python", "runtimes", "emulated")}


def builds_without_profiles(c: Collected) -> list[dict]:
    profiled = {p["build"]["cache_key"] for p in c.profiles}
    out = []
    for key, m in c.manifests.items():
        if key in profiled:
            continue
        for a in m["artifacts"]:
            size = artifact_size(m["files"], a["file"])
            out.append({"recipe": m["recipe"]["name"], "target": m["target"]["name"], "artifact": a["name"],
                        "precision": a["precision"], "size": size,
                        "cosine_min": _metric(a.get("verification"), "cosine_min"),
                        "task": {"metric": (m.get("evaluation") or {}).get("metric"),
                                 "host": (a.get("task_metric") or {}).get("value")},
                        "verified": (a.get("verification") or {}).get("passed")})
    return out


def task_value(row: dict):
    """The task metric of a result: measured on the device when it was, else on the build host."""
    t = row.get("task") or {}
    return t.get("device") if t.get("device") is not None else t.get("host")


def pareto(rows: list[dict], cost: str = "latency") -> set[str]:
    """Keys of the results no other result beats on both the task metric and the cost (p50 latency or
    size) on the same device: the trade-offs worth choosing from."""
    def cost_of(r):
        return r["latency_ms"]["p50"] if cost == "latency" else r.get("size")

    front = set()
    for r in rows:
        acc, c = task_value(r), cost_of(r)
        if acc is None or c is None:
            continue
        beaten = any(o is not r and o["device"] == r["device"] and task_value(o) is not None and cost_of(o) is not None
                     and task_value(o) >= acc and cost_of(o) <= c and (task_value(o) > acc or cost_of(o) < c)
                     for o in rows)
        if not beaten:
            front.add(r["key"])
    return front
