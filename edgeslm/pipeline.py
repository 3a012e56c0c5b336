"""build(recipe, target): plan -> resolve -> (cache) -> load -> passes -> export -> verify -> manifest."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgeslm import __version__
from edgeslm.artifacts import cache
from edgeslm.artifacts.manifest import (Artifact, Manifest, TensorSpec, file_entries, read_manifest,
                                        write_manifest)
from edgeslm.config.catalog import check_plan
from edgeslm.config.recipe import LoadedRecipe
from edgeslm.config.target import Target
from edgeslm.config.tasks import TASKS
from edgeslm.errors import CheckFailed
from edgeslm.hashing import HashMemo
from edgeslm.models.checks import check_model_folder
from edgeslm.models.sources import ResolvedSource, resolve_source

REFERENCE_FILE = "reference.npz"


@dataclass
class StepLog:
    """Timing of each step; `on_step` lets the CLI show progress."""

    on_step: Callable[[str], contextlib.AbstractContextManager] | None = None
    steps: list[dict] = field(default_factory=list)

    @contextlib.contextmanager
    def step(self, name: str):
        t0 = time.perf_counter()
        ctx = self.on_step(name) if self.on_step else contextlib.nullcontext()
        with ctx:
            yield
        self.steps.append({"name": name, "seconds": round(time.perf_counter() - t0, 3)})


@dataclass
class BuildResult:
    folder: Path
    manifest: Manifest
    cached: bool
    seconds: float
    note: str = ""  # e.g. modified files restored from the cache


def build_dir(out: Path, recipe_name: str, target_name: str) -> Path:
    return out / recipe_name / target_name


def plan(loaded: LoadedRecipe, targets: list[Target]) -> list[Target]:
    """Check every (recipe, target) pair before any work; returns resolved targets."""
    resolved = [t.resolved() for t in targets]
    for t in resolved:
        check_plan(loaded, t)
    return resolved


def build(loaded: LoadedRecipe, target: Target, out: Path, force: bool = False,
          log: StepLog | None = None) -> BuildResult:
    """Build one artifact set for one (resolved) target."""
    t0 = time.perf_counter()
    log = log or StepLog()
    recipe = loaded.recipe
    folder = build_dir(out, recipe.name, target.name)
    source = resolve_source(recipe.model.source, loaded.base_dir, recipe.model.revision)
    check_model_folder(source.spec, source.folder, recipe.model.task)  # milliseconds, before any work
    memo = HashMemo()
    model_files = source.fingerprint(memo)
    memo.save()
    tools = cache.tool_versions()
    key = cache.cache_key({
        "recipe": loaded.content_hash(), "target": target.model_dump(mode="json"),
        "model": model_files, "tools": tools, "edgeslm": [__version__, cache.code_hash()],
    })
    cache.clean_stale(folder.parent)
    if not force:
        hit = cache.lookup(key, folder, memo)
        memo.save()
        if hit is not None:
            cache.materialize(hit.folder, folder)
            return BuildResult(folder, read_manifest(folder), True, time.perf_counter() - t0, hit.note)

    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    work = folder.with_name(f".{folder.name}.build-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    made_parent = not folder.parent.exists()
    work.mkdir(parents=True)
    try:
        manifest = _build_into(work, loaded, target, source, model_files, tools, key, log, started, t0)
        if manifest.status == "ok":
            cache.store(work, key, replace=force)
        cache.replace_dir(work, folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if made_parent:  # a build that failed leaves no empty folders behind
            with contextlib.suppress(OSError):
                folder.parent.rmdir()
        raise
    if manifest.status != "ok":
        from edgeslm.verify import describe_failure

        bad = [f"{a.name}: {describe_failure(a.verification)}" for a in manifest.artifacts
               if a.verification and not a.verification.passed]
        exc = CheckFailed(f"{recipe.name} for {target.name}: verification failed: " + "; ".join(bad)
                          + f" (artifacts kept in {folder} for inspection; relax [verify] or change the passes)")
        exc.result = BuildResult(folder, manifest, False, time.perf_counter() - t0)  # for the full table
        raise exc
    return BuildResult(folder, manifest, False, time.perf_counter() - t0)


def _build_into(work: Path, loaded: LoadedRecipe, target: Target, source: ResolvedSource,
                model_files: dict, tools: dict, key: str, log: StepLog, started: str, t0: float) -> Manifest:
    import numpy as np

    from edgeslm.exporters import ExportContext, get_exporter
    from edgeslm.models.loader import builtin_texts, load_model, read_texts
    from edgeslm.verify import batched, check_unk, compare, thresholds, verification_texts

    recipe = loaded.recipe
    with log.step("load model"):
        model = load_model(source, recipe.model.task, recipe.model.num_labels, recipe.model.trust_remote_code,
                           recipe.model.allow_untrained_head)
        model.tokenizer.save_pretrained(str(work / "tokenizer"))

    # Passes that change the PyTorch model itself (fine-tune, prune) run here, in recipe order.
    from edgeslm.passes import apply_model_passes

    apply_model_passes(model, recipe.passes, log)

    with log.step("reference outputs"):
        max_len, min_len = recipe.inputs.max_seq_len, recipe.inputs.min_seq_len
        if "executorch" in recipe.export.formats and not recipe.export.executorch.dynamic_seq:
            min_len = max_len  # a fixed-length program takes padded inputs only
        texts = verification_texts(loaded)
        groups = batched(texts, recipe.inputs.batch_size)
        samples = [model.tokenize(g, max_len, min_len) for g in groups]
        check_unk(model.tokenizer, samples, "verification texts", source.spec)
        reference = [_eager(model, s) for s in samples]
        ref_file = {}
        for i, (s, r) in enumerate(zip(samples, reference)):
            for name, arr in s.items():
                ref_file[f"input/{i}/{name}"] = arr
            ref_file[f"output/{i}/{model.output_name}"] = r

    def calibration():
        q = recipe.quantize
        spec = q.calibration if q and q.calibration else None
        n = spec.samples if spec else 64
        cal_texts = (builtin_texts("calibration_texts") if spec is None or spec.source == "builtin"
                     else read_texts(loaded.resolve_path(spec.source), n))[:n]
        cal = [model.tokenize([t], max_len, min_len) for t in cal_texts]
        check_unk(model.tokenizer, cal, "calibration texts", source.spec)
        return cal

    prepared = {}

    def prepared_quant():
        if "q" not in prepared:
            from edgeslm.passes.quantize import prepare

            with log.step("quantize: prepare (keep-float layers, SmoothQuant)"):
                prepared["q"] = prepare(model.module, recipe.quantize, calibration, model.input_names)
        return prepared["q"]

    limits = thresholds(recipe.verify, recipe.quantize is not None)
    masks = [s["attention_mask"] for s in samples]
    artifacts = []
    for fmt in recipe.export.formats:
        exporter = get_exporter(fmt)
        ctx = ExportContext(loaded=model, recipe=recipe, target=target, quant=recipe.quantize,
                            workdir=work, calibration=calibration, step=log.step,
                            prepared_quant=prepared_quant)
        result = exporter.export(ctx)
        with log.step(f"{fmt}: verify"):
            run = exporter.runner(work / result.file, threads=0)
            actual = [np.asarray(run(s)) for s in samples]
            verification = compare(recipe.model.task, reference, actual, masks, limits, result.runtime)
            if fmt == "onnx" and recipe.inputs.batch_size == 1:
                verification.metrics.append(batch_consistency(model, run, texts, actual, max_len, min_len))
        for i, a in enumerate(actual):
            ref_file[f"host/{fmt}/{i}/{model.output_name}"] = a
        artifacts.append(Artifact(name=fmt, format=fmt, file=result.file, runtime=result.runtime,
                                  precision=result.precision, quantization=result.quantization,
                                  export=result.export, verification=verification))

    np.savez_compressed(work / REFERENCE_FILE, **ref_file)
    task = TASKS[recipe.model.task]
    status = "ok" if all(a.verification.passed for a in artifacts) else "verification-failed"
    inputs = [TensorSpec(name=n, dtype="int64", axes=["batch", "sequence"]) for n in model.input_names]
    manifest = Manifest(
        edgeslm_version=__version__, cache_key=key, status=status,
        recipe={"name": recipe.name, "path": str(loaded.path), "sha256": loaded.content_hash(),
                "content": recipe.model_dump(mode="json")},
        target=target.model_dump(mode="json"),
        model={"source": source.spec, "kind": source.kind, "revision": source.revision,
               "folder": str(source.folder), "files": model_files, **model.config},
        task=recipe.model.task, inputs=inputs,
        outputs=[TensorSpec(name=model.output_name, dtype="float32", axes=list(task.output_axes))],
        shapes={"min_seq_len": recipe.inputs.min_seq_len, "max_seq_len": recipe.inputs.max_seq_len,
                "batch_size": recipe.inputs.batch_size},
        artifacts=artifacts, files=[],
        reference={"file": REFERENCE_FILE, "samples": len(samples), "texts": texts[:len(samples)],
                   "keys": "input/<i>/<name>, output/<i>/<output> (eager PyTorch), host/<format>/<i>/<output>",
                   "thresholds": limits},
        tools=tools,
        build={"started_at": started, "seconds": round(time.perf_counter() - t0, 3), "steps": log.steps,
               "warnings": list(model.notes),
               "host": {"machine": platform.machine(), "system": platform.system(),
                        "python": platform.python_version(), "cpus": os.cpu_count()}},
    )
    manifest.files = file_entries(work, {"tokenizer/": "tokenizer", REFERENCE_FILE: "reference",
                                         "model.": "model"})
    write_manifest(work, manifest)
    return manifest


def batch_consistency(model, run, texts: list[str], single: list, max_len: int, min_len: int):
    """ONNX takes any batch: run up to 16 verification texts as one padded batch and compare each row
    with the same text run alone. Dynamic int8 quantizes activations per tensor over the whole batch,
    so there a text's output depends on its neighbours; this measures by how much (reported, not gated)."""
    import numpy as np

    from edgeslm.artifacts.manifest import Metric
    from edgeslm.runner.device_runner import _row_cosines, output_rows

    n = min(16, len(texts))
    batch = model.tokenize(texts[:n], max_len, min_len)
    out = np.asarray(run(batch))
    cos = []
    for i in range(n):
        alone, length = single[i][0], int(batch["attention_mask"][i].sum())
        mask = batch["attention_mask"][i:i + 1]
        row = output_rows(model.task, out[i:i + 1, :length] if out.ndim == 3 else out[i:i + 1], mask[:, :length])
        ref = output_rows(model.task, alone[None, :length] if alone.ndim == 2 else alone[None], mask[:, :length])
        cos.append(float(_row_cosines(ref, row).min()))
    return Metric(name=f"batch{n}_vs_alone_cosine_min", value=min(cos), kind="info")


def _eager(model, sample):
    import numpy as np
    import torch

    with torch.inference_mode():
        out = model.module(**{k: torch.from_numpy(v) for k, v in sample.items()})
    return np.asarray(out.detach().numpy(), dtype=np.float32)
