"""Gather build manifests and profile results from files and folders, joined by build cache key."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgeslm.errors import UserError
from edgeslm.runner.device_runner import stats

REPORT_SCHEMA = "edgeslm.report/1"
PROFILE_SCHEMA = "edgeslm.profile/1"
MANIFEST_SCHEMA = "edgeslm.manifest/1"


@dataclass
class Collected:
    manifests: dict[str, dict] = field(default_factory=dict)  # cache_key -> manifest
    profiles: list[dict] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


def collect(paths: list[Path]) -> Collected:
    out = Collected()
    for path in paths:
        if not path.exists():
            raise UserError(f"{path}: no such file or folder (give build folders, profile results or a baseline)")
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*.json") if ".logs" not in p.parts)
        for f in files:
            try:
                data = json.loads(f.read_text())
            except (OSError, ValueError):
                if path.is_file():
                    raise UserError(f"{f}: not a JSON file") from None
                continue
            schema = data.get("schema") if isinstance(data, dict) else None
            if schema == MANIFEST_SCHEMA:
                out.manifests[data["cache_key"]] = data
            elif schema == PROFILE_SCHEMA:
                data["_file"] = str(f)
                out.profiles.append(data)
            elif path.is_file():
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
            "flags": sorted({f for r in runs for f in r["flags"]}),
            "cache_key": latest["build"]["cache_key"],
            "recipe_sha256": manifest.get("recipe", {}).get("sha256"),
            "tools": manifest.get("tools", {}),
            "fingerprint": fingerprint(latest["device"]),
            "settings": latest["settings"],
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
            size = next((f["size"] for f in m["files"] if f["path"] == a["file"]), None)
            out.append({"recipe": m["recipe"]["name"], "target": m["target"]["name"], "artifact": a["name"],
                        "precision": a["precision"], "size": size,
                        "cosine_min": _metric(a.get("verification"), "cosine_min"),
                        "verified": (a.get("verification") or {}).get("passed")})
    return out
