"""Model folders are input: broken or unsuitable ones are refused with one line, exit 2, before the slow
steps and without leaving a build folder; a random task head is refused unless the recipe allows it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeslm.cli import main
from edgeslm.errors import EXIT_USER
from tiny import write_recipe

EXE = shutil.which("edgeslm", path=str(Path(sys.executable).parent)) or "edgeslm"


def _copy(tiny_model, tmp_path, arch="bert", task="embedding"):
    dst = tmp_path / "model"
    shutil.copytree(tiny_model(arch, task), dst)
    return dst


def _build_fails(tmp_path, folder, task="embedding", extra="", words=(), fast=True):
    recipe = write_recipe(tmp_path / "r.toml", folder, task, name="broken", extra=extra, formats=("onnx",))
    t0 = time.perf_counter()
    r = subprocess.run([EXE, "build", str(recipe), "-o", str(tmp_path / "out"), "-q"], capture_output=True,
                       text=True, timeout=600)
    took = time.perf_counter() - t0
    assert r.returncode == EXIT_USER, r.stdout + r.stderr
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stdout + r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert not (tmp_path / "out" / "broken").exists()  # no empty build folder left behind
    if fast:
        assert took < 8, f"refused only after {took:.1f}s (process start included)"
    v = CliRunner().invoke(main, ["validate", str(recipe)])  # validate finds the same, without torch
    if fast:
        assert v.exit_code == EXIT_USER and "model.source" in v.output
    return lines[0]


def test_folder_without_tokenizer_is_refused(tmp_path, tiny_model):
    folder = _copy(tiny_model, tmp_path)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    _build_fails(tmp_path, folder, words=("no tokenizer files", "tokenizer.save_pretrained"))


def test_tokenizer_far_smaller_than_the_embedding_table(tmp_path, tiny_model):
    folder = _copy(tiny_model, tmp_path)
    (folder / "tokenizer.json").unlink()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] +
                                                 [f"w{i}" for i in range(45)]) + "\n")
    _build_fails(tmp_path, folder, words=("the tokenizer has 50 tokens", "not this model's tokenizer"))


@pytest.mark.parametrize("damage,words", [
    ("truncate", "is damaged"), ("random", "is damaged"), ("missing", "no weights"),
    ("t5", "architecture 't5' is not supported"), ("config", "config.json is not valid JSON"),
])
def test_broken_model_files(tmp_path, tiny_model, damage, words):
    folder = _copy(tiny_model, tmp_path)
    weights = folder / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "random":
        import os

        weights.write_bytes(os.urandom(4096))
    elif damage == "missing":
        weights.unlink()
    elif damage == "t5":
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "t5", "architectures": ["T5Model"]}))
    else:
        (folder / "config.json").write_text('{"model_type": "bert", ')
    _build_fails(tmp_path, folder, words=(words,))


def test_texts_the_tokenizer_cannot_read_are_refused(tmp_path, tiny_model):
    extra = '[verify]\ntexts = ["Η γρήγορη καφέ αλεπού πηδάει", "Ο σκύλος κοιμάται στον ήλιο", "Καλημέρα κόσμε"]\n'
    _build_fails(tmp_path, tiny_model("bert", "embedding"), extra=extra,
                 words=("verification texts are 100% unknown tokens",), fast=False)


def test_untrained_head_is_refused_unless_allowed(tmp_path, tiny_model):
    base = tiny_model("bert", "embedding")  # saved as a plain BertModel: no classification head
    _build_fails(tmp_path, base, task="sequence-classification", fast=False,
                 words=("lacks weights the sequence-classification model needs", "classifier",
                        "allow_untrained_head = true"))
    recipe = write_recipe(tmp_path / "ok.toml", base, "sequence-classification", name="allowed",
                          extra="", formats=("onnx",))
    recipe.write_text(recipe.read_text().replace('task = "sequence-classification"',
                                                 'task = "sequence-classification"\nallow_untrained_head = true'))
    r = subprocess.run([EXE, "build", str(recipe), "-o", str(tmp_path / "out2")], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning: sequence-classification head initialised at random" in r.stdout
    m = json.loads((tmp_path / "out2/allowed/host/manifest.json").read_text())
    assert any("initialised at random" in w for w in m["build"]["warnings"])
