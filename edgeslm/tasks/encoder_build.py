"""An encoder task's part of the build loop (embedding, sequence-classification, fill-mask): one forward pass,
one output per sample.

Two questions are kept apart for every artifact:
- export fidelity (`verification`, gated by [verify]): the artifact against the eager model it was
  exported from, i.e. the model as the passes left it;
- compression loss (`compression`, reported; the task metric gated by [eval] max_drop): the artifact
  against the model before the first compressing pass (after fine-tuning, before pruning/quantizing).
"""

from __future__ import annotations

import copy

import numpy as np

from edgeslm.artifacts.manifest import Artifact, Metric, TensorSpec
from edgeslm.config.data import dataset_for
from edgeslm.config.passes import FinetuneConfig, PruneConfig
from edgeslm.config.recipe import path_for_display
from edgeslm.contract.tasks import TASKS
from edgeslm.contract import reference as ref
from edgeslm.errors import ConfigError
from edgeslm.tasks.base import Exported, ManifestBody, TaskBuild

EAGER_BATCH = 16  # eager PyTorch scores the eval split in batches of this size (exact up to float)
# the code a cached fine-tuning result depends on (a change elsewhere does not redo it)
CACHED_PASS_CODE = ("passes/__init__.py", "passes/base.py", "passes/cache.py", "passes/finetune.py", "passes/prune.py",
                    "models/loader.py", "evaluate.py", "contract/parity.py",
                    "datasets.py", "config/passes.py", "config/data.py", "texts.py")


class Datasets:
    """The recipe's datasets, read once each, by name (None: the only one)."""

    def __init__(self, loaded):
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


def eager(model, sample: dict) -> np.ndarray:
    import torch

    with torch.inference_mode():
        out = model.module(**{k: torch.from_numpy(v) for k, v in sample.items()})
    return np.asarray(out.detach().numpy(), dtype=np.float32)


