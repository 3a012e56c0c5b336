"""Labelled text datasets named by a recipe ([datasets.NAME]): read, checked, split. No torch.

Formats: a .csv / .tsv file with a header row, a .jsonl file (one object per line), a folder with one
sub-folder per label holding one .txt file per text (the BBC News layout), or a Hugging Face datasets
id ('hf:org/name', needs the `datasets` package and a network). Texts are whitespace-normalised and exact
duplicates dropped before splitting, so no text is in both the train and the eval split. Everything that
can be wrong with the data is one ConfigError naming the recipe, the key and the file, before any work.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from edgeslm.config.data import DatasetSpec, source_path
from edgeslm.config.packages import install_hint
from edgeslm.contract.documents import DocumentError, loads
from edgeslm.errors import ConfigError, MissingDependency
from edgeslm.inputs import InputError, check_regular, decode_text, read_file

csv.field_size_limit(1 << 26)


@dataclass
class Split:
    texts: list[str]
    labels: list[int]  # class ids, into Dataset.labels

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class Dataset:
    name: str
    labels: list[str]  # class names in id order
    train: Split
    eval: Split
    facts: dict = field(default_factory=dict)  # counts, duplicates, source, sha256 -> manifest
    validation: Split = field(default_factory=lambda: Split([], []))  # picks epochs; never reported as the result


def detect_format(spec: DatasetSpec, path: Path | None) -> str:
    if spec.format != "auto":
        return spec.format
    if path is None:
        return "hf"
    if path.is_dir():
        return "folders"
    return {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}.get(path.suffix.lower(), "?")


INT_LABEL = re.compile(r"-?[0-9]+")  # labels ordered as numbers: ASCII digits only ('²'.isdigit() is true)


def is_int_label(label: str) -> bool:
    return INT_LABEL.fullmatch(label) is not None


class _Reader:
    def __init__(self, spec: DatasetSpec, file: str, key: str):
        self.spec, self.file, self.key = spec, file, key
        self.label_type: tuple[type, str] | None = None  # JSONL: the labels' type and where it was first seen
        self.replaced = 0  # files read with U+FFFD for bytes that are not UTF-8 (encoding_errors = "replace")

    def fail(self, problem: str, fix: str | None = None) -> ConfigError:
        return ConfigError(self.file, self.key, problem, fix)

    def _text(self, path: Path, kind: str, root: Path | None = None) -> str:
        """A UTF-8 file: regular, at most LIMITS[kind], inside `root` (a folder dataset's folder) when given."""
        try:
            text, replaced = decode_text(path, read_file(path, kind, root=root), kind,
                                         replace=self.spec.encoding_errors == "replace")
        except InputError as exc:
            raise exc.located(self.file, self.key) from None
        self.replaced += replaced
        return text

    def records(self, path: Path, fmt: str) -> list[tuple[str, str]]:
        if not path.exists() and not path.is_symlink():
            raise self.fail(f"{path} does not exist", "fix the path; relative paths start at the recipe's folder")
        if fmt == "folders":
            return self._folders(path)
        if path.is_dir():
            raise self.fail(f"{path} is a folder; give a .csv, .tsv or .jsonl file (or format = \"folders\")")
        try:
            check_regular(path, "dataset file")
        except InputError as exc:
            raise exc.located(self.file, self.key) from None
        if fmt not in ("csv", "tsv", "jsonl"):
            raise self.fail(f"cannot tell the format of {path}",
                            "use a .csv, .tsv or .jsonl file, a folder, or set format")
        text = self._text(path, "dataset")
        return self._csv(path, text, fmt) if fmt in ("csv", "tsv") else self._jsonl(path, text)

    def _folders(self, path: Path) -> list[tuple[str, str]]:
        """One sub-folder per label, one .txt file per text; every file must stay inside `path` (a link to
        /etc/passwd would otherwise be read as a text and shipped to every device)."""
        if not path.is_dir():
            what = "a file" if path.is_file() else "not a folder"
            raise self.fail(f"{path} is {what} (format 'folders' wants one sub-folder per label)")
        out = []
        try:
            label_dirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
            for label_dir in label_dirs:
                for f in sorted(f for f in label_dir.glob("*.txt") if not f.is_dir()):
                    out.append((self._text(f, "text", root=path), label_dir.name))
        except OSError as exc:
            raise self.fail(f"{path} cannot be read ({exc.strerror or exc})") from None
        if not out:
            raise self.fail(f"{path} has no <label>/<text>.txt files",
                            "lay it out as one sub-folder per label with one .txt file per text")
        return out

    def _csv(self, path: Path, text: str, fmt: str) -> list[tuple[str, str]]:
        """CSV records as the csv module reads them (quoted fields may hold delimiters and line breaks; only
        \\r and \\n end a record, never U+2028), strictly: a stray quote or a row of another width is an
        error naming its row, not a silently shifted text."""
        tc, lc = self.spec.text_column, self.spec.label_column
        rows = csv.reader(io.StringIO(text, newline=""), delimiter="," if fmt == "csv" else "\t", strict=True)
        where = "the header"
        try:
            header = next(rows, [])
            for col, what in ((tc, "text_column"), (lc, "label_column")):
                if col not in header:
                    raise self.fail(f"{path} has no column {col!r} (columns: {', '.join(header) or 'none'})",
                                    f"set {what} to one of them")
            for col in {tc, lc}:
                if header.count(col) > 1:
                    raise self.fail(f"{path}: the header names column {col!r} {header.count(col)} times",
                                    "give each column its own name")
            tci, lci = header.index(tc), header.index(lc)
            out = []
            for n in itertools.count(1):
                where = f"row {n}"
                row = next(rows, None)
                if row is None:
                    return out
                if not row:  # a blank line
                    continue
                if len(row) != len(header):
                    raise self.fail(f"{path} row {n} (line {rows.line_num}) has {len(row)} fields, the header "
                                    f"{len(header)}", "quote fields that hold the delimiter or a line break")
                out.append((row[tci], row[lci].strip()))
        except csv.Error as exc:
            why = str(exc)
            if "field larger than field limit" in why:
                why = f"a field is larger than {csv.field_size_limit() >> 20} MiB (an unclosed quote?)"
            elif "unexpected end of data" in why:
                why = "a quoted field is not closed before the end of the file"
            raise self.fail(f"{path} {where} (line {rows.line_num}) is not valid {fmt.upper()}: {why}",
                            "fix that row: quote fields with \", and double a quote inside a quoted field") from None

    def _jsonl(self, path: Path, text: str) -> list[tuple[str, str]]:
        """One JSON object per line (lines end at \\n: a U+2028 inside a string does not end one). Texts are
        strings; labels are strings or integers, one type per dataset (not true, 1.0, null or a table)."""
        tc, lc = self.spec.text_column, self.spec.label_column
        out = []
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                obj = loads(line, what="the line", max_bytes=None, constants=False)
            except DocumentError as exc:
                raise self.fail(f"{path} line {n} is not JSON ({str(exc).replace('the line ', '', 1)})",
                                "one JSON object per line") from None
            if not isinstance(obj, dict) or tc not in obj or lc not in obj:
                raise self.fail(f"{path} line {n} lacks {tc!r} or {lc!r}",
                                "set text_column / label_column to the keys the file uses")
            txt, label = obj[tc], obj[lc]
            if not isinstance(txt, str):
                raise self.fail(f"{path} line {n}: {tc!r} is {_json_kind(txt)}, not a string",
                                "every text is a JSON string")
            if isinstance(label, bool) or not isinstance(label, (str, int)):
                raise self.fail(f"{path} line {n}: {lc!r} is {_json_kind(label)}; a label is a string or an "
                                "integer", "give every text a string (or integer) label")
            self.check_label_type(type(label), f"{path} line {n}")
            out.append((txt, str(label).strip()))
        return out

    def check_label_type(self, kind: type, where: str) -> None:
        if self.label_type is None:
            self.label_type = (kind, where)
        elif self.label_type[0] is not kind:
            first, at = self.label_type
            raise self.fail(f"{where}: the label is {_TYPE_WORDS[kind]} but {at} has {_TYPE_WORDS[first]}: "
                            "\"1\" and 1 would be one class or two by accident",
                            "write every label of the dataset the same way")


_TYPE_WORDS = {str: "a string", int: "an integer"}


def _json_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, (int, float)):
        return f"{value!r} (a number)"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _hub_records(spec: DatasetSpec, split: str, reader: _Reader) -> list[tuple[str, str]]:
    try:
        import datasets as hf_datasets
    except ImportError:
        raise MissingDependency("datasets", f"{reader.key} = {spec.source!r} (a hub dataset)") from None
    try:
        data = hf_datasets.load_dataset(spec.source[3:], split=split)
    except Exception as exc:  # noqa: BLE001 - the hub raises many kinds; all mean "not available"
        raise reader.fail(f"hub dataset {spec.source[3:]!r} split {split!r} is not available "
                          f"({type(exc).__name__})", "check the id and your network") from None
    for col in (spec.text_column, spec.label_column):
        if col not in data.column_names:
            raise reader.fail(f"hub dataset has no column {col!r} (columns: {', '.join(data.column_names)})")
    names = getattr(data.features.get(spec.label_column), "names", None)
    return [(str(r[spec.text_column]), names[r[spec.label_column]] if names else str(r[spec.label_column]))
            for r in data]


