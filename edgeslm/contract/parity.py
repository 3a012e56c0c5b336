"""Output comparison and task metrics (the one implementation: edgeslm.verify on the build host and
the runner on the device both call these)."""

from __future__ import annotations

from edgeslm.contract.tasks import TASKS

class ParityError(ValueError):
    """Outputs that cannot be compared (shapes differ)."""


# The one implementation of "does this artifact compute what PyTorch computed": the build host
# (edgeslm.verify) and the device (parity below) both call compare_outputs, so they cannot disagree.
TOP1_MARGIN = 0.1  # top-1 is judged only where PyTorch's top-2 logits differ by at least this (nats;
# 0.1 is a 52.5% / 47.5% split of two classes): near-ties flip legitimately under int8


def output_rows(task: str, out, mask):
    """The vectors that are compared: one per batch row (embedding, classification) or one per real,
    unpadded token position (fill-mask)."""
    import numpy as np

    out = np.asarray(out, dtype=np.float64)
    if TASKS[task].per_position:
        keep = np.asarray(mask).astype(bool).reshape(-1)
        return out.reshape(-1, out.shape[-1])[keep]
    return out.reshape(-1, out.shape[-1])


def row_cosines(a, b):
    import numpy as np

    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    both = (na > 0) & (nb > 0)
    out = np.where(both, dots / np.where(both, na * nb, 1.0), 0.0)
    same = (na == 0) & (nb == 0)
    return np.where(same, 1.0, out)


def _softmax(x):
    import numpy as np

    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def centered_cosine(ref, out) -> float:
    """Cosine between the artifact's and PyTorch's deviations from their own mean output over all rows:
    1 when the artifact responds to its inputs as PyTorch does, 0 for a constant (input-independent)
    output, whatever that constant is."""
    import numpy as np

    rc, oc = ref - ref.mean(axis=0), out - out.mean(axis=0)
    d = float(np.linalg.norm(rc) * np.linalg.norm(oc))
    if d == 0.0:
        return 1.0 if not np.any(rc) and not np.any(oc) else 0.0
    return float((rc * oc).sum() / d)


def compare_outputs(task: str, refs: list, outs: list, masks: list, limits: dict) -> dict:
    """Compare an artifact's outputs with PyTorch's over all samples. `limits` holds min_cosine,
    max_abs_error, min_top1_agreement, max_kl, min_centered_cosine and top1_margin (None = report only).
    Returns {"passed", "rows", "metrics": [{name, value, threshold, kind, passed}]}."""
    import numpy as np

    ref_rows, out_rows = [], []
    for ref, out, mask in zip(refs, outs, masks):
        ref, out = np.asarray(ref), np.asarray(out)
        if ref.shape != out.shape:
            raise ParityError(f"output shape {tuple(out.shape)} differs from PyTorch's {tuple(ref.shape)}")
        ref_rows.append(output_rows(task, ref, mask))
        out_rows.append(output_rows(task, out, mask))
    r, o = np.concatenate(ref_rows), np.concatenate(out_rows)
    if not np.all(np.isfinite(o)):
        bad = int((~np.isfinite(o)).any(axis=1).sum())
        return {"passed": False, "rows": int(len(r)), "metrics": [
            _check("finite_outputs", 1.0 - bad / max(len(o), 1), 1.0, "min")]}
    cos = row_cosines(r, o)
    metrics = [
        _check("cosine_min", float(cos.min()), limits.get("min_cosine"), "min"),
        _check("cosine_p5", float(np.percentile(cos, 5)), None, "min"),
        _check("cosine_mean", float(cos.mean()), None, "min"),
        _check("max_abs_error", float(np.abs(r - o).max()), limits.get("max_abs_error"), "max"),
    ]
    if len(r) >= 3:
        metrics.append(_check("centered_cosine", centered_cosine(r, o), limits.get("min_centered_cosine"), "min"))
    if TASKS[task].logits:
        pr, po = _softmax(r), _softmax(o)
        kl = (pr * (np.log(np.clip(pr, 1e-30, None)) - np.log(np.clip(po, 1e-30, None)))).sum(axis=1)
        metrics += [_check("kl_max", float(kl.max()), limits.get("max_kl"), "max"),
                    _check("kl_mean", float(kl.mean()), None, "max"),
                    _check("prob_max_abs_error", float(np.abs(pr - po).max()), None, "max")]
        margin = limits.get("top1_margin")
        margin = TOP1_MARGIN if margin is None else margin
        top2 = np.sort(r, axis=1)[:, -2:] if r.shape[1] > 1 else np.concatenate([r, r - np.inf], axis=1)
        clear = (top2[:, 1] - top2[:, 0]) >= margin
        metrics.append(_check("top1_clear_rows", float(clear.sum()), None, "min"))
        if clear.any():
            agree = float((r[clear].argmax(1) == o[clear].argmax(1)).mean())
            metrics.append(_check("top1_agreement", agree, limits.get("min_top1_agreement"), "min"))
    return {"passed": all(m["passed"] is not False for m in metrics), "rows": int(len(r)), "metrics": metrics}


