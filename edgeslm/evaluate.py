"""Task metric on a dataset's eval split: accuracy or macro-F1, for any callable that maps a batch of
tokenized inputs to outputs (eager PyTorch, an ONNX session, an ExecuTorch program, the device runner).

Sequence classifiers are scored by argmax of their logits; embedding models by a nearest-centroid probe
(each label's centroid is the normalised mean embedding of its train texts, computed with the same model
or artifact that is scored). The metric maths lives in the device runner (`task_metric`), so a score
measured on a device is computed exactly as on the build host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edgeslm.contract.parity import nearest_centroid, task_metric
from edgeslm.contract.tasks import TASKS
from edgeslm.errors import ConfigError

# nearest-centroid probe: train texts per label used for the centroids
CENTROID_TEXTS_PER_LABEL = 64


@dataclass
class EvalSet:
    task: str
    metric: str
    labels: list[str]
    texts: list[str]
    targets: np.ndarray  # class id per text
    tokenize: Callable  # (texts, max_len, min_len) -> inputs
    max_len: int
    min_len: int
    centroid_texts: list[str] = field(default_factory=list)  # embedding: train texts for the centroids
    centroid_labels: np.ndarray | None = None
    facts: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict)

    def batches(self, size: int, texts: list[str] | None = None) -> list[dict]:
        """Tokenized batches of exactly `size` texts (the last filled up from the start)."""
        from edgeslm.verify import batched

        which = "centroids" if texts is not None else "eval"
        if (which, size) not in self._cache:
            groups = batched(self.texts if texts is None else texts, size)
            self._cache[which, size] = [self.tokenize(g, self.max_len, self.min_len) for g in groups]
        return self._cache[which, size]

    def digest(self) -> str:
        """What the score depends on besides the model: texts, targets, metric, lengths, the probe's texts."""
        import hashlib
        import json

        return hashlib.sha256(json.dumps([self.task, self.metric, self.labels, self.texts, self.targets.tolist(),
                                          self.max_len, self.min_len, self.centroid_texts,
                                          None if self.centroid_labels is None else self.centroid_labels.tolist()]
                                         ).encode()).hexdigest()[:32]

    def _outputs(self, run: Callable[[dict], np.ndarray], batches: list[dict], n: int) -> np.ndarray:
        return np.concatenate([np.asarray(run(b), dtype=np.float64) for b in batches])[:n]

    def centroids(self, run: Callable[[dict], np.ndarray], batch: int) -> np.ndarray | None:
        if not _pooled(self.task):
            return None
        emb = self._outputs(run, self.batches(batch, self.centroid_texts), len(self.centroid_texts))
        cents = np.stack([emb[self.centroid_labels == k].mean(0) for k in range(len(self.labels))])
        return cents / np.clip(np.linalg.norm(cents, axis=1, keepdims=True), 1e-12, None)

    def score(self, run: Callable[[dict], np.ndarray], batch: int, centroids: np.ndarray | None = None) -> dict:
        """{"metric", "value", "accuracy", "macro_f1", "n"} of `run` on the eval split, in batches of
        `batch` (an artifact is scored at the batch it is deployed with)."""
        out = self._outputs(run, self.batches(batch), len(self.texts))
        if _pooled(self.task):
            cents = centroids if centroids is not None else self.centroids(run, batch)
            pred = nearest_centroid(out, cents)
        else:
            pred = out.argmax(-1)
        return task_metric(self.metric, pred, self.targets, len(self.labels))


def _pooled(task: str) -> bool:
    """A pooled output (an embedding) is scored by its nearest class centroid; logits by their argmax."""
    return TASKS[task].head == "embedding"


def label_ids(dataset_labels: list[str], model_labels: dict | None, key: str, file: str, num_out: int) -> list[int]:
    """Map the dataset's label names onto the model's class ids (by name, else by number)."""
    names = {str(v): int(k) for k, v in (model_labels or {}).items()}
    if all(lb in names for lb in dataset_labels):
        return [names[lb] for lb in dataset_labels]
    if all(lb.isdigit() and int(lb) < num_out for lb in dataset_labels):
        return [int(lb) for lb in dataset_labels]
    shown = ", ".join(f"{k}: {v}" for k, v in sorted((model_labels or {}).items())[:8])
    raise ConfigError(file, key, f"labels {dataset_labels[:5]} are not among the model's labels ({shown})",
                      "fine-tune on this dataset first (a finetune pass), or use a checkpoint trained on these labels")


def make_eval_set(model, dataset, metric: str, max_len: int, min_len: int, id_map: list[int] | None = None) -> EvalSet:
    targets = np.asarray([id_map[t] if id_map else t for t in dataset.eval.labels])
    es = EvalSet(model.task, metric, dataset.labels, list(dataset.eval.texts), targets, model.tokenize,
                 max_len, min_len)
    if _pooled(model.task):
        picked = []
        for k in range(len(dataset.labels)):
            picked += [(t, k) for t, lb in zip(dataset.train.texts, dataset.train.labels) if lb == k][
                :CENTROID_TEXTS_PER_LABEL]
        es.centroid_texts = [t for t, _ in picked]
        es.centroid_labels = np.asarray([k for _, k in picked])
    es.facts = {"dataset": dataset.name, "metric": metric, "eval_texts": len(es.texts),
                "probe": "nearest-centroid" if _pooled(model.task) else "argmax of the logits"}
    return es
