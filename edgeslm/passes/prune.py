"""Structured pruning of encoder models: whole attention heads and FFN neurons, by measured importance.

Removed heads and neurons are cut out of the weight matrices (q/k/v rows, output-projection columns;
FFN up-projection rows and down-projection columns), so every runtime executes smaller matrix products:
this is speed on a CPU, unlike unstructured sparsity, which XNNPACK and onnxruntime's CPU kernels run as
dense. Importance is first-order Taylor (|sum of activation x gradient of the task loss| per head or
neuron and text, as in Michel et al. 2019 and Molchanov et al. 2019) or mean |activation|. Every layer
loses the same share. ALBERT's layers share one set of weights: that set is pruned once, with importance
summed over every layer that uses it. A short fine-tune (optionally distilled from the unpruned model)
recovers what pruning cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from edgeslm.config.passes import PruneConfig
from edgeslm.passes.base import PassError


@dataclass
class Attention:
    q: torch.nn.Linear
    k: torch.nn.Linear
    v: torch.nn.Linear
    o: torch.nn.Linear  # its input is the heads' outputs, concatenated
    head_dim: int
    owner: torch.nn.Module  # carries num_attention_heads / n_heads


@dataclass
class FFN:
    up: torch.nn.Linear
    down: torch.nn.Linear  # its input is the neurons' activations


def structure(hf) -> tuple[list[Attention], list[FFN]]:
    """The attention blocks and FFNs of a BERT, DistilBERT, ALBERT or MobileBERT model (each shared
    module once)."""
    base = hf.base_model
    kind = hf.config.model_type
    attn, ffn = [], []
    if kind in ("bert", "mobilebert"):
        for layer in base.encoder.layer:
            s = layer.attention.self
            attn.append(Attention(s.query, s.key, s.value, layer.attention.output.dense, s.attention_head_size, s))
            ffn.append(FFN(layer.intermediate.dense, layer.output.dense))
            for extra in getattr(layer, "ffn", None) or []:  # MobileBERT's stacked feed-forward networks
                ffn.append(FFN(extra.intermediate.dense, extra.output.dense))
    elif kind == "distilbert":
        for layer in base.transformer.layer:
            a = layer.attention
            attn.append(Attention(a.q_lin, a.k_lin, a.v_lin, a.out_lin, a.attention_head_size, a))
            ffn.append(FFN(layer.ffn.lin1, layer.ffn.lin2))
    elif kind == "albert":
        for group in base.encoder.albert_layer_groups:
            for layer in group.albert_layers:
                a = layer.attention
                attn.append(Attention(a.query, a.key, a.value, a.dense, a.attention_head_size, a))
                ffn.append(FFN(layer.ffn, layer.ffn_output))
    else:
        raise PassError(f"prune: architecture {kind!r} is not supported (bert, distilbert, albert, mobilebert)")
    return attn, ffn


def run(ctx, cfg: PruneConfig) -> dict:
    from edgeslm.passes.finetune import train

    t0 = time.perf_counter()
    model = ctx.model
    dataset = ctx.datasets(cfg.dataset)
    attn, ffn = structure(model.hf)
    before = _counts(attn, ffn, model.hf)
    scores = importance(model, dataset, cfg, ctx.max_len(), attn, ffn)
    removed_heads = removed_neurons = 0
    for a in attn:
        if cfg.heads > 0:
            removed_heads += prune_heads(a, scores[id(a.o)], cfg.heads)
    for f in ffn:
        if cfg.ffn > 0:
            removed_neurons += prune_neurons(f, scores[id(f.down)], cfg.ffn)
    after = _counts(attn, ffn, model.hf)
    facts = {"importance": cfg.importance, "importance_texts": min(cfg.importance_samples, len(dataset.train)),
             "heads": {"before": before["heads"], "after": after["heads"]},
             "ffn_neurons": {"before": before["ffn"], "after": after["ffn"]},
             "parameters": {"before": before["params"], "after": after["params"]},
             "seconds_pruning": round(time.perf_counter() - t0, 1)}
    ctx.progress(f"pruned {before['heads'] - after['heads']} of {before['heads']} heads, "
                 f"{before['ffn'] - after['ffn']} of {before['ffn']} FFN neurons; parameters "
                 f"{_count(before['params'])} -> {_count(after['params'])}")
    if cfg.recovery is not None:
        from edgeslm.passes.finetune import teacher_for

        teacher = teacher_for(ctx, cfg.recovery)
        facts["recovery"] = train(model, ctx.datasets(cfg.recovery.dataset or cfg.dataset), cfg.recovery,
                                  ctx.max_len(cfg.recovery.max_seq_len), teacher, ctx.progress, "recovery")
    return facts


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def _counts(attn: list[Attention], ffn: list[FFN], hf) -> dict:
    return {"heads": sum(a.q.out_features // a.head_dim for a in attn),
            "ffn": sum(f.up.out_features for f in ffn),
            "params": sum(p.numel() for p in hf.parameters())}


def importance(model, dataset, cfg: PruneConfig, max_len: int, attn: list[Attention], ffn: list[FFN]) -> dict:
    """Per head (keyed by id of its output projection) and per FFN neuron (keyed by id of the down
    projection): summed importance over `importance_samples` train texts."""
    hf = model.hf
    watched = {id(a.o): a.o for a in attn} | {id(f.down): f.down for f in ffn}
    scores = {k: torch.zeros(m.in_features, dtype=torch.float64) for k, m in watched.items()}
    taylor = cfg.importance == "taylor"
    captured: list[tuple[int, torch.Tensor]] = []

    def hook(mod, args):
        x = args[0]
        if taylor:
            x.retain_grad()
        captured.append((id(mod), x))

    handles = [m.register_forward_pre_hook(hook) for m in watched.values()]
    was = hf.training
    hf.eval()
    saved_grad = {n: p.requires_grad for n, p in hf.named_parameters()}
    for p in hf.parameters():
        p.requires_grad_(False)
    texts = dataset.train.texts[: cfg.importance_samples]
    labels = dataset.train.labels[: cfg.importance_samples]
    try:
        for k in range(0, len(texts), 8):
            enc = model.tokenizer(texts[k:k + 8], truncation=True, max_length=max_len, padding=True,
                                  return_tensors="pt")
            inputs = {n: enc[n] for n in model.input_names if n in enc}
            mask = inputs["attention_mask"].to(torch.float64)[..., None]
            captured.clear()
            with torch.set_grad_enabled(taylor):
                if taylor:
                    emb = hf.get_input_embeddings()
                    emb.weight.requires_grad_(True)  # a leaf so the graph reaches the activations
                    out = hf(**inputs).logits
                    torch.nn.functional.cross_entropy(out, torch.tensor(labels[k:k + 8])).backward()
                    emb.weight.requires_grad_(False)
                    emb.weight.grad = None
                else:
                    hf(**inputs)
            for key, x in captured:
                xd = x.detach().to(torch.float64)
                if taylor:
                    contrib = (xd * x.grad.to(torch.float64) * mask).sum(1)  # [B, C]
                else:
                    contrib = (xd.abs() * mask).sum(1) / mask.sum(1).clamp(min=1)
                scores[key] += _per_unit(contrib, key, attn)
    finally:
        for h in handles:
            h.remove()
        for n, p in hf.named_parameters():
            p.requires_grad_(saved_grad[n])
        hf.train(was)
    return scores


def _per_unit(contrib: torch.Tensor, key: int, attn: list[Attention]) -> torch.Tensor:
    """Importance per channel: for an attention output projection, the head's channels get its score
    (|sum over the head|, per text); for an FFN, |per neuron|, per text."""
    head = next((a for a in attn if id(a.o) == key), None)
    if head is None:
        return contrib.abs().sum(0)
    b, c = contrib.shape
    per_head = contrib.reshape(b, c // head.head_dim, head.head_dim).sum(-1).abs().sum(0)
    return per_head.repeat_interleave(head.head_dim)


def _keep_top(score: torch.Tensor, n: int, share: float) -> torch.Tensor:
    keep = max(1, n - round(share * n))
    return torch.sort(torch.topk(score, keep).indices).values


def prune_heads(a: Attention, channel_scores: torch.Tensor, share: float) -> int:
    heads = a.q.out_features // a.head_dim
    per_head = channel_scores.reshape(heads, a.head_dim)[:, 0]
    kept = _keep_top(per_head, heads, share)
    if len(kept) == heads:
        return 0
    cut_heads(a, kept)
    return heads - len(kept)


def cut_heads(a: Attention, kept: torch.Tensor) -> None:
    """Keep only the heads `kept` (indices): q/k/v rows, output-projection columns, the owner's head count."""
    channels = (kept[:, None] * a.head_dim + torch.arange(a.head_dim)[None, :]).reshape(-1)
    for lin in (a.q, a.k, a.v):
        _rows(lin, channels)
    _cols(a.o, channels)
    for attr in ("num_attention_heads", "n_heads"):
        if hasattr(a.owner, attr):
            setattr(a.owner, attr, len(kept))
    if hasattr(a.owner, "all_head_size"):
        a.owner.all_head_size = len(kept) * a.head_dim


