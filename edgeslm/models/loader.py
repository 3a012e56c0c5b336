"""Load a model + tokenizer for a task and wrap it as a module with plain tensor inputs/outputs."""

from __future__ import annotations

import contextlib
import os
import pickle
from dataclasses import dataclass, field


from edgeslm.contract.tasks import TASKS
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
    notes: list[str] = field(default_factory=list)  # warnings for the user and the manifest

    @property
    def hf(self):
        """The transformers model inside the export wrapper (what fine-tuning and pruning change)."""
        return getattr(self.module, "model", None) or getattr(self.module, "encoder", None) or \
            next(m for m in self.module.modules() if hasattr(m, "config"))

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
               trust_remote_code: bool = False, allow_untrained_head: bool = False,
               labels: list[str] | None = None) -> LoadedModel:
    """`labels`: class names for a head that is about to be trained (a finetune pass); the checkpoint's
    own head is replaced when its size differs."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    from edgeslm.models.checks import check_vocab

    folder = str(source.folder)
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelSourceError(f"model source {source.spec!r}: cannot read config.json: "
                               f"{_first_line(exc)}") from None
    model_type = getattr(config, "model_type", "?")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - tokenizer backends raise many kinds; all mean "unusable"
        raise ModelSourceError(f"model source {source.spec!r}: no usable tokenizer in {folder}: "
                               f"{_first_line(exc)}") from None

    row = TASKS[task]
    auto = getattr(transformers, row.auto_class)
    kwargs = {"trust_remote_code": trust_remote_code, "attn_implementation": "eager"}
    if row.labelled and num_labels:
        kwargs["num_labels"] = num_labels
    if row.labelled and labels:
        kwargs.update(num_labels=len(labels), id2label=dict(enumerate(labels)),
                      label2id={lb: i for i, lb in enumerate(labels)}, ignore_mismatched_sizes=True)
    try:
        model, info = auto.from_pretrained(folder, dtype=torch.float32, output_loading_info=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - damaged or mismatched weights raise OSError, RuntimeError,
        # ValueError or safetensors' own error: all are a problem with the model files, not a bug here
        if "weights_only" in str(exc) or isinstance(exc, pickle.UnpicklingError):
            # torch's own advice (load with weights_only=False) would run whatever the file's pickle holds
            raise ModelSourceError(
                f"model source {source.spec!r} ({model_type}): a weights file is damaged or not a plain PyTorch "
                "checkpoint (torch's safe loader refused what its pickle holds; loading it anyway could run code "
                "from the file): restore it from the model's release, or use model.safetensors") from None
        raise ModelSourceError(f"model source {source.spec!r} ({model_type}): cannot load its weights for "
                               f"task {task!r}: {_first_line(exc)} (check the files, or download them again)") from None
    check_vocab(source.spec, len(tokenizer), model.get_input_embeddings().num_embeddings, folder)
    head_note = None if labels else _check_head(source.spec, task, info, allow_untrained_head)  # labels: trained next
    model.eval()
    _register_attention()
    EmbeddingHead, LogitsHead = _wrappers()
    module = EmbeddingHead(model) if row.head == "embedding" else LogitsHead(model)
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
                               "architectures": list(getattr(config, "architectures", None) or [])},
                       notes=[head_note] if head_note else [])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


# weights that may be absent from a checkpoint without the model's outputs becoming random (the pooler
# only for embeddings: they mean-pool the last hidden state, classifiers use the pooler)
_HARMLESS_MISSING = ("position_ids", "token_type_ids")


def _check_head(spec: str, task: str, info: dict, allowed: bool) -> str | None:
    """A checkpoint without the task head gets a random one from transformers, silently: refuse it
    unless the recipe says that is intended (warn then)."""
    pooled = TASKS[task].head == "embedding"  # a mean-pooled output needs no head of its own
    harmless = _HARMLESS_MISSING + (("pooler.",) if pooled else ())
    missing = [k for k in info.get("missing_keys", []) if not any(h in k for h in harmless)]
    if not missing:
        return None
    shown = ", ".join(sorted(missing)[:4]) + (" ..." if len(missing) > 4 else "")
    if pooled or not allowed:
        raise ModelSourceError(
            f"model source {spec!r}: the checkpoint lacks weights the {task} model needs ({shown}); they would "
            "be random and every output meaningless. Point model.source at a checkpoint trained for this task"
            + ("" if pooled else ", or set model.allow_untrained_head = true to build it anyway "
               "(e.g. to measure speed before fine-tuning)"))
    return (f"{task} head initialised at random ({shown}): outputs are meaningless until it is fine-tuned "
            "(allowed by model.allow_untrained_head)")


from edgeslm.texts import builtin_texts, read_texts  # noqa: E402,F401 (re-exported)
