"""Load a model + tokenizer for a task and wrap it as a module with plain tensor inputs/outputs."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from edgeslm.config.tasks import TASKS
from edgeslm.errors import ModelSourceError
from edgeslm.models.sources import ResolvedSource


@dataclass
class LoadedModel:
    module: "object"  # torch.nn.Module taking input_names tensors, returning one tensor
    tokenizer: "object"
    task: str
    model_type: str
    input_names: tuple[str, ...]
    output_name: str
    config: dict = field(default_factory=dict)

    @contextlib.contextmanager
    def attention(self, implementation: str):
        """Temporarily switch the attention kernel (e.g. 'edge_bmm' for XNNPACK export)."""
        configs = {id(m.config): m.config for m in self.module.modules() if hasattr(m, "config")}
        saved = {k: c._attn_implementation for k, c in configs.items()}
        for c in configs.values():
            c._attn_implementation = implementation
        try:
            yield
        finally:
            for k, c in configs.items():
                c._attn_implementation = saved[k]

    def tokenize(self, texts: list[str], max_len: int, min_len: int = 1) -> dict:
        """int64 numpy arrays for `input_names`, truncated at max_len, padded up to min_len."""
        enc = self.tokenizer(list(texts), truncation=True, max_length=max_len, padding=True,
                             return_tensors="np")
        short = min_len - enc["input_ids"].shape[1]
        if short > 0:
            enc = self.tokenizer(list(texts), truncation=True, max_length=max_len,
                                 padding="max_length", return_tensors="np")
            enc = {k: v[:, :max(min_len, 1)] for k, v in enc.items()}
        out = {}
        for name in self.input_names:
            if name == "token_type_ids" and name not in enc:
                out[name] = (enc["input_ids"] * 0)
            else:
                out[name] = enc[name]
        return {k: v.astype("int64") for k, v in out.items()}


def additive_mask(attention_mask, dtype=None):
    """[B, S] 0/1 mask -> [B, 1, 1, S] additive float mask (0 keep, finfo.min drop).

    Built in the wrapper with plain elementwise ops, so transformers passes it through unchanged and
    its index-based mask construction never enters the exported graph (that code broke PT2E
    calibration: `IndexError: tensors used as indices must be long...`).
    """
    import torch

    dtype = dtype or torch.float32
    m = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - m) * torch.finfo(dtype).min


def edge_bmm_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention as 3-D bmm for batch 1: every reshape then has one dynamic axis, which XNNPACK can
    delegate (4-D matmul decomposes into views with two symbolic axes that fragment the graph)."""
    import torch

    b, h, s, d = query.shape
    scaling = d ** -0.5 if scaling is None else scaling
    if b != 1:
        w = torch.matmul(query, key.transpose(2, 3)) * scaling
        if attention_mask is not None:
            w = w + attention_mask
        return torch.matmul(torch.softmax(w, dim=-1), value).transpose(1, 2).contiguous(), None
    q = query.reshape(h, -1, d) * scaling
    w = torch.bmm(q, key.reshape(h, -1, d).transpose(1, 2))
    if attention_mask is not None:
        w = w + (attention_mask.reshape(1, 1, -1) if attention_mask.shape[-2] == 1 else attention_mask[0])
    out = torch.bmm(torch.softmax(w, dim=-1), value.reshape(h, -1, d))
    return out.reshape(1, h, -1, d).transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register("edge_bmm", edge_bmm_attention)


def _wrappers():
    import torch

    class EmbeddingHead(torch.nn.Module):
        """Mean-pool the last hidden state over the mask, then L2-normalise (sentence-transformers)."""

        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            hidden = self.encoder(input_ids=input_ids, attention_mask=additive_mask(attention_mask),
                                  **kwargs)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    class LogitsHead(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            return self.model(input_ids=input_ids, attention_mask=additive_mask(attention_mask),
                              **kwargs).logits

    return EmbeddingHead, LogitsHead


def load_model(source: ResolvedSource, task: str, num_labels: int | None = None,
               trust_remote_code: bool = False) -> LoadedModel:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    folder = str(source.folder)
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"model source {source.spec!r}: cannot read config.json: {exc}") from None
    model_type = getattr(config, "model_type", "?")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelSourceError(f"model source {source.spec!r}: no usable tokenizer in {folder}: "
                               f"{str(exc).splitlines()[0]}") from None

    auto = {"embedding": transformers.AutoModel,
            "sequence-classification": transformers.AutoModelForSequenceClassification,
            "fill-mask": transformers.AutoModelForMaskedLM}[task]
    kwargs = {"trust_remote_code": trust_remote_code, "attn_implementation": "eager"}
    if task == "sequence-classification" and num_labels:
        kwargs["num_labels"] = num_labels
    try:
        model = auto.from_pretrained(folder, dtype=torch.float32, **kwargs)
    except ValueError as exc:
        raise ModelSourceError(f"model source {source.spec!r} ({model_type}): cannot load for task "
                               f"{task!r}: {str(exc).splitlines()[0]}") from None
    model.eval()
    _register_attention()
    EmbeddingHead, LogitsHead = _wrappers()
    module = EmbeddingHead(model) if task == "embedding" else LogitsHead(model)
    module.eval()

    names = ["input_ids", "attention_mask"]
    accepts_types = "token_type_ids" in getattr(tokenizer, "model_input_names", []) and \
        getattr(config, "type_vocab_size", 0) > 0
    if accepts_types:
        names.append("token_type_ids")
    return LoadedModel(module=module, tokenizer=tokenizer, task=task, model_type=model_type,
                       input_names=tuple(names), output_name=TASKS[task].output,
                       config={"model_type": model_type,
                               "num_parameters": sum(p.numel() for p in model.parameters()),
                               "architectures": list(getattr(config, "architectures", None) or [])})


def builtin_texts(name: str) -> list[str]:
    path = Path(__file__).resolve().parent.parent / "data" / f"{name}.txt"
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_texts(path: Path, limit: int | None = None) -> list[str]:
    """One text per line of a .txt file, or one text per .txt file in a folder (recursively)."""
    if path.is_dir():
        texts = [" ".join(p.read_text(encoding="utf-8", errors="replace").split())
                 for p in sorted(path.rglob("*.txt"))]
    else:
        texts = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    texts = [t for t in texts if t]
    if not texts:
        raise ModelSourceError(f"{path}: no texts found (expected .txt lines or .txt files)")
    return texts[:limit] if limit else texts
