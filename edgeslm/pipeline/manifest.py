"""The one place a build's manifest is written: what every build records (version, cache key, recipe, target,
model source, tools, build host and steps, status, files) around the task's own part (tasks.base.ManifestBody)."""

from __future__ import annotations

import os
import platform
import time

from edgeslm import __version__
from edgeslm.artifacts.manifest import Manifest, file_entries, write_manifest
from edgeslm.contract import reference as ref
from edgeslm.tasks.base import BuildContext, ManifestBody


def recipe_facts(loaded) -> dict:
    """The manifest's record of the recipe: name, path, sha256 and the whole validated content."""
    recipe = loaded.recipe
    return {"name": recipe.name, "path": str(loaded.path), "sha256": loaded.content_hash(),
            "content": recipe.model_dump(mode="json")}


def source_facts(source, model_files: dict) -> dict:
    return {"source": source.spec, "kind": source.kind, "revision": source.revision, "folder": str(source.folder),
            "files": model_files}


def host_facts() -> dict:
    return {"machine": platform.machine(), "system": platform.system(), "python": platform.python_version(),
            "cpus": os.cpu_count()}


def write(b: BuildContext, body: ManifestBody, artifacts: list, passes: list[dict]) -> Manifest:
    """Assemble, list the files of and write `b.work`/manifest.json; returns the manifest."""
    status = "ok" if all(a.verification.passed for a in artifacts) else "verification-failed"
    manifest = Manifest(
        edgeslm_version=__version__, cache_key=b.key, status=status,
        recipe=recipe_facts(b.loaded), target=b.target.model_dump(mode="json"),
        model={**source_facts(b.source, b.model_files), **body.model},
        task=b.recipe.model.task, inputs=body.inputs, outputs=body.outputs, shapes=body.shapes,
        artifacts=artifacts, files=[], reference=body.reference, tools=b.tools,
        build={"started_at": b.started, "seconds": round(time.perf_counter() - b.t0, 3), "steps": b.log.steps,
               "warnings": list(body.warnings), "host": host_facts()},
        passes=passes, evaluation=body.evaluation,
    )
    manifest.files = file_entries(b.work, {"tokenizer/": "tokenizer", ref.FILE: "reference", "model.": "model"})
    write_manifest(b.work, manifest)
    return manifest
