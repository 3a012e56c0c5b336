"""Tasks, as host and device name them: one row per task (what it computes, how it is judged, what it allows, the
device loop that runs it). The recipe's `model.task` is checked against this table; the host's task units
(edgeslm.tasks) and the device runner's loops (edgeslm.runner.tasks) are keyed by its names. Standard library
only: the runner reads it on the device.

    TASKS["fill-mask"].per_position       # True: an output row per token
    register(TaskRow("token-norms", ...))  # a new task (edgeslm.tasks.register_task adds its host unit too)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskRow:
    name: str
    description: str
    output: str  # name of the single model output
    output_axes: tuple[str, ...]
    metrics: tuple[str, ...]  # verification metrics that apply
    quantize_methods: frozenset[str]  # which quantize methods the task tolerates
    quantize_refusal: str = ""  # why the others are refused
    # config.json model_type values built and verified by edgeslm's tests for this task
    model_types: frozenset[str] = frozenset({"bert", "mobilebert", "distilbert", "albert"})
    labelled: bool = False  # its outputs score named labels (config.json's id2label; fine-tuning takes labels)
    head: str = ""  # what sits on the model's last hidden state: "embedding" (pooled), "logits", "decoder"
    per_position: bool = False  # an output row per token (fill-mask), not one per text
    auto_class: str = "AutoModel"  # the transformers class that loads a checkpoint for it
    device_loop: str = "encoders"  # the runner's module (edgeslm.runner.<device_loop>) that checks and times it

    @property
    def logits(self) -> bool:
        return self.head == "logits"


TaskInfo = TaskRow  # the name the host code used before the table moved here

TASKS: dict[str, TaskRow] = {}


def register(row: TaskRow) -> TaskRow:
    """Add (or replace) a task's row."""
    TASKS[row.name] = row
    return row


ENCODER_QUANT = frozenset({"dynamic-int8", "static-int8"})
ENCODER_REFUSAL = "encoders take int8 quantization: method = \"dynamic-int8\" or \"static-int8\""

register(TaskRow(
    "embedding", "sentence embedding: mean of the last hidden state over the attention mask, L2-normalised "
    "(as sentence-transformers computes it)",
    "sentence_embedding", ("batch", "hidden"), ("cosine", "max_abs_error"), ENCODER_QUANT, ENCODER_REFUSAL,
    head="embedding"))
register(TaskRow(
    "sequence-classification", "class logits from a sequence-classification head",
    "logits", ("batch", "labels"), ("cosine", "max_abs_error", "top1_agreement"), ENCODER_QUANT, ENCODER_REFUSAL,
    labelled=True, head="logits", auto_class="AutoModelForSequenceClassification"))
register(TaskRow(
    "fill-mask", "masked-token logits over the vocabulary at every position",
    "logits", ("batch", "sequence", "vocab"), ("cosine", "max_abs_error", "top1_agreement"),
    frozenset({"dynamic-int8"}),
    "static int8 is not validated for masked-LM heads (no fill-mask checkpoint to calibrate and "
    "verify against is available to edgeslm's tests); use method = \"dynamic-int8\"",
    head="logits", per_position=True, auto_class="AutoModelForMaskedLM"))
register(TaskRow(
    "text-generation",
    "next-token logits of a decoder with a KV cache: prompt in one call (prefill), then one token "
    "per call; greedy or sampled generation runs on the device",
    "logits", ("batch", "vocab"), ("kl", "top1_agreement", "top5_agreement", "perplexity"),
    frozenset({"8da4w", "8da8w", "int8-weight-only"}),
    "decoders take weight quantization: method = \"8da4w\" (int4 weights in groups, int8 dynamic "
    "activations), \"8da8w\" or \"int8-weight-only\"",
    frozenset({"llama", "mistral", "qwen2", "phi3", "gemma2", "qwen3", "gemma3_text", "smollm3"}), head="decoder", auto_class="AutoModelForCausalLM",
    device_loop="generation"))


def known(name) -> str:
    """`name` if it is a registered task, else ValueError naming the near miss and the choices."""
    import difflib

    if isinstance(name, str) and name in TASKS:
        return name
    close = difflib.get_close_matches(str(name), list(TASKS), n=1, cutoff=0.6)
    fix = f"did you mean '{close[0]}'?" if close else f"choose one of: {', '.join(TASKS)}"
    raise ValueError(f"invalid value {name!r} ({fix})")
