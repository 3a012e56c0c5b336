"""`edgeslm eval BUILD --text FILE`: a decoder build's files scored on the user's own text against the model they were
made from, as llama.cpp's `llama-perplexity --kl-divergence` scores a quantized file against its source.

The text is cut into whole windows of `context` tokens, as llama-perplexity cuts its chunks; in each, the tokens
after the first half (from context / 2 + 1, llama-perplexity's own) are scored, the ones before them prefilled,
and the scored ones fed back one at a time (the decode path runs, as in generation). The same text and context
thus score the same tokens as `llama-perplexity -c CONTEXT` (a vocabulary that adds a BOS token aside). Per
artifact: the perplexity of the file and of the source model with their standard errors, the change between them
(the mean of the per-token log-ratio, with its standard error), the KL divergence of the file's next-token
distribution from the source's (mean, 99th percentile, max), how often their top tokens agree (top-1) and how often
the source's top token is among the file's five (top-5). The files run as the device runs them, each in a process
of its own without torch (formats.isolated); the source model runs in transformers (a GGUF source: the model the
file holds, dequantized). A window's logits are compared and dropped before the next: memory stays one window.
"""

from __future__ import annotations

from contextlib import contextmanager

import math
from pathlib import Path

import numpy as np

from edgeslm.errors import UserError



def windows(ids: list, size: int) -> list[list]:
    """Consecutive whole windows of `size` tokens, as llama-perplexity cuts its chunks (the rest is left out)."""
    return [ids[i:i + size] for i in range(0, len(ids) - size + 1, size)]


def scored_from(size: int) -> int:
    """The first scored position of a window: llama-perplexity's, the token after the first half (n_ctx / 2 + 1),
    so that the same tokens are scored as there and the figures can be set side by side."""
    return size // 2 + 1


def token_scores(ref: np.ndarray, art: np.ndarray, targets: np.ndarray) -> dict:
    """Per scored token: negative log-likelihood of the target under both, KL(source || artifact), top-1 and
    top-5 agreement."""
    from edgeslm.contract.parity import log_softmax

    lr, la = log_softmax(ref), log_softmax(art)
    rows = np.arange(len(targets))
    top_ref = lr.argmax(1)
    top5 = np.argpartition(-la, 5, axis=1)[:, :5] if la.shape[1] > 5 else np.argsort(-la, axis=1)
    return {"nll_ref": -lr[rows, targets], "nll_art": -la[rows, targets],
            "kl": (np.exp(lr) * (lr - la)).sum(1), "top1": top_ref == la.argmax(1),
            "top5": (top5 == top_ref[:, None]).any(1)}


def summary(scores: dict) -> dict:
    """Perplexities with standard errors, the change, KL and agreement over every scored token."""
    n = len(scores["kl"])
    se = (lambda x: float(np.std(x, ddof=1) / math.sqrt(n)) if n > 1 else float("nan"))  # noqa: E731
    ref, art = scores["nll_ref"], scores["nll_art"]
    ppl_ref, ppl_art = math.exp(ref.mean()), math.exp(art.mean())
    ratio = float((art - ref).mean())
    return {"tokens": n, "perplexity": ppl_art, "perplexity_se": ppl_art * se(art),
            "source_perplexity": ppl_ref, "source_perplexity_se": ppl_ref * se(ref),
            "perplexity_change": math.exp(ratio) - 1, "perplexity_change_se": math.exp(ratio) * se(art - ref),
            "kl_mean": float(scores["kl"].mean()), "kl_mean_se": se(scores["kl"]),
            "kl_p99": float(np.percentile(scores["kl"], 99)), "kl_max": float(scores["kl"].max()),
            "top1_agreement": float(scores["top1"].mean()), "top5_agreement": float(scores["top5"].mean())}


