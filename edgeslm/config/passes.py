"""Pass configurations: one small frozen class per pass, selected by `type` in `[[passes]]` (and, where a pass's
keys depend on a choice, by `variant`: quantize's method), each declaring where it applies (`refuses`: what it
cannot do for the recipe's task, formats and data, checked by generic code before any work).

The handler that carries a pass out is registered with `edgeslm.passes.register_pass`, the one mechanism for
built-in passes and for passes added at run time (a test, a plugin). This module imports no torch
(`edgeslm validate` checks a recipe's passes in milliseconds).
"""

from __future__ import annotations

import typing
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from edgeslm.config.base import NAME_PATTERN, StrictModel


class PassConfig(StrictModel):
    """Base of every pass configuration."""

    type: str
    # False for passes that adapt the model to its task (finetune): compression is judged against the
    # model as it is after them. True for passes that trade accuracy for size or speed (prune, quantize).
    compresses: ClassVar[bool] = True
    summary: ClassVar[str] = ""  # one line for `edgeslm explain`
    # True when the pass changes weights only (not shapes): its result can be cached as a state dict and
    # shared by every recipe that starts with the same passes (several variants of one fine-tuned model)
    cacheable: ClassVar[bool] = False

    @classmethod
    def variant(cls, entry: dict) -> type[PassConfig]:
        """The class a [[passes]] table of this type parses into (a type whose keys depend on a choice picks here)."""
        return cls

    @classmethod
    def variants(cls) -> tuple[type[PassConfig], ...]:
        """Every class `variant` can give (what `edgeslm explain` lists)."""
        return (cls,)

    def refuses(self, recipe, task):
        """Why this pass cannot run in `recipe` for `task` (its contract.tasks row): (key below passes[i], problem,
        fix) for each reason; nothing when it applies. A pass that applies everywhere keeps this."""
        return iter(())


PASS_TYPES: dict[str, type[PassConfig]] = {}


def pass_tag(cls: type[PassConfig]) -> str:
    args = typing.get_args(cls.model_fields["type"].annotation)
    if len(args) != 1:
        raise TypeError(f"{cls.__name__}.type must be a Literal of one string")
    return args[0]


def register_config(cls: type[PassConfig]) -> type[PassConfig]:
    """Make `[[passes]] type = "<tag>"` parse into `cls`."""
    PASS_TYPES[pass_tag(cls)] = cls
    return cls


class CalibrationSpec(StrictModel):
    source: str = Field(
        "builtin",
        description="Text used to calibrate static activation ranges: 'builtin' (bundled English "
        "sentences), a .txt file (one text per line), or a folder of .txt files (one text each). "
        "Relative paths are relative to the recipe file.",
    )
    samples: int = Field(64, ge=1, le=100000, description="Number of texts to calibrate on.")
    method: Literal["minmax", "percentile", "entropy"] = Field(
        "minmax", description="How ranges are derived from calibration statistics (ONNX).")


INT8_METHODS = ("dynamic-int8", "static-int8")
WEIGHT_METHODS = ("8da4w", "8da8w", "int8-weight-only")


@register_config
class QuantizeConfig(PassConfig):
    """Post-training quantization, planned on the PyTorch model and realised by each format in its own runtime's
    terms. Its keys depend on the method: encoders' int8 (Int8QuantizeConfig) or decoders' weight quantization
    (WeightQuantizeConfig); a recipe's table becomes the one its method names."""

    summary: ClassVar[str] = "int8 weights (and activations), per format and target preset"
    type: Literal["quantize"] = "quantize"
    method: Literal["dynamic-int8", "static-int8", "8da4w", "8da8w", "int8-weight-only"] = Field(
        description="Encoders: dynamic-int8 (int8 weights, activations quantized at run time, no data needed) "
        "or static-int8 (int8 weights and activations with ranges fixed by calibration data). Decoders "
        "(text-generation): 8da4w (torchao: int4 weights in groups of group_size, int8 dynamic activations "
        "per token), 8da8w (int8 weights), int8-weight-only (int8 weights per channel, float activations).")
    embeddings: bool = Field(
        False, description="Also store the word-embedding table in int8 (per row): ONNX with dynamic-int8 "
        "(onnxruntime's Gather quantization), ExecuTorch with either method (embedding_byte). MiniLM: ONNX "
        "23.5 MB instead of 59.2 MB, embedding cosine 0.9923 instead of 0.9936.")
    calibration: CalibrationSpec | None = Field(
        None, description="Texts to calibrate on: static ranges and SmoothQuant scales (encoders), GPTQ "
        "(decoders); defaults to the bundled texts.")

    @classmethod
    def variant(cls, entry: dict) -> type[PassConfig]:
        method = entry.get("method")
        return Int8QuantizeConfig if method in INT8_METHODS else WeightQuantizeConfig if method in WEIGHT_METHODS \
            else cls

    @classmethod
    def variants(cls) -> tuple[type[PassConfig], ...]:
        return (Int8QuantizeConfig, WeightQuantizeConfig)

    def refuses(self, recipe, task):
        if self.method not in task.quantize_methods:
            yield (".method", f"task {task.name!r} does not allow {self.method}",
                   task.quantize_refusal or f"use one of {', '.join(sorted(task.quantize_methods))}")


