"""Loading a decoder (text-generation) for a build: transformers' causal LM in float32 and its tokenizer, a GGUF
source dequantized by transformers (the reference). `LoadedDecoder` is what the passes and format adapters get."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeslm.errors import ModelSourceError


@dataclass
class LoadedDecoder:
    """A decoder as the build holds it: the model the passes may change, its tokenizer, where it came from."""

    hf: Any  # transformers' PreTrainedModel (causal LM), float32, eval mode
    tokenizer: Any
    source: Any  # edgeslm.models.sources.ResolvedSource
    max_context: int  # the recipe's generation.max_context (KV cache positions)
    work: Path  # the build folder (scratch space for passes goes under it, removed by them)
    notes: list = None  # what the build's warnings should say about the model

    def __post_init__(self):
        self.notes = list(self.notes or [])


def load_causal_lm(source, trust_remote_code: bool):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra = {"gguf_file": source.gguf} if source.gguf else {}  # transformers dequantizes GGUF tensors
    try:
        tok = AutoTokenizer.from_pretrained(str(source.folder), trust_remote_code=trust_remote_code, **extra)
        model = AutoModelForCausalLM.from_pretrained(str(source.folder), dtype=torch.float32,
                                                     trust_remote_code=trust_remote_code, **extra)
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"model source {source.spec!r} ({source.folder}): cannot load a causal LM "
                               f"({str(exc).splitlines()[0][:160]})") from None
    if source.gguf:  # loaded into float: nothing of the GGUF quantizer stays attached
        model.hf_quantizer, model.is_quantized = None, False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return tok, model.eval()


def stop_ids(tokenizer, model) -> list[int]:
    """The token ids that end a generation (the generation config's and the tokenizer's end of sequence)."""
    out = set()
    for src in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(src, int):
            out.add(src)
        elif isinstance(src, (list, tuple)):
            out.update(int(x) for x in src)
    return sorted(out)


def prompt_ids(tokenizer, prompt: str, chat: bool) -> list[int]:
    """A prompt's token ids (in the tokenizer's chat template for a user turn, when `chat` and it has one)."""
    if chat and getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        return [int(i) for i in ids]
    return [int(i) for i in tokenizer(prompt)["input_ids"]]