def _clean(records: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], int, int]:
    """Whitespace-normalised, empty texts and labels dropped, exact duplicates dropped (first kept)."""
    seen, out, empty, dupes = set(), [], 0, 0
    for text, label in records:
        text = " ".join(text.split())
        if not text or not label:
            empty += 1
            continue
        if text in seen:
            dupes += 1
            continue
        seen.add(text)
        out.append((text, label))
    return out, empty, dupes


def _label_order(found: set[str], spec: DatasetSpec, reader: _Reader) -> list[str]:
    if spec.labels is not None:
        unknown = sorted(found - set(spec.labels))
        if unknown:
            raise reader.fail(f"labels {unknown[:5]} are in the data but not in labels",
                              "add them to labels or remove those texts")
        return list(spec.labels)
    if all(is_int_label(x) for x in found):
        return sorted(found, key=int)
    return sorted(found)


def _stratified(items: list[tuple[str, int]], n: int, rng: random.Random) -> list[tuple[str, int]]:
    """About n items with each label's share kept (at least one per label when n allows)."""
    if n <= 0 or n >= len(items):
        return items
    by: dict[int, list] = {}
    for it in items:
        by.setdefault(it[1], []).append(it)
    out = []
    for group in by.values():
        k = max(1, round(n * len(group) / len(items)))
        out += rng.sample(group, min(k, len(group)))
    rng.shuffle(out)
    return out