class Int8QuantizeConfig(QuantizeConfig):
    """Encoders' int8 quantization (method dynamic-int8 or static-int8): the Linear layers kept in float and
    SmoothQuant are planned on the PyTorch model; each format quantizes with the target's integer preset."""

    method: Literal["dynamic-int8", "static-int8"] = Field(
        description="dynamic-int8 (int8 weights, activations quantized at run time, no data needed) or static-int8 "
        "(int8 weights and activations with ranges fixed by calibration data).")
    granularity: Literal["per-channel", "per-tensor"] = Field(
        "per-channel", description="Weight scale granularity. per-channel keeps accuracy "
        "(MiniLM: cosine 0.989 vs 0.962 per-tensor with plain dynamic int8).")
    preset: Literal["target", "arm-s8s8", "x86-u8u8", "x86-u8s8", "x86-u8s8-reduced"] = Field(
        "target", description="Integer formats: 'target' takes the target's preset; the others force "
        "symmetric s8 activations/s8 weights (ARM), u8/u8 (x86 without VNNI), u8/s8 (x86 with VNNI) "
        "or u8/s8 with 7-bit weights (reduce_range).")
    smooth_alpha: float | None = Field(
        0.7, ge=0, le=1, description="SmoothQuant migration strength: activation outlier channels are "
        "moved into the weights before quantizing (exact in float). 0 disables. Measured on MiniLM "
        "(dynamic int8, ONNX): cosine 0.973 without, 0.994 with alpha 0.7.")
    keep_sensitive_float: bool | None = Field(
        None, description="Keep the FFN down-projections (width-reducing Linear layers, the most "
        "outlier-sensitive) in float. Default: true for static-int8, false for dynamic-int8.")
    exclude: tuple[str, ...] = Field(
        (), description="Glob patterns of module paths or node names kept in float "
        "(e.g. '*encoder.layer.0.*', '*pooler*').")
    max_accuracy_drop: float | None = Field(
        None, ge=0, le=100, description="Accuracy-aware quantization: per format, try settings in order of "
        "compression (as configured; SmoothQuant alpha 0.5 and 0.85; FFN down-projections kept in float; "
        "attention output projections too; the first and last layer too) until the [eval] metric of the "
        "artifact is at most this many points below the model before quantization. Every trial and the "
        "choice go into the manifest; when none holds, the build fails listing them. Needs [eval].")

    def refuses(self, recipe, task):
        yield from super().refuses(recipe, task)
        if self.embeddings and self.method != "dynamic-int8" and "onnx" in recipe.export.formats:
            yield (".embeddings", "int8 embeddings in ONNX are implemented with dynamic-int8 only",
                   "set embeddings = false, use method = \"dynamic-int8\", or export.formats = [\"executorch\"]")
        if self.max_accuracy_drop is not None and recipe.eval is None:
            yield ".max_accuracy_drop", "needs a task metric to search against", "add [eval] with a dataset"


