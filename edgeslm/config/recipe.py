"""Recipe files (recipes/*.toml): which model, which task, which passes, which formats and targets."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from typing import Annotated

from pydantic import Field, SerializeAsAny, field_validator, model_validator

from edgeslm.config.base import NAME_PATTERN, SCHEMA_VERSION, StrictModel, parse, read_toml
from edgeslm.config.data import DatasetSpec, EvalSpec, source_path
from edgeslm.config.rules import cross_checks
from edgeslm.config.base import FormatName, TaskName
from edgeslm.contract import MAX_SEED, MAX_TOP_K
from edgeslm.config.passes import PASS_TYPES, PassConfig, QuantizeConfig
from edgeslm.contract.tasks import TASKS
from edgeslm.errors import ConfigError

Format = FormatName  # a name in edgeslm.contract.formats (checked against the live table)
Text = Annotated[str, Field(min_length=1)]


class ModelSpec(StrictModel):
    source: str = Field(
        min_length=1, description="Where the model comes from: a Hugging Face hub id ('org/name', or 'hf:org/name'), "
        "a local folder ('./dir' or 'path:dir', relative to the recipe), or a folder inside an installed "
        "Python package ('pkg:package/subfolder', or 'package/subfolder' when that package is installed).")
    revision: str | None = Field(None, description="Hub branch, tag or commit (hub sources only).")
    task: TaskName = Field(
        description="What the exported model computes: " + "; ".join(
            f"{t.name}: {t.description}" for t in TASKS.values()))
    num_labels: int | None = Field(
        None, ge=2, description="Number of classes for sequence-classification when the checkpoint has "
        "no trained head yet (a new head is initialised).")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub (off by default; "
                                    "must be a TOML boolean).")
    allow_untrained_head: bool = Field(
        False, description="Build even when the checkpoint has no trained task head (sequence-classification "
        "or fill-mask) and a random one would be created, e.g. to measure speed before fine-tuning. Off by "
        "default: such a build is refused, because its outputs mean nothing.")



class GenerationSpec(StrictModel):
    """How a text-generation model is exported and run: cache size, prompt chunk, sampling, chat."""

    max_context: int = Field(512, ge=16, le=32768, description="Positions in the KV cache: prompt plus "
                             "generated tokens. Its memory (weights + cache) is checked against the device.")
    max_prompt: int = Field(128, ge=2, le=32768, description="Most tokens one call takes (prefill chunk); "
                            "longer prompts are fed in chunks.")
    max_new_tokens: int = Field(64, ge=1, le=32768, description="Tokens `edgeslm run` generates at most.")
    chat_template: bool = Field(True, description="Wrap prompts in the tokenizer's chat template (when it "
                                "has one) for `edgeslm run` and the continuation check.")
    sampling: Literal["greedy", "sample"] = Field("greedy", description="How `edgeslm run` decodes on the "
                                                  "device. greedy: the most likely token; sample: temperature / "
                                                  "top_k / top_p sampling with `seed`. Verification and "
                                                  "profiling always decode greedily.")
    temperature: float = Field(0.7, gt=0, le=10, description="sample: softmax temperature.")
    top_k: int = Field(40, ge=0, le=MAX_TOP_K, description="sample: keep the k most likely tokens (0 = all).")
    top_p: float = Field(0.95, gt=0, le=1, description="sample: keep the smallest set of tokens whose "
                         "probability reaches top_p.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="sample: random seed (the same seed gives the same "
                      "text).")
    stop: tuple[Text, ...] = Field((), description="Strings that end generation, besides the model's "
                                   "end-of-sequence tokens.")
    prompts: tuple[Text, ...] = Field(
        ("The capital of France is", "Write a short poem about the sea.", "def fibonacci(n):"),
        min_length=1, description="Prompts whose greedy continuations are compared with eager PyTorch "
        "(first-token and prefix agreement reported, not gated).")

    @model_validator(mode="after")
    def _bounds(self):
        if self.max_prompt >= self.max_context:
            raise ValueError(f"max_prompt ({self.max_prompt}) must be below max_context ({self.max_context})")
        return self


class InputSpec(StrictModel):
    min_seq_len: int = Field(4, ge=3, description="Shortest token sequence the artifacts accept; "
                             "shorter inputs are padded up to it (at least 3: torch.export specialises "
                             "shorter sequence axes for some architectures, e.g. MobileBERT).")
    max_seq_len: int = Field(128, ge=2, le=8192, description="Longest token sequence the artifacts "
                             "accept; longer text is truncated by the tokenizer.")
    batch_size: int = Field(1, ge=1, le=256, description="Batch size of the ExecuTorch program and of "
                            "profiling; ONNX models take any batch.")

    @model_validator(mode="after")
    def _bounds(self):
        if self.min_seq_len > self.max_seq_len:
            raise ValueError(f"min_seq_len ({self.min_seq_len}) is above max_seq_len ({self.max_seq_len})")
        return self


class OnnxOptions(StrictModel):
    opset: int = Field(18, ge=18, le=23, description="ONNX opset. The torch.onnx dynamo exporter emits "
                       "18 or later (a request for 17 is silently raised to 18, so 17 is refused here).")
    optimize: Literal["none", "extended", "transformer"] = Field(
        "none", description="Graph optimization baked into the file. 'none' leaves it to onnxruntime at "
        "load time (it always applies its online optimizations); 'extended' saves onnxruntime's offline "
        "extended level; 'transformer' adds onnxruntime.transformers fusions (SkipLayerNorm, BiasGelu) "
        "for BERT-family models. Measured on MiniLM fp32: all within 5% of each other.")


class ExecuTorchOptions(StrictModel):
    backend: Literal["xnnpack"] = Field("xnnpack", description="Delegate the program is lowered to.")
    dynamic_seq: bool = Field(True, description="Accept any sequence length in [min_seq_len, max_seq_len]; "
                              "false fixes it at max_seq_len (inputs must then be padded).")


class ExportSpec(StrictModel):
    formats: tuple[Format, ...] = Field(("onnx", "executorch"), min_length=1,
                                        description="Formats to export (a name in edgeslm.contract.formats: "
                                        "onnx, executorch).")
    onnx: OnnxOptions = Field(default_factory=OnnxOptions, description="ONNX export options.")
    executorch: ExecuTorchOptions = Field(default_factory=ExecuTorchOptions,
                                          description="ExecuTorch export options.")

    @field_validator("formats")
    @classmethod
    def _unique(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("formats are listed twice")
        return v


class VerifySpec(StrictModel):
    texts: tuple[Text, ...] | None = Field(
        None, min_length=1, description="Texts run through the tokenizer to compare every artifact with eager PyTorch "
        "(default: bundled English sentences of varied length).")
    texts_file: str | None = Field(None, description="A .txt file with one verification text per line "
                                   "(relative to the recipe).")
    min_cosine: float | None = Field(
        None, ge=-1, le=1, description="Lowest cosine similarity of an artifact's output to eager PyTorch, "
        "per sample. Default 0.9999 for float, 0.99 for int8.")
    max_abs_error: float | None = Field(
        None, gt=0, description="Largest absolute difference allowed. Default 1e-3 for float; not "
        "checked for int8 unless set.")
    min_top1_agreement: float | None = Field(
        None, ge=0, le=1, description="Share of argmax predictions equal to eager PyTorch (classification, "
        "fill-mask), counted where PyTorch's top-2 probabilities differ by at least top1_margin. Default "
        "1.0 for float, 0.9 for int8.")
    top1_margin: float | None = Field(
        None, ge=0, description="Gap between PyTorch's first and second logit (nats) below which a sample is "
        "a near-tie and not counted for top-1 agreement (0.1 = a 52.5/47.5 split of two classes). Default 0.1.")
    max_kl: float | None = Field(
        None, ge=0, description="Largest KL divergence (nats) of the artifact's class or token probabilities "
        "from PyTorch's (classification, fill-mask). Default 1e-4 for float, 0.05 for int8.")
    min_centered_cosine: float | None = Field(
        None, ge=-1, le=1, description="Lowest cosine between the artifact's and PyTorch's deviations from "
        "their mean output over the verification samples: fails a constant or input-independent output. "
        "Default 0.999 for float, 0.9 for int8.")
    min_top5_agreement: float | None = Field(
        None, ge=0, le=1, description="text-generation: share of positions where PyTorch's top token is among "
        "the artifact's top 5. Default 1.0 for float, 0.9 quantized.")
    max_perplexity_increase: float | None = Field(
        None, ge=0, description="text-generation: largest relative increase of perplexity on the verification "
        "text over eager PyTorch before quantization (0.05 = +5%). Default 0.001 for float, 0.05 for int8 "
        "weights, 0.35 for int4 weights.")

    @model_validator(mode="after")
    def _one_source(self):
        if self.texts is not None and self.texts_file is not None:
            raise ValueError("give either texts or texts_file, not both")
        return self


class GateSpec(StrictModel):
    fail_on: str | None = Field(
        None, description="Thresholds `edgeslm report --baseline` applies to this recipe's results when "
        "--fail-on is not given, e.g. 'latency=+10%,rss=+5%,size=+1%,accuracy=-0.5'.")

    @field_validator("fail_on")
    @classmethod
    def _parse(cls, v):
        if v is not None:
            from edgeslm.config.thresholds import parse_fail_on

            try:
                parse_fail_on(v)
            except Exception as exc:  # noqa: BLE001 - reported as this key's error
                raise ValueError(str(exc).replace("--fail-on: ", "")) from None
        return v


class Recipe(StrictModel):
    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Recipe format version.")
    name: str = Field(pattern=NAME_PATTERN, description="Recipe name; names the build folder.")
    description: str = Field("", description="One line shown by `edgeslm recipes`.")
    model: ModelSpec = Field(description="The model and its task.")
    inputs: InputSpec = Field(default_factory=InputSpec, description="Input shape bounds.")
    export: ExportSpec = Field(default_factory=ExportSpec, description="Formats and exporter options.")
    datasets: dict[str, DatasetSpec] = Field(
        default_factory=dict, description="Labelled texts by name: [datasets.NAME], used by finetune, prune "
        "and [eval].")
    passes: tuple[SerializeAsAny[PassConfig], ...] = Field(
        (), description="Passes in order, each a [[passes]] table with a 'type' (see below): finetune, "
        "prune, quantize.")
    eval: EvalSpec | None = Field(None, description="Task metric on a dataset's eval split, for the model "
                                  "before and after compression, every artifact on the host and on devices.")
    generation: GenerationSpec = Field(default_factory=GenerationSpec, description="text-generation: KV cache "
                                       "size, prompt chunk and generation settings (ignored by encoders).")
    verify: VerifySpec = Field(default_factory=VerifySpec, description="Verification inputs and thresholds.")
    gate: GateSpec = Field(default_factory=GateSpec, description="CI regression thresholds for this recipe.")
    targets: tuple[str, ...] = Field(("host",), min_length=1,
                                     description="Targets this recipe supports (see `edgeslm targets`); "
                                     "`--target all` builds each. A target given to `--target` as a .toml "
                                     "file is built even when it is not listed here: an explicit choice, "
                                     "noted on stderr.")

    @field_validator("passes", mode="before")
    @classmethod
    def _pass_configs(cls, value):
        """Tables become the config class registered for their type (see config.passes.PASS_TYPES)."""
        if not isinstance(value, (list, tuple)):
            return value
        out = []
        for entry in value:
            if isinstance(entry, dict):
                kind = PASS_TYPES.get(entry.get("type"))
                if kind is None:
                    raise ValueError(f"unknown pass type {entry.get('type')!r} (choose one of: "
                                     f"{', '.join(sorted(PASS_TYPES))})")
                entry = kind.variant(entry).model_validate(entry)
            out.append(entry)
        return tuple(out)

    @field_validator("targets")
    @classmethod
    def _unique_targets(cls, value):
        for i, name in enumerate(value):
            if name in value[:i]:
                raise ValueError(f"target {name!r} is listed twice")
        return value

    @field_validator("datasets")
    @classmethod
    def _dataset_names(cls, value):
        import re

        from edgeslm.config.base import NAME_PATTERN

        for name in value:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"dataset name {name!r}: use lower-case letters, digits, '.', '_' and '-'")
        return value

    @property
    def quantize(self) -> QuantizeConfig | None:
        found = [p for p in self.passes if isinstance(p, QuantizeConfig)]
        return found[-1] if found else None



@dataclass(frozen=True)
class LoadedRecipe:
    recipe: Recipe
    path: Path  # absolute

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve_path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def content_hash(self) -> str:
        """Hash of the recipe's meaning (not its formatting) plus the content of the files and folders it
        names (texts, datasets): editing a dataset file changes the hash."""
        from edgeslm.inputs import InputError, read_file

        h = hashlib.sha256(canonical_json(self.recipe.model_dump(mode="json")).encode())
        file = str(path_for_display(self.path))
        for key, f in self.referenced_files(keyed=True):
            try:
                if f.is_dir():
                    h.update(b"<dir>")
                    # a folder's own files only: regular, and inside it (links that leave it are refused)
                    for p in sorted(x for x in f.rglob("*") if not x.is_dir()):
                        h.update(p.relative_to(f).as_posix().encode() + b"\0" + read_file(p, "dataset", root=f))
                elif f.exists():
                    h.update(read_file(f, "dataset"))
            except InputError as exc:
                raise exc.located(file, key) from None
        return h.hexdigest()

    def referenced_files(self, keyed: bool = False) -> list:
        """The files and folders the recipe names (with `keyed`: (recipe key, path) pairs)."""
        out = [(key, self.resolve_path(value)) for key, value in file_keys(self.recipe)]
        for name, spec in self.recipe.datasets.items():
            for key, src in (("source", spec.source), ("eval_source", spec.eval_source)):
                p = source_path(src, self.base_dir) if src is not None else None
                if p is not None:
                    out.append((f"datasets.{name}.{key}", p))
        return out if keyed else [p for _, p in out]


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_passes(entries, file: str) -> None:
    """Each [[passes]] table against the config class of its type, with errors located as passes[i]."""
    import difflib

    if not isinstance(entries, list):
        raise ConfigError(file, "passes", "expected [[passes]] tables (a list of tables)")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(file, f"passes[{i}]", "expected a table with a type")
        tag = entry.get("type")
        if tag is None:
            raise ConfigError(file, f"passes[{i}].type", "required key is missing",
                              f"choose one of: {', '.join(sorted(PASS_TYPES))}")
        if tag not in PASS_TYPES:
            close = difflib.get_close_matches(str(tag), list(PASS_TYPES), n=1, cutoff=0.6)
            raise ConfigError(file, f"passes[{i}].type", f"unknown pass type {tag!r}",
                              f"did you mean '{close[0]}'?" if close else
                              f"choose one of: {', '.join(sorted(PASS_TYPES))}")
        parse(PASS_TYPES[tag].variant(entry), entry, file, prefix=("passes", i))


def load_recipe(path: str | Path) -> LoadedRecipe:
    path = Path(path).expanduser().resolve()
    data = read_toml(path)
    if "passes" in data:
        parse_passes(data["passes"], str(path_for_display(path)))
    recipe = parse(Recipe, data, str(path_for_display(path)))
    loaded = LoadedRecipe(recipe, path)
    for key, problem, fix in cross_checks(recipe):
        raise ConfigError(str(path_for_display(path)), key, problem, fix)
    return loaded


def file_keys(recipe: Recipe):
    if recipe.verify.texts_file:
        yield "verify.texts_file", recipe.verify.texts_file
    for i, p in enumerate(recipe.passes):
        if isinstance(p, QuantizeConfig) and p.calibration and p.calibration.source != "builtin":
            yield f"passes[{i}].calibration.source", p.calibration.source


def path_for_display(path: Path) -> Path:
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path
