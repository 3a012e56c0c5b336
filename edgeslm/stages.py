"""The work of one build, in order: load -> passes -> reference outputs -> export + verify -> manifest.

Two questions are kept apart for every artifact:
- export fidelity (`verification`, gated by [verify]): the artifact against the eager model it was
  exported from, i.e. the model as the passes left it;
- compression loss (`compression`, reported; the task metric gated by [eval] max_drop): the artifact
  against the model before the first compressing pass (after fine-tuning, before pruning/quantizing).
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import platform
import time
from pathlib import Path

import numpy as np

from edgeslm import __version__
from edgeslm.artifacts.manifest import (Artifact, Manifest, Metric, TensorSpec, file_entries, write_manifest)
from edgeslm.config.passes import FinetuneConfig, PruneConfig
from edgeslm.config.data import dataset_for
from edgeslm.config.recipe import LoadedRecipe, path_for_display
from edgeslm.config.target import Target
from edgeslm.contract import reference as ref
from edgeslm.config.tasks import TASKS
from edgeslm.errors import ConfigError
from edgeslm.models.sources import ResolvedSource

EAGER_BATCH = 16  # eager PyTorch scores the eval split in batches of this size (exact up to float)
# the code a cached fine-tuning result depends on (a change elsewhere does not redo it)
CACHED_PASS_CODE = ("passes/__init__.py", "passes/cache.py", "passes/finetune.py", "models/loader.py",
                    "datasets.py", "config/passes.py", "config/data.py", "texts.py")


class Datasets:
    """The recipe's datasets, read once each, by name (None: the only one)."""

    def __init__(self, loaded: LoadedRecipe):
        self.loaded, self._cache = loaded, {}

    def __call__(self, name: str | None):
        from edgeslm.datasets import load_dataset

        recipe = self.loaded.recipe
        real = dataset_for(recipe, name)
        if real is None:  # validated at load; here only if the recipe object was built by hand
            raise ConfigError(str(self.loaded.path), "datasets", f"no dataset {name!r}")
        if real not in self._cache:
            self._cache[real] = load_dataset(real, recipe.datasets[real], self.loaded.base_dir,
                                             str(path_for_display(self.loaded.path)))
        return self._cache[real]


def recipe_facts(loaded: LoadedRecipe) -> dict:
    """The manifest's record of the recipe: name, path, sha256 and the whole validated content."""
    recipe = loaded.recipe
    return {"name": recipe.name, "path": str(loaded.path), "sha256": loaded.content_hash(),
            "content": recipe.model_dump(mode="json")}


def source_facts(source: ResolvedSource, model_files: dict) -> dict:
    return {"source": source.spec, "kind": source.kind, "revision": source.revision, "folder": str(source.folder),
            "files": model_files}


def eager(model, sample: dict) -> np.ndarray:
    import torch

    with torch.inference_mode():
        out = model.module(**{k: torch.from_numpy(v) for k, v in sample.items()})
    return np.asarray(out.detach().numpy(), dtype=np.float32)


