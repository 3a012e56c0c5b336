"""Compare an artifact's outputs with eager PyTorch on the build host.

The maths is the device runner's own `compare_outputs` (stdlib + numpy), so the verdict on the build
host and the parity check on the device are computed the same way. Per task:

- every task: cosine per output vector (minimum gated, 5th percentile and mean reported), largest
  absolute error, and the *centred cosine*: how the artifact's outputs vary across inputs compared with
  how PyTorch's do. A constant or input-independent output scores 0 there even when its cosine to each
  reference is 0.9999 (the mean logits of a classifier do that).
- logits (sequence-classification, fill-mask): KL divergence of the probabilities (largest gated),
  largest probability error, and top-1 agreement counted only where PyTorch's top-2 logits differ
  by at least `top1_margin` (near-ties flip legitimately under int8).
"""

from __future__ import annotations

import numpy as np

from edgeslm.artifacts.manifest import Metric, Verification
from edgeslm.config.recipe import VerifySpec
from edgeslm.contract.parity import TOP1_MARGIN, compare_outputs
from edgeslm.contract.tasks import TASKS

FLOAT_DEFAULTS = {"min_cosine": 0.9999, "max_abs_error": 1e-3, "min_top1_agreement": 1.0, "max_kl": 1e-4,
                  "min_centered_cosine": 0.999, "top1_margin": TOP1_MARGIN}
INT8_DEFAULTS = {"min_cosine": 0.99, "max_abs_error": None, "min_top1_agreement": 0.9, "max_kl": 0.05,
                 "min_centered_cosine": 0.9, "top1_margin": TOP1_MARGIN}


def thresholds(spec: VerifySpec, quantized: bool, task: str = "embedding") -> dict[str, float | None]:
    """Limits from [verify], else the defaults for the precision. A classifier's few logits make cosine a
    poor judge (one low-confidence text with logits near zero scores 0.95 under int8 while its
    probabilities move by 0.03): there, probabilities (KL), top-1 and centred cosine are gated and cosine
    only reported, unless the recipe sets min_cosine."""
    base = dict(INT8_DEFAULTS if quantized else FLOAT_DEFAULTS)
    if TASKS[task].labelled:
        base["min_cosine"] = None
    return {k: (getattr(spec, k) if getattr(spec, k) is not None else v) for k, v in base.items()}


def compare(task: str, reference: list[np.ndarray], actual: list[np.ndarray],
            masks: list[np.ndarray], limits: dict[str, float | None], runtime: str) -> Verification:
    """One sample (a batch of `inputs.batch_size` rows) per list entry."""
    result = compare_outputs(task, reference, actual, masks, limits)
    metrics = [Metric(name=m["name"], value=m["value"], threshold=m["threshold"], kind=m["kind"],
                      passed=m["passed"]) for m in result["metrics"]]
    seq_lens = [int(n) for m in masks for n in np.asarray(m).sum(axis=-1).reshape(-1)]
    return Verification(passed=result["passed"], samples=len(reference), seq_lens=seq_lens,
                        metrics=metrics, runtime=runtime)


def describe_failure(v: Verification | None, label: str = "") -> str:
    bad = [m for m in (v.metrics if v is not None else []) if m.passed is False]
    return ", ".join(f"{m.name}{' ' + label if label else ''} {m.value:.5g} {'<' if m.kind == 'min' else '>'} "
                     f"{m.threshold:g}" for m in bad)


# ------------------------------------------------------------------------------ verification inputs
UNK_LIMIT = 0.3  # share of [UNK] among real tokens above which texts and tokenizer do not fit


def verification_texts(loaded) -> list[str]:
    """The recipe's texts (or the bundled short and long English texts), plus one text made of all of
    them joined, so that verification always reaches the recipe's max_seq_len when it can."""
    from edgeslm.texts import builtin_texts, read_texts

    v = loaded.recipe.verify
    if v.texts is not None:
        texts = list(v.texts)
    elif v.texts_file is not None:
        texts = read_texts(loaded.resolve_path(v.texts_file), file=str(loaded.path), key="verify.texts_file")
    else:
        short, long = builtin_texts("verify_texts"), builtin_texts("verify_long_texts")
        return short + long + [" ".join(long)]
    return texts + [" ".join(texts)]


def batched(texts: list[str], batch_size: int) -> list[list[str]]:
    """Groups of exactly `batch_size` texts (the last one filled up from the start): a fixed-batch
    program (ExecuTorch) is verified with the batch it was exported for."""
    if batch_size <= 1:
        return [[t] for t in texts]
    padded = list(texts)
    i = 0
    while len(padded) % batch_size:
        padded.append(texts[i % len(texts)])
        i += 1
    return [padded[k:k + batch_size] for k in range(0, len(padded), batch_size)]


def unk_share(tokenizer, samples: list[dict]) -> float:
    """Share of real (unpadded, non-special) tokens that are the tokenizer's unknown token."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return 0.0
    special = set(getattr(tokenizer, "all_special_ids", []) or []) - {unk}
    total = hits = 0
    for s in samples:
        ids = np.asarray(s["input_ids"])[np.asarray(s["attention_mask"]).astype(bool)]
        real = ids[~np.isin(ids, list(special))] if special else ids
        total += real.size
        hits += int((real == unk).sum())
    return hits / total if total else 0.0


def check_unk(tokenizer, samples: list[dict], what: str, spec: str) -> None:
    from edgeslm.errors import ModelSourceError

    share = unk_share(tokenizer, samples)
    if share > UNK_LIMIT:
        raise ModelSourceError(
            f"model source {spec!r}: the {what} are {share:.0%} unknown tokens ({tokenizer.unk_token}) for this "
            "model's tokenizer: the tokenizer does not fit the model or the texts (check the tokenizer files, "
            "or give texts in the model's language)")