def load_dataset(name: str, spec: DatasetSpec, base_dir: Path, file: str) -> Dataset:
    key = f"datasets.{name}.source"
    reader = _Reader(spec, file, key)
    path = source_path(spec.source, base_dir)
    fmt = detect_format(spec, path)
    if fmt == "hf":
        records = _hub_records(spec, spec.hf_split, reader)
    else:
        if path is None:
            raise reader.fail(f"the package of {spec.source!r} is not installed ({install_hint(spec.source)})")
        records = reader.records(path, fmt)
    records, empty, dupes = _clean(records)
    eval_records = None
    if spec.eval_source is not None or spec.hf_eval_split is not None:
        ereader = _Reader(spec, file, f"datasets.{name}.eval_source")
        ereader.label_type = reader.label_type  # one label type for the whole dataset
        if fmt == "hf":
            eval_records = _hub_records(spec, spec.hf_eval_split or spec.hf_split, ereader)
        else:
            epath = source_path(spec.eval_source, base_dir)
            eval_records = ereader.records(epath, detect_format(spec, epath)) if epath else []
        eval_records, e_empty, e_dupes = _clean(eval_records)
        train_set = {t for t, _ in records}
        overlap = sum(1 for t, _ in eval_records if t in train_set)
        eval_records = [r for r in eval_records if r[0] not in train_set]
        empty, dupes = empty + e_empty, dupes + e_dupes + overlap
        reader.replaced += ereader.replaced
        if not eval_records:
            raise ConfigError(file, f"datasets.{name}.eval_source", "holds no texts (after dropping empty ones "
                              "and those also in the train data)")
    if not records:
        raise reader.fail(f"{spec.source} holds no labelled texts", "check text_column and label_column")
    found = {lb for _, lb in records} | {lb for _, lb in (eval_records or [])}
    labels = _label_order(found, spec, reader)
    if len(labels) < 2:
        raise reader.fail(f"{spec.source} has only one label ({labels[0]!r}); a classifier needs at least two")
    ids = {lb: i for i, lb in enumerate(labels)}
    items = [(t, ids[lb]) for t, lb in records]
    rng = random.Random(spec.seed)
    if eval_records is None:
        by: dict[int, list] = {}
        for it in items:
            by.setdefault(it[1], []).append(it)
        train, evals = [], []
        for lab in sorted(by):
            group = by[lab]
            rng.shuffle(group)
            k = round(spec.eval_fraction * len(group)) if len(group) > 1 else 0
            k = max(1, k) if len(group) > 1 else 0
            evals += group[:k]
            train += group[k:]
        rng.shuffle(train)
        rng.shuffle(evals)
    else:
        train, evals = items, [(t, ids[lb]) for t, lb in eval_records]
    train = _stratified(train, spec.max_train, rng)
    evals = _stratified(evals, spec.max_eval, rng)
    train, validation = _hold_out(train, spec.validation_fraction, rng)
    if len({lb for _, lb in train}) < 2:
        raise reader.fail("the train split has fewer than two labels", "add texts or lower eval_fraction")
    if not evals:
        raise reader.fail("the eval split is empty", "add texts or raise eval_fraction")
    counts = {labels[i]: sum(1 for _, lb in train if lb == i) for i in range(len(labels))}
    digest = hashlib.sha256(json.dumps([train, evals, labels, validation]).encode()).hexdigest()
    facts = {"source": spec.source, "format": fmt, "labels": labels, "train": len(train), "eval": len(evals),
             "validation": len(validation),
             "train_per_label": counts, "duplicates_dropped": dupes, "empty_dropped": empty,
             "not_utf8_decoded_with_replacement": reader.replaced, "sha256": digest}
    return Dataset(name, labels, Split([t for t, _ in train], [lb for _, lb in train]),
                   Split([t for t, _ in evals], [lb for _, lb in evals]), facts,
                   Split([t for t, _ in validation], [lb for _, lb in validation]))


def _hold_out(items: list[tuple[str, int]], fraction: float, rng: random.Random):
    """(train, validation): `fraction` of each label's texts held out, at least one of a label that has
    three or more (so every label keeps at least two to train on), none when `fraction` is 0."""
    if fraction <= 0:
        return items, []
    by: dict[int, list] = {}
    for it in items:
        by.setdefault(it[1], []).append(it)
    held = set()
    for lab in sorted(by):
        group = by[lab]
        k = max(1, round(fraction * len(group))) if len(group) >= 3 else 0
        held.update(id(x) for x in rng.sample(group, k))
    return [x for x in items if id(x) not in held], [x for x in items if id(x) in held]
