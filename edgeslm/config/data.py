"""Datasets a recipe names ([datasets.NAME]) and how the task is evaluated ([eval]); no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edgeslm.config.base import NAME_PATTERN, StrictModel
from edgeslm.config.packages import package_folder


class DatasetSpec(StrictModel):
    source: str = Field(
        min_length=1, description="Where the labelled texts are: a .csv, .tsv or .jsonl file; a folder with "
        "one sub-folder per label holding one .txt file per text (relative paths start at the recipe; "
        "'pkg:package/sub' is a folder inside an installed package); or 'hf:org/name' (a Hugging Face "
        "datasets id, needs the `datasets` package and a network). Files are UTF-8 (a BOM is dropped; other "
        "encodings are refused, naming the byte). CSV and TSV are read as CSV records by Python's csv module: "
        "a header row, then one record per row; a field in double quotes may hold the delimiter and line "
        "breaks, a quote inside it is doubled (\"\"); only \\n, \\r\\n and \\r end a record (a U+2028 inside "
        "a text does not); a stray quote or a row with another number of fields than the header is an error "
        "naming the row. JSONL: one JSON object per line; the text is a string, the label a string or an "
        "integer, the same type on every line. A folder's .txt files must be its own: a link (or '..') "
        "that leads outside the folder is refused.")
    format: Literal["auto", "csv", "tsv", "jsonl", "folders", "hf"] = Field(
        "auto", description="auto: from the file suffix, a folder, or the hf: prefix.")
    text_column: str = Field("text", min_length=1, description="Column (or JSON key) holding the text.")
    label_column: str = Field("label", min_length=1, description="Column (or JSON key) holding the label.")
    labels: tuple[str, ...] | None = Field(
        None, min_length=2, description="Label names in class-id order. Default: the labels found, sorted "
        "(numeric labels in numeric order).")
    eval_source: str | None = Field(
        None, min_length=1, description="A separate file or folder for the eval split (same format); "
        "otherwise `eval_fraction` of `source` is held out.")
    eval_fraction: float = Field(0.2, gt=0, lt=1, description="Share held out for evaluation when there "
                                 "is no eval_source (stratified by label).")
    seed: int = Field(0, ge=0, description="Seed of the train/eval split.")
    validation_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of the train texts held out (stratified, seeded) to pick the best "
        "epoch and stop early. The eval split, which is reported, never picks anything, so its figures carry no "
        "selection bias. 0: no validation split (every epoch runs and the last one is kept).")
    max_train: int = Field(0, ge=0, description="Use at most this many training texts (0 = all; stratified).")
    max_eval: int = Field(0, ge=0, description="Use at most this many eval texts (0 = all; stratified).")
    encoding_errors: Literal["strict", "replace"] = Field(
        "strict", description="strict: a file that is not UTF-8 is refused, naming the file and the byte. "
        "replace: undecodable bytes become U+FFFD and the files are counted in the build manifest "
        "(not_utf8_decoded_with_replacement), for a corpus with a stray byte in another encoding (the BBC News "
        "corpus has one Latin-1 '£').")
    hf_split: str = Field("train", description="Split of a hub dataset used as `source`.")
    hf_eval_split: str | None = Field(None, description="Split of a hub dataset used for evaluation "
                                      "(default: hold out eval_fraction of hf_split).")

    @field_validator("labels")
    @classmethod
    def _labels(cls, value):
        if value is None:
            return value
        for i, label in enumerate(value):
            if not label.strip():
                raise ValueError(f"entry {i + 1} is empty; a label names a class")
            if label != label.strip():
                raise ValueError(f"{label!r} has spaces around it; labels in the data are read "
                                 "without them, so it would never match")
            if label in value[:i]:
                raise ValueError(f"{label!r} is listed twice; each class is named once")
        return value


class EvalSpec(StrictModel):
    dataset: str | None = Field(None, pattern=NAME_PATTERN, description="Dataset whose eval split is "
                                "scored. Default: the only dataset the recipe names.")
    metric: Literal["accuracy", "macro-f1"] = Field(
        "accuracy", description="Task metric. Embedding models are scored by a nearest-centroid probe "
        "(centroids of each label's train texts).")
    max_drop: float | None = Field(
        None, ge=0, le=100, description="Largest drop of the task metric (points) of any artifact against the "
        "model before compression; a larger one fails the build. Default: reported, not gated.")
    on_device: bool = Field(True, description="Ship the tokenized eval split in the build so `edgeslm profile "
                            "--eval` scores it on the device.")

    @model_validator(mode="after")
    def _ok(self):
        return self


def source_path(source: str, base_dir: Path) -> Path | None:
    """The local file or folder a dataset source names (None for a hub id)."""
    if source.startswith("hf:"):
        return None
    if source.startswith("pkg:"):
        return package_folder(source[4:])
    p = Path(source).expanduser()
    return p if p.is_absolute() else base_dir / p


def dataset_for(recipe, name: str | None) -> str | None:
    """The dataset a pass or [eval] means: the named one, or the only one."""
    if name is not None:
        return name if name in recipe.datasets else None
    return next(iter(recipe.datasets)) if len(recipe.datasets) == 1 else None