def _check(name: str, value: float, threshold, kind: str) -> dict:
    ok = None if threshold is None else bool(value >= threshold if kind == "min" else value <= threshold)
    return {"name": name, "value": float(value), "threshold": threshold, "kind": kind if threshold is not None
            else "info", "passed": ok}


def nearest_centroid(embeddings, centroids):
    """Class of each (normalised) embedding: the centroid with the highest cosine."""
    import numpy as np

    e = np.asarray(embeddings, dtype=np.float64)
    e = e / np.clip(np.linalg.norm(e, axis=1, keepdims=True), 1e-12, None)
    return (e @ np.asarray(centroids, dtype=np.float64).T).argmax(1)


def task_metric(metric: str, predicted, targets, classes: int) -> dict:
    """Accuracy and macro-F1 of class predictions; `value` is the one `metric` names. Also per class (by class id):
    precision, recall, F1 and support, and the confusion matrix (rows: true class, columns: predicted)."""
    import numpy as np

    pred, true = np.asarray(predicted).reshape(-1), np.asarray(targets).reshape(-1)
    acc = float((pred == true).mean()) if true.size else 0.0
    f1s, per_class = [], []
    for k in range(classes):
        tp = int(((pred == k) & (true == k)).sum())
        fp = int(((pred == k) & (true != k)).sum())
        fn = int(((pred != k) & (true == k)).sum())
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
        if f1 is not None:
            f1s.append(f1)
        per_class.append({"precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None,
                          "f1": f1, "support": tp + fn})
    confusion = [[int(((true == i) & (pred == j)).sum()) for j in range(classes)] for i in range(classes)]
    macro = float(sum(f1s) / len(f1s)) if f1s else 0.0
    value = acc if metric == "accuracy" else macro
    return {"metric": metric, "value": value, "accuracy": acc, "macro_f1": macro, "n": int(true.size),
            "per_class": per_class, "confusion": confusion}


def log_softmax(x):
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def compare_next_tokens(ref_logits, out_logits, targets, limits: dict) -> dict:
    """Teacher-forced next-token logits ([positions, vocab]) of an artifact against PyTorch's on the same
    text; `targets` are the tokens that follow each position. Metrics: KL(PyTorch || artifact) per
    position (mean gated by max_kl, max reported), top-1 agreement where PyTorch's top-2 logits differ
    by at least top1_margin, top-5 agreement (PyTorch's top token among the artifact's five), and the
    perplexity of both on the targets (relative increase gated by max_perplexity_increase).
    Returns the same shape as compare_outputs."""
    import numpy as np

    r, o = np.asarray(ref_logits, dtype=np.float64), np.asarray(out_logits, dtype=np.float64)
    if r.shape != o.shape:
        raise ParityError(f"logits shape {tuple(o.shape)} differs from PyTorch's {tuple(r.shape)}")
    if not np.all(np.isfinite(o)):
        bad = int((~np.isfinite(o)).any(axis=1).sum())
        return {"passed": False, "rows": int(len(r)),
                "metrics": [_check("finite_outputs", 1.0 - bad / max(len(o), 1), 1.0, "min")]}
    lr, lo = log_softmax(r), log_softmax(o)
    kl = (np.exp(lr) * (lr - lo)).sum(axis=1)
    top = np.argsort(-r, axis=1)[:, :2]
    gap = r[np.arange(len(r)), top[:, 0]] - r[np.arange(len(r)), top[:, 1]]
    clear = gap >= limits.get("top1_margin", TOP1_MARGIN)
    same = top[:, 0] == o.argmax(axis=1)
    top5 = np.argsort(-o, axis=1)[:, :5]
    in5 = (top5 == top[:, [0]]).any(axis=1)
    t = np.asarray(targets).reshape(-1)
    idx = np.arange(len(t))
    ppl_ref = float(np.exp(-lr[idx, t].mean()))
    ppl_out = float(np.exp(-lo[idx, t].mean()))
    metrics = [
        _check("kl_mean", float(kl.mean()), limits.get("max_kl"), "max"),
        _check("kl_max", float(kl.max()), None, "max"),
        _check("top1_agreement", float(same[clear].mean()) if clear.any() else 1.0,
               limits.get("min_top1_agreement"), "min"),
        _check("top1_clear_rows", float(clear.sum()), None, "min"),
        _check("top5_agreement", float(in5.mean()), limits.get("min_top5_agreement"), "min"),
        _check("perplexity_reference", ppl_ref, None, "max"),
        _check("perplexity", ppl_out, None, "max"),
        _check("perplexity_increase", ppl_out / ppl_ref - 1.0, limits.get("max_perplexity_increase"), "max"),
    ]
    return {"passed": all(m["passed"] is not False for m in metrics), "rows": int(len(r)), "metrics": metrics}


def common_prefix(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
