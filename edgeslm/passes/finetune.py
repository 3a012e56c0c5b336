"""Fine-tune a sequence classifier on the recipe's data, on the CPU (also the recovery step of prune).

AdamW with a linear warm-up (6%) and decay, batches of shuffled texts padded to their longest, optional
distillation from a teacher (the model before compression: KL between temperature-softened
distributions, mixed with cross-entropy on the labels). With `eval_each_epoch` the eval split is scored
after every epoch and the best weights are kept. What happened goes into the manifest.
"""

from __future__ import annotations

import copy
import math
import random
import time

import numpy as np
import torch

from edgeslm.config.passes import FinetuneConfig, TrainingSpec

WARMUP = 0.06


def run(ctx, cfg: FinetuneConfig) -> dict:
    dataset = ctx.datasets(cfg.dataset)
    teacher = ctx.teacher if cfg.distill == "teacher" else None
    return train(ctx.model, dataset, cfg, ctx.max_len(cfg.max_seq_len), teacher, ctx.progress, "finetune")


def _batches(model, texts, labels, size, max_len, rng):
    order = list(range(len(texts)))
    rng.shuffle(order)
    for k in range(0, len(order), size):
        idx = order[k:k + size]
        enc = model.tokenizer([texts[i] for i in idx], truncation=True, max_length=max_len, padding=True,
                              return_tensors="pt")
        names = [n for n in model.input_names if n in enc]
        yield {n: enc[n] for n in names}, torch.tensor([labels[i] for i in idx])


@torch.no_grad()
def accuracy(model, texts, labels, max_len, batch=32) -> float:
    hf = model.hf
    was = hf.training
    hf.eval()
    hits = 0
    for k in range(0, len(texts), batch):
        enc = model.tokenizer(texts[k:k + batch], truncation=True, max_length=max_len, padding=True,
                              return_tensors="pt")
        logits = hf(**{n: enc[n] for n in model.input_names if n in enc}).logits
        hits += int((logits.argmax(-1) == torch.tensor(labels[k:k + batch])).sum())
    hf.train(was)
    return hits / max(1, len(texts))


def train(model, dataset, cfg: TrainingSpec, max_len: int, teacher=None, progress=lambda m: None,
          what: str = "finetune") -> dict:
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    hf = model.hf
    params = ([p for n, p in hf.named_parameters() if _is_head(hf, n)] if cfg.train == "head"
              else list(hf.parameters()))
    for p in hf.parameters():
        p.requires_grad_(cfg.train == "full" or any(p is q for q in params))
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.learning_rate)
    per_epoch = math.ceil(len(dataset.train) / cfg.batch_size)
    total = math.ceil(per_epoch * cfg.epochs)
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    warm = max(1, int(WARMUP * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    t_hf = teacher.hf if teacher is not None else None
    if t_hf is not None:
        t_hf.eval()
    history, best, best_state, step = [], -1.0, None, 0
    texts, labels = dataset.train.texts, dataset.train.labels
    epoch = 0
    hf.train()
    while step < total:
        epoch += 1
        losses = []
        for inputs, target in _batches(model, texts, labels, cfg.batch_size, max_len, rng):
            logits = hf(**inputs).logits
            loss = torch.nn.functional.cross_entropy(logits, target)
            if t_hf is not None:
                with torch.no_grad():
                    t_logits = t_hf(**inputs).logits
                tmp = cfg.temperature
                kd = torch.nn.functional.kl_div(torch.log_softmax(logits / tmp, -1), torch.softmax(t_logits / tmp, -1),
                                                reduction="batchmean") * tmp * tmp
                loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss))
            step += 1
            if step >= total:
                break
        entry = {"epoch": epoch, "steps": step, "train_loss": round(float(np.mean(losses)), 5)}
        if cfg.eval_each_epoch and len(dataset.eval):
            acc = accuracy(model, dataset.eval.texts, dataset.eval.labels, max_len)
            entry["eval_accuracy"] = round(acc, 5)
            if acc > best:
                best, best_state = acc, copy.deepcopy(hf.state_dict())
                entry["best"] = True
        history.append(entry)
        progress(f"{what} epoch {epoch}: loss {entry['train_loss']:.4f}"
                 + (f", eval accuracy {entry['eval_accuracy']:.4f}" if "eval_accuracy" in entry else ""))
    if best_state is not None:
        hf.load_state_dict(best_state)
    for p in hf.parameters():
        p.requires_grad_(False)
    hf.eval()
    kept = max(history, key=lambda e: e.get("eval_accuracy", -1))["epoch"] if best_state is not None else epoch
    return {"dataset": dataset.name, "train_texts": len(texts), "epochs_run": epoch, "steps": step,
            "kept_epoch": kept, "history": history, "distilled": t_hf is not None, "train": cfg.train,
            "seconds": round(time.perf_counter() - t0, 1)}


def _is_head(hf, name: str) -> bool:
    """Parameters of the classification head (not of the encoder the model is built on)."""
    base = getattr(hf, "base_model_prefix", "")
    return not name.startswith(base + ".") if base else name.startswith(("classifier", "pre_classifier"))