def evaluate(folder: Path, text_file: Path, artifacts=(), context: int | None = None, source: str | None = None,
             log=print, open_steps=None) -> dict:
    """Score the build in `folder` on `text_file` (see the module). `open_steps(folder, manifest, artifacts)`: a
    context manager giving {artifact name: step} (default host_steps: this machine; profiling.device_eval's:
    a device; its `where` names it). Returns {"build", "text", "windows", "window", "source", "where",
    "artifacts": {name: summary and "runtime"}}."""
    from edgeslm.artifacts.manifest import check_files, load_manifest
    from edgeslm.contract.decoding import teacher_forced
    from edgeslm.inputs import InputError, read_text
    from edgeslm.tasks import task_unit

    manifest = load_manifest(folder)
    if not task_unit(manifest.task).generates:
        raise UserError(f"{folder}: eval scores text-generation builds; this one is {manifest.task}")
    check_files(folder, manifest)
    have = [a.name for a in manifest.artifacts]
    for a in artifacts:
        if a not in have:
            raise UserError(f"{folder} has no artifact {a!r}; it has: {', '.join(have)}")
    chosen = [a for a in manifest.artifacts if not artifacts or a.name in artifacts]
    try:
        text = read_text(Path(text_file), "text")
    except InputError as exc:
        raise UserError(str(exc)) from None
    tokenizer = _tokenizer(folder)
    ids = [int(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"]]
    max_context, chunk = int(manifest.shapes["max_context"]), int(manifest.shapes["max_prompt"])
    size = min(context or 512, max_context)
    if context is not None and context > max_context:
        raise UserError(f"--context {context} is longer than the build's KV cache ({max_context} positions)")
    parts = windows(ids, size)
    if len(parts) < 2:
        raise UserError(f"{text_file}: {len(ids)} tokens, fewer than two windows of {size}; give a longer text (at "
                        f"least {2 * size} tokens) or a shorter --context")
    model, where = _source_model(manifest, source)
    from edgeslm.verify.decoders import hf_step

    ref_step = hf_step(model)
    scores: dict[str, list] = {a.name: [] for a in chosen}
    with (open_steps or host_steps)(folder, manifest, chosen) as steps:
        runtimes = {name: getattr(step, "runtime", None) for name, step in steps.items()}
        for i, w in enumerate(parts):
            first = scored_from(len(w))
            targets = np.asarray(w[first:])
            ref = teacher_forced(ref_step, w, first, chunk)
            for name, step in steps.items():
                scores[name].append(token_scores(ref, teacher_forced(step, w, first, chunk), targets))
            if (i + 1) % max(1, len(parts) // 10) == 0 or i + 1 == len(parts):
                log(f"{i + 1}/{len(parts)} windows scored")
    merged = {name: {**summary({k: np.concatenate([s[k] for s in parts_]) for k in parts_[0]}),
                     "runtime": runtimes.get(name)} for name, parts_ in scores.items()}
    return {"build": {"recipe": manifest.recipe.name, "target": manifest.target["name"],
                      "cache_key": manifest.cache_key}, "text": str(text_file), "text_tokens": len(ids),
            "windows": len(parts), "window": size, "source": where, "where": getattr(open_steps, "where", "host"),
            "artifacts": merged}


@contextmanager
def host_steps(folder: Path, manifest, chosen):
    """{artifact name: step} of each chosen file run as the device runs it, here (formats/isolated.py)."""
    from edgeslm.formats.isolated import isolated_step

    steps = {}
    try:
        for a in chosen:
            steps[a.name] = isolated_step(a.format, folder / a.file, a.export, int(manifest.shapes["max_context"]))
        yield steps
    finally:
        for step in steps.values():
            step.close()


def _tokenizer(folder: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{folder}/tokenizer: cannot load the build's tokenizer ({str(exc)[:160]}); rebuild it") from None


def _source_model(manifest, source: str | None):
    """The model the build was made from: `source` (a folder, a .gguf or a hub id) when given, else the
    manifest's model.source resolved from the recipe's folder."""
    from edgeslm.models.causal_lm import load_causal_lm
    from edgeslm.models.sources import resolve_source

    spec = source or manifest.model.get("source")
    base = Path(manifest.recipe.path).parent if source is None and manifest.recipe.path else Path.cwd()
    try:
        resolved = resolve_source(str(spec), base, None if source else manifest.model.get("revision"))
    except UserError as exc:
        raise UserError(f"the build's source model cannot be found ({exc}); give it with --source") from None
    trust = bool((manifest.recipe.content.get("model") or {}).get("trust_remote_code"))
    _, model = load_causal_lm(resolved, trust)
    return model.eval(), str(spec)