class WeightQuantizeConfig(QuantizeConfig):
    """Decoders' weight quantization (method 8da4w, 8da8w or int8-weight-only): the integer grid is chosen once
    (round to nearest, GPTQ, or a GGUF source's own) and carried by each format."""

    method: Literal["8da4w", "8da8w", "int8-weight-only"] = Field(
        description="8da4w (torchao: int4 weights in groups of group_size, int8 dynamic activations per token), "
        "8da8w (int8 weights), int8-weight-only (int8 weights per channel, float activations).")
    group_size: int = Field(32, ge=0, le=4096, description="8da4w/8da8w: input channels per weight scale "
                            "(0 = one scale per output channel). Layers whose width is not a multiple "
                            "stay float (listed in the manifest). ONNX decoders: the MatMulNBits block size "
                            "(16, 32, 64, 128 or 256).")
    gguf_grid: Literal["keep", "requantize"] = Field(
        "keep", description="text-generation from a GGUF source, method 8da4w: 'keep' carries the file's own "
        "integers and scales instead of rounding the dequantized weights a second time, as llama.cpp runs "
        "them: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the K-quants Q4_K, Q5_K, Q6_K (super-blocks of 256 kept) run as "
        "edgeslm's gguf_linear operator in the .pte and as GgufLinear nodes in ONNX (see onnx_ops), a Q8_0 "
        "embedding table as ExecuTorch's int8 embedding with a scale per block (SmolLM2-135M Q4_1: perplexity "
        "+0.04% instead of +29.7%); a float GGUF (F32, F16, BF16) is quantized as any source; other types "
        "(Q2_K, Q3_K, IQ, ternary) are rounded again and named in the build's warnings. 'requantize' rounds "
        "again in blocks of group_size.")
    onnx_ops: Literal["edgeslm", "standard"] = Field(
        "edgeslm", description="text-generation, ONNX, a GGUF grid carried (gguf_grid = 'keep'): 'edgeslm' runs "
        "each projection as GgufLinear nodes over the file's blocks in edgeslm's onnxruntime op library (deploy "
        "uploads it with edgeslm's runtime folder; the same kernels as the .pte), every type above; 'standard' "
        "keeps onnxruntime's own ops, a file any onnxruntime runs: Q4_0 and Q8_0 in MatMulNBits, Q4_1 over the "
        "input widened with its block sums, other types rounded again. Measured on SmolLM2-135M Q4_1 (Xeon, "
        "2 threads): decode 88-112 vs 72-86 tok/s.")
    algorithm: Literal["rtn", "gptq"] = Field(
        "rtn", description="text-generation, method 8da4w: how the int4 grid is chosen. 'rtn' rounds each "
        "weight to the nearest step (or carries a GGUF's own grid, see gguf_grid); 'gptq' lets "
        "neural-compressor's GPTQ (symmetric, groups of 32) choose integers that compensate each other's "
        "rounding error on the calibration texts, and both formats carry that grid as it is (ONNX MatMulNBits, "
        "the .pte's int4 linears). Needs group_size = 32; with a GGUF source it replaces the file's grid. "
        "Measured on SmolLM2-135M (weights from its Q4_1 GGUF, ONNX, held text): RTN +32% perplexity, GPTQ on "
        "32k tokens of BBC News +43%, on the 64 bundled sentences +72%: calibrate on text like the task's.")

    def refuses(self, recipe, task):
        yield from super().refuses(recipe, task)
        if "onnx" in recipe.export.formats and self.group_size not in (16, 32, 64, 128, 256):
            yield (".group_size", f"ONNX decoders quantize in blocks of 16, 32, 64, 128 or 256 input channels, not "
                   f"{self.group_size}", "use 32, or export.formats = [\"executorch\"]")
        if self.algorithm == "gptq" and (self.method != "8da4w" or self.group_size != 32):
            yield (".algorithm", f"gptq chooses int4 grids in groups of 32 (method 8da4w, group_size 32), not "
                   f"{self.method} with group_size {self.group_size}",
                   "set method = \"8da4w\" and group_size = 32, or algorithm = \"rtn\"")