class EncoderBuild(TaskBuild):
    def load(self):
        from edgeslm.models.loader import load_model
        from edgeslm.passes import PassContext
        from edgeslm.texts import calibration_texts
        from edgeslm.verify import batched, check_unk, verification_texts

        b, recipe = self.b, self.b.recipe
        self.datasets = datasets = Datasets(b.loaded)
        finetune = next((p for p in recipe.passes if isinstance(p, FinetuneConfig)), None)
        self.labels = labels = datasets(finetune.dataset).labels if finetune is not None else None
        if labels and recipe.model.num_labels and recipe.model.num_labels != len(labels):
            raise ConfigError(b.file, "model.num_labels", f"is {recipe.model.num_labels} but the fine-tuning "
                              f"dataset has {len(labels)} labels", "remove num_labels (the dataset decides)")
        with b.log.step("load model"):
            self.model = model = load_model(b.source, recipe.model.task, recipe.model.num_labels,
                                            recipe.model.trust_remote_code, recipe.model.allow_untrained_head,
                                            labels=labels)
            model.tokenizer.save_pretrained(str(b.work / "tokenizer"))
        max_len, min_len = recipe.inputs.max_seq_len, recipe.inputs.min_seq_len
        if "executorch" in recipe.export.formats and not recipe.export.executorch.dynamic_seq:
            min_len = max_len  # a fixed-length program takes padded inputs only
        self.max_len, self.min_len = max_len, min_len
        self.texts = verification_texts(b.loaded)
        self.samples = [model.tokenize(g, max_len, min_len) for g in batched(self.texts, recipe.inputs.batch_size)]
        check_unk(model.tokenizer, self.samples, "verification texts", b.source.spec)

        def calibration():
            cal = [model.tokenize([t], max_len, min_len) for t in calibration_texts(b.loaded, recipe.quantize)]
            check_unk(model.tokenizer, cal, "calibration texts", b.source.spec)
            return cal

        self.calibration = calibration
        self.evalset = None
        if recipe.eval is not None:
            from edgeslm.evaluate import label_ids, make_eval_set

            ds = datasets(recipe.eval.dataset)
            id_map = None
            if TASKS[recipe.model.task].labelled and labels is None:
                cfg = model.hf.config
                id_map = label_ids(ds.labels, getattr(cfg, "id2label", None), "eval.dataset", b.file, cfg.num_labels)
            self.evalset = make_eval_set(model, ds, recipe.eval.metric, max_len, min_len, id_map)
        self.before: dict = {}
        self.ref_file: dict = {}
        return PassContext(model=model, recipe=recipe, datasets=datasets, calibration=calibration, step=b.log.step,
                           progress=getattr(b.log, "progress", lambda m: None), load_teacher=self.teacher)

    def teacher(self, source: str):
        """An external teacher (a training step's `teacher`), loaded once: the same token ids and labels as the
        model, or a ConfigError naming the source."""
        from edgeslm.models.loader import load_model
        from edgeslm.models.sources import resolve_source

        cache = self.__dict__.setdefault("_teachers", {})
        if source not in cache:
            b, model = self.b, self.model
            with b.log.step(f"load teacher {source}"):
                t = load_model(resolve_source(source, b.loaded.base_dir), b.recipe.model.task)
            if t.tokenizer.get_vocab() != model.tokenizer.get_vocab():
                raise ConfigError(b.file, "passes.teacher", f"teacher {source} tokenizes differently from the model "
                                  "(another vocabulary)", "distil from a teacher with the model's tokenizer")
            want = [str(x) for x in (self.labels or list(getattr(model.hf.config, "id2label", {}).values()))]
            have = [str(x) for x in getattr(t.hf.config, "id2label", {}).values()]
            if want and have != want:
                raise ConfigError(b.file, "passes.teacher", f"teacher {source} scores labels {have[:6]}, the model "
                                  f"{want[:6]}", "distil from a teacher fine-tuned on these labels, in this order")
            t.hf.eval()
            cache[source] = t
        return cache[source]

    def before_compression(self, pctx) -> None:
        model = self.model
        self.before["outputs"] = [eager(model, s) for s in self.samples]
        if self.evalset is not None:
            def score():
                with self.b.log.step("evaluate: model before compression"):
                    return self.evalset.score(lambda x: eager(model, x), EAGER_BATCH)

            if pctx.memo is None:
                self.before["metric"] = score()
            else:  # the variants of a recipe family score the model before compression once
                self.before["metric"] = pctx.memo(f"original-metric-{self.evalset.digest()}", score)
        if any((getattr(p, "distill", "none") == "teacher" and not getattr(p, "teacher", None)) or
               (isinstance(p, PruneConfig) and p.recovery is not None and p.recovery.distill == "teacher"
                and not p.recovery.teacher)
               for p in self.b.recipe.passes):
            pctx.teacher = copy.deepcopy(model)

    def pass_cache(self):
        from edgeslm.artifacts import cache as build_cache
        from edgeslm.models.sources import resolve_source
        from edgeslm.passes.cache import PassCache

        b = self.b
        return PassCache({"model": b.model_files, "model_spec": b.recipe.model.model_dump(mode="json"),
                          "max_seq_len": self.max_len, "tools": b.tools,
                          "code": build_cache.code_hash(CACHED_PASS_CODE)},
                         lambda name: self.datasets(name).facts["sha256"], read=not b.force,
                         source_sha=lambda spec: resolve_source(spec, b.loaded.base_dir).fingerprint())

    def after_passes(self, pctx) -> None:
        from edgeslm.verify import thresholds

        b, recipe, model, rf = self.b, self.b.recipe, self.model, self.ref_file
        with b.log.step("reference outputs"):
            self.reference = [eager(model, s) for s in self.samples]
            for i, (s, r, o) in enumerate(zip(self.samples, self.reference, self.before["outputs"])):
                for name, arr in s.items():
                    rf[ref.sample_input(i, name)] = arr
                rf[ref.eager_output(i, model.output_name)] = r
                rf[ref.original_output(i, model.output_name)] = o
        self.evaluation = None
        if self.evalset is not None:
            changed = any(p.compresses for p in recipe.passes)
            with b.log.step("evaluate: compressed model (eager)"):
                compressed = (self.evalset.score(lambda x: eager(model, x), EAGER_BATCH) if changed
                              else self.before["metric"])
            self.evaluation = {**self.evalset.facts, "dataset_facts": self.datasets(recipe.eval.dataset).facts,
                               "original": self.before["metric"], "compressed_eager": compressed, "artifacts": {},
                               "max_drop": recipe.eval.max_drop, "batch": recipe.inputs.batch_size}
            if recipe.eval.on_device:
                for i, x in enumerate(self.evalset.batches(recipe.inputs.batch_size)):
                    for name, arr in x.items():
                        rf[ref.eval_input(i, name)] = arr
                rf[ref.EVAL_TARGETS] = self.evalset.targets
        self.limits = thresholds(recipe.verify, recipe.quantize is not None, recipe.model.task)

    def export(self, fmt: str, pctx) -> Exported:
        from edgeslm.formats import format_unit
        from edgeslm.formats.base import ExportContext

        b, recipe = self.b, self.b.recipe
        exporter = format_unit(fmt).exporter()
        ectx = ExportContext(loaded=self.model, recipe=recipe, target=b.target, workdir=b.work,
                             calibration=self.calibration, step=b.log.step, plan=pctx.plan)
        prepared = ectx.prepared_quant()
        if prepared is not None and prepared.config.max_accuracy_drop is not None and self.evalset is not None:
            from edgeslm.passes.quant_search import search

            result, run, found, _ = search(fmt, exporter, ectx, prepared, self.evalset, recipe.inputs.batch_size,
                                           self.before["metric"]["value"], b.log)
            result.quantization = {**(result.quantization or {}), "search": found}
            return Exported(result=result, session=lambda: run)
        result = exporter.export(ectx)
        return Exported(result=result, session=lambda: exporter.runner(b.work / result.file, threads=0,
                                                                       quantization=result.quantization))

    def judge(self, fmt: str, exported: Exported, pctx) -> Artifact:
        from edgeslm.formats import format_unit
        from edgeslm.verify import compare

        b, recipe, result, task = self.b, self.b.recipe, exported.result, self.b.recipe.model.task
        masks = [s["attention_mask"] for s in self.samples]
        with b.log.step(f"{fmt}: verify"):
            run = exported.session()
            actual = [np.asarray(run(s)) for s in self.samples]
            fidelity = compare(task, self.reference, actual, masks, self.limits, result.runtime)
            fidelity.against = "eager PyTorch after the passes (what was exported)"
            if getattr(run, "note", None):
                fidelity.how = run.note
            if format_unit(fmt).any_batch and recipe.inputs.batch_size == 1:
                fidelity.metrics.append(batch_consistency(self.model, run, self.texts, actual, self.max_len,
                                                          self.min_len))
            loss = compare(task, self.before["outputs"], actual, masks, {}, result.runtime)
            loss.against = "eager PyTorch before compression"
        metric = None
        if self.evalset is not None:
            with b.log.step(f"{fmt}: evaluate"):
                cents = self.evalset.centroids(run, recipe.inputs.batch_size)
                metric = self.evalset.score(run, recipe.inputs.batch_size, cents)
                if cents is not None:
                    self.ref_file[ref.eval_centroids(fmt)] = cents
            metric["drop_points"] = round((self.before["metric"]["value"] - metric["value"]) * 100, 3)
            if recipe.eval.max_drop is not None:
                ok = metric["drop_points"] <= recipe.eval.max_drop
                fidelity.metrics.append(Metric(name=f"{recipe.eval.metric}_drop_points", value=metric["drop_points"],
                                               threshold=recipe.eval.max_drop, kind="max", passed=ok))
                fidelity.passed = fidelity.passed and ok
            self.evaluation["artifacts"][fmt] = metric
        for i, a in enumerate(actual):
            self.ref_file[ref.host_output(fmt, i, self.model.output_name)] = a
        return Artifact(name=fmt, format=fmt, file=result.file, runtime=result.runtime, precision=result.precision,
                        quantization=result.quantization, export=result.export, verification=fidelity,
                        compression=loss, task_metric=metric)

    def finish(self, artifacts: list, pctx) -> ManifestBody:
        b, recipe, model, evalset = self.b, self.b.recipe, self.model, self.evalset
        np.savez_compressed(b.work / ref.FILE, **self.ref_file)
        task = TASKS[recipe.model.task]
        batch = recipe.inputs.batch_size
        return ManifestBody(
            model={**model.config, "labels": list(getattr(model.hf.config, "id2label", {}).values())
                   if task.labelled else None},
            inputs=[TensorSpec(name=n, dtype="int64", axes=["batch", "sequence"]) for n in model.input_names],
            outputs=[TensorSpec(name=model.output_name, dtype="float32", axes=list(task.output_axes))],
            shapes={"min_seq_len": recipe.inputs.min_seq_len, "max_seq_len": recipe.inputs.max_seq_len,
                    "batch_size": batch},
            reference={"file": ref.FILE, "samples": len(self.samples), "texts": self.texts, "keys": ref.ENCODER_KEYS,
                       "thresholds": self.limits,
                       "eval": {"batches": len(evalset.batches(batch)), "rows": len(evalset.texts),
                                "metric": recipe.eval.metric, "classes": len(evalset.labels),
                                "labels": evalset.labels, "probe": evalset.facts["probe"]}
                       if evalset is not None and recipe.eval.on_device else None},
            warnings=list(model.notes) + pctx.warnings, evaluation=self.evaluation)


def batch_consistency(model, run, texts: list[str], single: list, max_len: int, min_len: int) -> Metric:
    """A format that takes any batch: run up to 16 verification texts as one padded batch and compare each row
    with the same text run alone. Dynamic int8 quantizes activations per tensor over the whole batch,
    so there a text's output depends on its neighbours; this measures by how much (reported, not gated)."""
    from edgeslm.contract.parity import output_rows, row_cosines

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