def prune_neurons(f: FFN, scores: torch.Tensor, share: float) -> int:
    n = f.up.out_features
    kept = _keep_top(scores, n, share)
    if len(kept) == n:
        return 0
    _rows(f.up, kept)
    _cols(f.down, kept)
    return n - len(kept)


def fit_to(hf, state: dict) -> None:
    """Give an unpruned model the pruned shapes a cached state dict holds (head counts and FFN widths), so the
    state loads into it: which heads and neurons were kept does not matter, the weights are all replaced."""
    names = {id(m): n for n, m in hf.named_modules()}
    attn, ffn = structure(hf)
    for a in attn:
        rows = state.get(f"{names[id(a.q)]}.weight")
        if rows is not None and rows.shape[0] != a.q.out_features:
            cut_heads(a, torch.arange(rows.shape[0] // a.head_dim))
    for f in ffn:
        rows = state.get(f"{names[id(f.up)]}.weight")
        if rows is not None and rows.shape[0] != f.up.out_features:
            idx = torch.arange(rows.shape[0])
            _rows(f.up, idx)
            _cols(f.down, idx)


def _rows(lin: torch.nn.Linear, idx: torch.Tensor) -> None:
    lin.weight = torch.nn.Parameter(lin.weight.detach()[idx].clone(), requires_grad=False)
    if lin.bias is not None:
        lin.bias = torch.nn.Parameter(lin.bias.detach()[idx].clone(), requires_grad=False)
    lin.out_features = len(idx)


def _cols(lin: torch.nn.Linear, idx: torch.Tensor) -> None:
    lin.weight = torch.nn.Parameter(lin.weight.detach()[:, idx].clone(), requires_grad=False)
    lin.in_features = len(idx)
