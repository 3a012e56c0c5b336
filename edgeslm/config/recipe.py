"""Recipe files (recipes/*.toml): which model, which task, which passes, which formats and targets."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from typing import Annotated

from pydantic import Field, field_validator, model_validator

from edgeslm.config.base import NAME_PATTERN, SCHEMA_VERSION, StrictModel, parse, read_toml
from edgeslm.config.passes import PassConfig, QuantizeConfig
from edgeslm.config.tasks import TASKS
from edgeslm.errors import ConfigError

Format = Literal["onnx", "executorch"]
Text = Annotated[str, Field(min_length=1)]


class ModelSpec(StrictModel):
    source: str = Field(
        min_length=1, description="Where the model comes from: a Hugging Face hub id ('org/name', or 'hf:org/name'), "
        "a local folder ('./dir' or 'path:dir', relative to the recipe), or a folder inside an installed "
        "Python package ('pkg:package/subfolder', or 'package/subfolder' when that package is installed).")
    revision: str | None = Field(None, description="Hub branch, tag or commit (hub sources only).")
    task: Literal["embedding", "sequence-classification", "fill-mask"] = Field(
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
                                        description="Runtimes to export for.")
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
    passes: tuple[PassConfig, ...] = Field(
        (), description="Compression passes in order, each a [[passes]] table with a 'type' "
        "(now: quantize).")
    verify: VerifySpec = Field(default_factory=VerifySpec, description="Verification inputs and thresholds.")
    gate: GateSpec = Field(default_factory=GateSpec, description="CI regression thresholds for this recipe.")
    targets: tuple[str, ...] = Field(("host",), min_length=1,
                                     description="Targets this recipe supports (see `edgeslm targets`); "
                                     "`--target all` builds each. A target given to `--target` as a .toml "
                                     "file is built even when it is not listed here: an explicit choice, "
                                     "noted on stderr.")

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
        """Hash of the recipe's meaning (not its formatting) plus the files it names."""
        h = hashlib.sha256(canonical_json(self.recipe.model_dump(mode="json")).encode())
        for f in self.referenced_files():
            h.update(f.read_bytes() if f.is_file() else b"<dir>" + "".join(
                sorted(str(p.relative_to(f)) + str(p.stat().st_size) for p in f.rglob("*"))).encode())
        return h.hexdigest()

    def referenced_files(self) -> list[Path]:
        out = []
        if self.recipe.verify.texts_file:
            out.append(self.resolve_path(self.recipe.verify.texts_file))
        q = self.recipe.quantize
        if q and q.calibration and q.calibration.source != "builtin":
            out.append(self.resolve_path(q.calibration.source))
        return out


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def load_recipe(path: str | Path) -> LoadedRecipe:
    path = Path(path).expanduser().resolve()
    data = read_toml(path)
    recipe = parse(Recipe, data, str(path_for_display(path)))
    loaded = LoadedRecipe(recipe, path)
    for key, problem, fix in cross_checks(recipe):
        raise ConfigError(str(path_for_display(path)), key, problem, fix)
    from edgeslm.texts import read_texts

    for key, value in _file_keys(recipe):  # read now: binary, empty or missing files fail here
        read_texts(loaded.resolve_path(value), file=str(path_for_display(path)), key=key)
    return loaded


def cross_checks(recipe: Recipe):
    """Rules that span sections, each yielding (key, problem, fix)."""
    m = recipe.model
    if m.num_labels is not None and m.task != "sequence-classification":
        yield "model.num_labels", "only applies to task = \"sequence-classification\"", "remove it"
    quant = [(i, p) for i, p in enumerate(recipe.passes) if isinstance(p, QuantizeConfig)]
    if len(quant) > 1:
        yield f"passes[{quant[1][0]}]", "only one quantize pass is allowed", "remove one"
    task = TASKS[m.task]
    for i, q in quant:
        if q.embeddings and (q.method != "dynamic-int8" or "executorch" in recipe.export.formats):
            yield (f"passes[{i}].embeddings", "int8 embeddings are implemented for ONNX with dynamic-int8 only",
                   "set embeddings = false, or use method = \"dynamic-int8\" with export.formats = [\"onnx\"]")
        if q.method not in task.quantize_methods:
            yield (f"passes[{i}].method", f"task {task.name!r} does not allow {q.method}",
                   task.quantize_refusal)


def _file_keys(recipe: Recipe):
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
