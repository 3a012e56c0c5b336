"""What each task means, independent of torch: its output, how it is verified, what it allows."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskInfo:
    name: str
    description: str
    output: str  # name of the single model output
    output_axes: tuple[str, ...]
    metrics: tuple[str, ...]  # verification metrics that apply
    quantize_methods: frozenset[str]  # which quantize methods the task tolerates
    quantize_refusal: str = ""  # why the others are refused
    # config.json model_type values built and verified by edgeslm's tests for this task
    model_types: frozenset[str] = frozenset({"bert", "mobilebert", "distilbert", "albert"})
    labelled: bool = False  # its outputs are scores of named labels (config.json's id2label; the manifest keeps them)


TASKS: dict[str, TaskInfo] = {
    t.name: t
    for t in (
        TaskInfo(
            "embedding",
            "sentence embedding: mean of the last hidden state over the attention mask, L2-normalised "
            "(as sentence-transformers computes it)",
            "sentence_embedding", ("batch", "hidden"), ("cosine", "max_abs_error"),
            frozenset({"dynamic-int8", "static-int8"}),
            "encoders take int8 quantization: method = \"dynamic-int8\" or \"static-int8\"",
        ),
        TaskInfo(
            "sequence-classification", "class logits from a sequence-classification head",
            "logits", ("batch", "labels"), ("cosine", "max_abs_error", "top1_agreement"),
            frozenset({"dynamic-int8", "static-int8"}),
            "encoders take int8 quantization: method = \"dynamic-int8\" or \"static-int8\"", labelled=True,
        ),
        TaskInfo(
            "fill-mask", "masked-token logits over the vocabulary at every position",
            "logits", ("batch", "sequence", "vocab"), ("cosine", "max_abs_error", "top1_agreement"),
            frozenset({"dynamic-int8"}),
            "static int8 is not validated for masked-LM heads (no fill-mask checkpoint to calibrate and "
            "verify against is available to edgeslm's tests); use method = \"dynamic-int8\"",
        ),
        TaskInfo(
            "text-generation",
            "next-token logits of a decoder with a KV cache: prompt in one call (prefill), then one token "
            "per call; greedy or sampled generation runs on the device",
            "logits", ("batch", "vocab"), ("kl", "top1_agreement", "top5_agreement", "perplexity"),
            frozenset({"8da4w", "8da8w", "int8-weight-only"}),
            "decoders take weight quantization: method = \"8da4w\" (int4 weights in groups, int8 dynamic "
            "activations), \"8da8w\" or \"int8-weight-only\"",
            frozenset({"llama", "mistral", "qwen2", "phi3", "gemma2"}),
        ),
    )
}

ENCODER_TASKS = frozenset({"embedding", "sequence-classification", "fill-mask"})
