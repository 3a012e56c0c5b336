"""Fine-tune a sequence classifier on the recipe's data, on the CPU (also the recovery step of prune).

AdamW with a linear warm-up (6%) and decay, batches of shuffled texts padded to their longest, optional class
weights and distillation from a teacher (the model before compression: KL between temperature-softened
distributions, mixed with cross-entropy on the labels). With `eval_each_epoch` the validation split (held out
of the train texts) is scored after every epoch (accuracy and loss), the best weights are kept and `patience`
stops early; the eval split, which the build reports, never picks. Progress is said within epochs too. What
happened (the curves included) goes into the manifest.
"""

from __future__ import annotations

import copy
import math
import random
import time

import numpy as np
import torch

from edgeslm.config.passes import FinetuneConfig, TrainingSpec
from edgeslm.contract.stats import duration

WARMUP = 0.06
PROGRESS_EVERY = 20.0  # seconds between progress lines within an epoch


def run(ctx, cfg: FinetuneConfig) -> dict:
    dataset = ctx.datasets(cfg.dataset)
    teacher = teacher_for(ctx, cfg)
    return train(ctx.model, dataset, cfg, ctx.max_len(cfg.max_seq_len), teacher, ctx.progress, "finetune")


def teacher_for(ctx, cfg: TrainingSpec):
    """The model a training step distils from: none, the model before compression, or an external one."""
    if cfg.distill != "teacher":
        return None
    if cfg.teacher:
        return ctx.load_teacher(cfg.teacher)
    return ctx.teacher


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
def scored(model, texts, labels, max_len, batch=32) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the model on labelled texts."""
    hf = model.hf
    was = hf.training
    hf.eval()
    hits, loss = 0, 0.0
    for k in range(0, len(texts), batch):
        enc = model.tokenizer(texts[k:k + batch], truncation=True, max_length=max_len, padding=True,
                              return_tensors="pt")
        logits = hf(**{n: enc[n] for n in model.input_names if n in enc}).logits
        target = torch.tensor(labels[k:k + batch])
        hits += int((logits.argmax(-1) == target).sum())
        loss += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
    hf.train(was)
    return hits / max(1, len(texts)), loss / max(1, len(texts))


def accuracy(model, texts, labels, max_len, batch=32) -> float:
    return scored(model, texts, labels, max_len, batch)[0]


def class_weights(labels: list[int], classes: int) -> torch.Tensor:
    """total / (classes x count) per class (a class absent from the train texts gets weight 0)."""
    counts = np.bincount(np.asarray(labels), minlength=classes).astype(np.float64)
    w = np.where(counts > 0, len(labels) / (classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


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
    history, best, best_state, step = [], (-1.0, 0.0), None, 0
    texts, labels = dataset.train.texts, dataset.train.labels
    weights = class_weights(labels, len(dataset.labels)) if cfg.class_weights == "balanced" else None
    validation = getattr(dataset, "validation", None)
    select = cfg.eval_each_epoch and validation is not None and len(validation) > 0
    epoch, since_best, stopped_early, last_said = 0, 0, False, time.monotonic()
    epochs = math.ceil(total / per_epoch)
    hf.train()
    while step < total:
        epoch += 1
        losses, t_epoch = [], time.monotonic()
        for b, (inputs, target) in enumerate(_batches(model, texts, labels, cfg.batch_size, max_len, rng), 1):
            logits = hf(**inputs).logits
            loss = torch.nn.functional.cross_entropy(logits, target, weight=weights)
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
            now = time.monotonic()
            if now - last_said >= PROGRESS_EVERY:  # within an epoch: a count, the loss so far and an ETA
                last_said = now
                left = (now - t_epoch) / b * (min(per_epoch, total - step + b) - b)
                progress(f"{what} epoch {epoch}/{epochs}: batch {b}/{per_epoch}, loss {np.mean(losses):.4f}, "
                         f"about {duration(left)} left in this epoch")
            if step >= total:
                break
        entry = {"epoch": epoch, "steps": step, "train_loss": round(float(np.mean(losses)), 5),
                 "seconds": round(time.monotonic() - t_epoch, 1)}
        if select:
            acc, vloss = scored(model, validation.texts, validation.labels, max_len)
            entry.update(validation_accuracy=round(acc, 5), validation_loss=round(vloss, 5))
            if (acc, -vloss) > best:
                best, best_state, since_best = (acc, -vloss), copy.deepcopy(hf.state_dict()), 0
                entry["best"] = True
            else:
                since_best += 1
        history.append(entry)
        progress(f"{what} epoch {epoch}/{epochs}: loss {entry['train_loss']:.4f}"
                 + (f", validation accuracy {entry['validation_accuracy']:.4f}, loss {entry['validation_loss']:.4f}"
                    if "validation_accuracy" in entry else ""))
        if select and cfg.patience and since_best >= cfg.patience and step < total:
            stopped_early = True
            progress(f"{what}: stopped after epoch {epoch}: no better validation accuracy for {cfg.patience} epoch(s)")
            break
    if best_state is not None:
        hf.load_state_dict(best_state)
    for p in hf.parameters():
        p.requires_grad_(False)
    hf.eval()
    kept = next((e["epoch"] for e in reversed(history) if e.get("best")), epoch) if best_state is not None else epoch
    return {"dataset": dataset.name, "train_texts": len(texts), "epochs_run": epoch, "steps": step,
            "kept_epoch": kept, "picked_on": f"validation split ({len(validation)} texts held out of the train texts)"
            if select else "last epoch (no validation split)", "stopped_early": stopped_early,
            "class_weights": cfg.class_weights, "history": history, "distilled": t_hf is not None,
            "train": cfg.train, "seconds": round(time.perf_counter() - t0, 1)}


def _is_head(hf, name: str) -> bool:
    """Parameters of the classification head (not of the encoder the model is built on)."""
    base = getattr(hf, "base_model_prefix", "")
    return not name.startswith(base + ".") if base else name.startswith(("classifier", "pre_classifier"))