class TrainingSpec(StrictModel):
    """How a model is trained on the recipe's data (fine-tuning, and recovery after pruning)."""

    dataset: str | None = Field(None, pattern=NAME_PATTERN, description="Name of a [datasets.NAME] table "
                                "to train on (its train split). Default: the only dataset the recipe names.")
    epochs: float = Field(3, gt=0, le=100, description="Passes over the train split.")
    max_steps: int = Field(0, ge=0, description="Stop after this many optimizer steps (0 = no limit).")
    learning_rate: float = Field(5e-5, gt=0, le=1, description="Peak learning rate (AdamW, linear decay "
                                 "after a 6% warm-up).")
    weight_decay: float = Field(0.01, ge=0, le=1, description="AdamW weight decay.")
    batch_size: int = Field(16, ge=1, le=1024, description="Texts per optimizer step.")
    max_seq_len: int | None = Field(None, ge=8, le=8192, description="Longest training sequence "
                                    "(default: the recipe's inputs.max_seq_len).")
    seed: int = Field(0, ge=0, description="Seed for shuffling, dropout and the new head.")
    train: Literal["full", "head"] = Field("full", description="full: every weight; head: only the "
                                           "classification head (the encoder stays frozen).")
    distill: Literal["none", "teacher"] = Field(
        "none", description="teacher: learn from a teacher's soft targets (KL at `temperature`) as well as from "
        "the labels; the teacher is the model as it was before compression, or `teacher`.")
    teacher: str | None = Field(
        None, min_length=1, description="With distill = \"teacher\": another model to learn from (a folder, "
        "'pkg:package/sub' or a hub id; relative paths start at the recipe), e.g. a larger classifier fine-tuned "
        "on these labels. It must take the same token ids (the same tokenizer vocabulary) and score the same "
        "labels.")
    distill_weight: float = Field(0.5, ge=0, le=1, description="Share of the distillation loss "
                                  "(the rest is cross-entropy with the labels).")
    temperature: float = Field(2.0, gt=0, le=20, description="Softmax temperature of distillation.")
    eval_each_epoch: bool = Field(True, description="Score the dataset's validation split (held out of the "
                                  "train texts, see validation_fraction) after each epoch and keep the best "
                                  "checkpoint. The eval split, which is reported, is never used to pick.")
    patience: int = Field(0, ge=0, le=100, description="Stop when the validation accuracy has not improved "
                          "for this many epochs (0: run every epoch).")
    class_weights: Literal["none", "balanced"] = Field(
        "none", description="balanced: weight each class's loss by total / (classes x its train texts), so a "
        "rare class counts as much as a common one.")


@register_config
class FinetuneConfig(TrainingSpec, PassConfig):
    """Fine-tune the model on a labelled dataset of the recipe (sequence classification), on the CPU."""

    summary: ClassVar[str] = "train the task head (and the encoder) on the recipe's data"
    compresses: ClassVar[bool] = False
    cacheable: ClassVar[bool] = True
    type: Literal["finetune"] = "finetune"

    def refuses(self, recipe, task):
        if task.head == "decoder":
            yield "", f"{task.name} takes only a quantize pass, not 'finetune'", "remove it"
        elif not task.labelled:
            yield "", f"finetune trains sequence classifiers; the task is {task.name!r}", \
                "use task = \"sequence-classification\""


@register_config
class PruneConfig(PassConfig):
    """Structured pruning: remove whole attention heads and FFN neurons, physically shrinking the weight
    matrices (what CPU runtimes turn into speed), then recover with a short fine-tune."""

    summary: ClassVar[str] = "remove attention heads and FFN neurons by measured importance"
    cacheable: ClassVar[bool] = True  # its result (pruned shapes and recovered weights) is reused across recipes
    type: Literal["prune"] = "prune"
    heads: float = Field(0.0, ge=0, lt=1, description="Share of attention heads removed in every layer "
                         "(at least one head stays).")
    ffn: float = Field(0.0, ge=0, lt=1, description="Share of FFN (intermediate) neurons removed in every "
                       "layer.")
    importance: Literal["taylor", "magnitude"] = Field(
        "taylor", description="taylor: |activation x gradient| of the task loss on the dataset (needs "
        "labels); magnitude: mean |activation| (no labels).")
    dataset: str | None = Field(None, pattern=NAME_PATTERN, description="Dataset whose train split "
                                "measures importance and drives recovery. Default: the only one.")
    importance_samples: int = Field(256, ge=8, le=100000, description="Texts used to measure importance.")
    recovery: TrainingSpec | None = Field(
        None, description="Fine-tune after pruning (recommended; distill = \"teacher\" learns from the "
        "unpruned model). Omit for no recovery.")

    def refuses(self, recipe, task):
        if task.head == "decoder":
            yield "", f"{task.name} takes only a quantize pass, not 'prune'", "remove it"
            return
        if self.importance == "taylor" and not task.labelled:
            yield ".importance", "taylor importance needs labels (sequence-classification)", \
                "use importance = \"magnitude\""
        if self.recovery is not None and not task.labelled:
            yield ".recovery", "recovery fine-tuning needs a sequence-classification task", "remove it"

    @model_validator(mode="after")
    def _something(self):
        if self.heads == 0 and self.ffn == 0:
            raise ValueError("prune needs heads > 0 or ffn > 0 (shares to remove, e.g. heads = 0.5)")
        return self