def build_into(work: Path, loaded: LoadedRecipe, target: Target, source: ResolvedSource, model_files: dict,
               tools: dict, key: str, log, started: str, t0: float, force: bool = False) -> Manifest:
    from edgeslm.formats import format_unit
    from edgeslm.formats.base import ExportContext
    from edgeslm.models.loader import load_model
    from edgeslm.passes import PassContext, run_passes
    from edgeslm.texts import calibration_texts
    from edgeslm.verify import batched, check_unk, compare, thresholds, verification_texts

    recipe = loaded.recipe
    file = str(path_for_display(loaded.path))
    datasets = Datasets(loaded)
    finetune = next((p for p in recipe.passes if isinstance(p, FinetuneConfig)), None)
    labels = datasets(finetune.dataset).labels if finetune is not None else None
    if labels and recipe.model.num_labels and recipe.model.num_labels != len(labels):
        raise ConfigError(file, "model.num_labels", f"is {recipe.model.num_labels} but the fine-tuning dataset "
                          f"has {len(labels)} labels", "remove num_labels (the dataset decides)")
    with log.step("load model"):
        model = load_model(source, recipe.model.task, recipe.model.num_labels, recipe.model.trust_remote_code,
                           recipe.model.allow_untrained_head, labels=labels)
        model.tokenizer.save_pretrained(str(work / "tokenizer"))

    max_len, min_len = recipe.inputs.max_seq_len, recipe.inputs.min_seq_len
    if "executorch" in recipe.export.formats and not recipe.export.executorch.dynamic_seq:
        min_len = max_len  # a fixed-length program takes padded inputs only
    texts = verification_texts(loaded)
    samples = [model.tokenize(g, max_len, min_len) for g in batched(texts, recipe.inputs.batch_size)]
    check_unk(model.tokenizer, samples, "verification texts", source.spec)

    def calibration():
        cal = [model.tokenize([t], max_len, min_len) for t in calibration_texts(loaded, recipe.quantize)]
        check_unk(model.tokenizer, cal, "calibration texts", source.spec)
        return cal

    evalset = None
    if recipe.eval is not None:
        from edgeslm.evaluate import label_ids, make_eval_set

        ds = datasets(recipe.eval.dataset)
        id_map = None
        if recipe.model.task == "sequence-classification" and labels is None:
            cfg = model.hf.config
            id_map = label_ids(ds.labels, getattr(cfg, "id2label", None), "eval.dataset", file, cfg.num_labels)
        evalset = make_eval_set(model, ds, recipe.eval.metric, max_len, min_len, id_map)

    before: dict = {}
    distills = any(getattr(p, "distill", "none") == "teacher" or
                   (isinstance(p, PruneConfig) and p.recovery is not None and p.recovery.distill == "teacher")
                   for p in recipe.passes)

    def before_compression(ctx):
        before["outputs"] = [eager(model, s) for s in samples]
        if evalset is not None:
            with log.step("evaluate: model before compression"):
                before["metric"] = evalset.score(lambda b: eager(model, b), EAGER_BATCH)
        if distills:
            ctx.teacher = copy.deepcopy(model)

    ctx = PassContext(model=model, recipe=recipe, datasets=datasets, calibration=calibration, step=log.step,
                      progress=getattr(log, "progress", lambda m: None))
    from edgeslm.artifacts import cache as build_cache
    from edgeslm.passes.cache import PassCache

    pass_cache = PassCache({"model": model_files, "model_spec": recipe.model.model_dump(mode="json"),
                            "max_seq_len": max_len, "tools": tools, "code": build_cache.code_hash(CACHED_PASS_CODE)},
                           lambda name: datasets(name).facts["sha256"], read=not force)
    run_passes(ctx, recipe.passes, before_compression, pass_cache)
    ctx.teacher = None

    with log.step("reference outputs"):
        reference = [eager(model, s) for s in samples]
        ref_file = {}
        for i, (s, r, o) in enumerate(zip(samples, reference, before["outputs"])):
            for name, arr in s.items():
                ref_file[ref.sample_input(i, name)] = arr
            ref_file[ref.eager_output(i, model.output_name)] = r
            ref_file[ref.original_output(i, model.output_name)] = o
    evaluation = None
    if evalset is not None:
        changed = any(p.compresses for p in recipe.passes)
        with log.step("evaluate: compressed model (eager)"):
            compressed = evalset.score(lambda b: eager(model, b), EAGER_BATCH) if changed else before["metric"]
        evaluation = {**evalset.facts, "dataset_facts": datasets(recipe.eval.dataset).facts,
                      "original": before["metric"], "compressed_eager": compressed, "artifacts": {},
                      "max_drop": recipe.eval.max_drop, "batch": recipe.inputs.batch_size}
        if recipe.eval.on_device:
            for i, b in enumerate(evalset.batches(recipe.inputs.batch_size)):
                for name, arr in b.items():
                    ref_file[ref.eval_input(i, name)] = arr
            ref_file[ref.EVAL_TARGETS] = evalset.targets

    limits = thresholds(recipe.verify, recipe.quantize is not None, recipe.model.task)
    masks = [s["attention_mask"] for s in samples]
    artifacts = []
    for fmt in recipe.export.formats:
        exporter = format_unit(fmt).exporter()
        ectx = ExportContext(loaded=model, recipe=recipe, target=target, workdir=work, calibration=calibration,
                             step=log.step, plan=ctx.plan)
        prepared = ectx.prepared_quant()
        if prepared is not None and prepared.config.max_accuracy_drop is not None and evalset is not None:
            from edgeslm.passes.quant_search import search

            result, run, found, _ = search(fmt, exporter, ectx, prepared, evalset, recipe.inputs.batch_size,
                                           before["metric"]["value"], log)
            result.quantization = {**(result.quantization or {}), "search": found}
        else:
            result = exporter.export(ectx)
            run = None
        with log.step(f"{fmt}: verify"):
            run = run or exporter.runner(work / result.file, threads=0, quantization=result.quantization)
            actual = [np.asarray(run(s)) for s in samples]
            fidelity = compare(recipe.model.task, reference, actual, masks, limits, result.runtime)
            fidelity.against = "eager PyTorch after the passes (what was exported)"
            if getattr(run, "note", None):
                fidelity.how = run.note
            if fmt == "onnx" and recipe.inputs.batch_size == 1:
                fidelity.metrics.append(batch_consistency(model, run, texts, actual, max_len, min_len))
            loss = compare(recipe.model.task, before["outputs"], actual, masks, {}, result.runtime)
            loss.against = "eager PyTorch before compression"
        metric = None
        if evalset is not None:
            with log.step(f"{fmt}: evaluate"):
                cents = evalset.centroids(run, recipe.inputs.batch_size)
                metric = evalset.score(run, recipe.inputs.batch_size, cents)
                if cents is not None:
                    ref_file[ref.eval_centroids(fmt)] = cents
            metric["drop_points"] = round((before["metric"]["value"] - metric["value"]) * 100, 3)
            if recipe.eval.max_drop is not None:
                ok = metric["drop_points"] <= recipe.eval.max_drop
                fidelity.metrics.append(Metric(name=f"{recipe.eval.metric}_drop_points", value=metric["drop_points"],
                                               threshold=recipe.eval.max_drop, kind="max", passed=ok))
                fidelity.passed = fidelity.passed and ok
            evaluation["artifacts"][fmt] = metric
        for i, a in enumerate(actual):
            ref_file[ref.host_output(fmt, i, model.output_name)] = a
        artifacts.append(Artifact(name=fmt, format=fmt, file=result.file, runtime=result.runtime,
                                  precision=result.precision, quantization=result.quantization,
                                  export=result.export, verification=fidelity, compression=loss,
                                  task_metric=metric))

    np.savez_compressed(work / ref.FILE, **ref_file)
    task = TASKS[recipe.model.task]
    status = "ok" if all(a.verification.passed for a in artifacts) else "verification-failed"
    inputs = [TensorSpec(name=n, dtype="int64", axes=["batch", "sequence"]) for n in model.input_names]
    manifest = Manifest(
        edgeslm_version=__version__, cache_key=key, status=status,
        recipe=recipe_facts(loaded), target=target.model_dump(mode="json"),
        model={**source_facts(source, model_files), **model.config,
               "labels": list(getattr(model.hf.config, "id2label", {}).values())
               if recipe.model.task == "sequence-classification" else None},
        task=recipe.model.task, inputs=inputs,
        outputs=[TensorSpec(name=model.output_name, dtype="float32", axes=list(task.output_axes))],
        shapes={"min_seq_len": recipe.inputs.min_seq_len, "max_seq_len": recipe.inputs.max_seq_len,
                "batch_size": recipe.inputs.batch_size},
        artifacts=artifacts, files=[],
        reference={"file": ref.FILE, "samples": len(samples), "texts": texts, "keys": ref.ENCODER_KEYS,
                   "thresholds": limits,
                   "eval": {"batches": len(evalset.batches(recipe.inputs.batch_size)), "rows": len(evalset.texts),
                            "metric": recipe.eval.metric, "classes": len(evalset.labels),
                            "labels": evalset.labels, "probe": evalset.facts["probe"]}
                   if evalset is not None and recipe.eval.on_device else None},
        tools=tools,
        build={"started_at": started, "seconds": round(time.perf_counter() - t0, 3), "steps": log.steps,
               "warnings": list(model.notes),
               "host": {"machine": platform.machine(), "system": platform.system(),
                        "python": platform.python_version(), "cpus": os.cpu_count()}},
        passes=ctx.facts, evaluation=evaluation,
    )
    manifest.files = file_entries(work, {"tokenizer/": "tokenizer", ref.FILE: "reference", "model.": "model"})
    write_manifest(work, manifest)
    return manifest


def batch_consistency(model, run, texts: list[str], single: list, max_len: int, min_len: int) -> Metric:
    """ONNX takes any batch: run up to 16 verification texts as one padded batch and compare each row
    with the same text run alone. Dynamic int8 quantizes activations per tensor over the whole batch,
    so there a text's output depends on its neighbours; this measures by how much (reported, not gated)."""
    from edgeslm.contract.parity import row_cosines, output_rows

    n = min(16, len(texts))
    batch = model.tokenize(texts[:n], max_len, min_len)
    out = np.asarray(run(batch))
    cos = []
    for i in range(n):
        alone, length = single[i][0], int(batch["attention_mask"][i].sum())
        mask = batch["attention_mask"][i:i + 1]
        row = output_rows(model.task, out[i:i + 1, :length] if out.ndim == 3 else out[i:i + 1], mask[:, :length])
        alone_rows = output_rows(model.task, alone[None, :length] if alone.ndim == 2 else alone[None], mask[:, :length])
        cos.append(float(row_cosines(alone_rows, row).min()))
    return Metric(name=f"batch{n}_vs_alone_cosine_min", value=min(cos), kind="info")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
