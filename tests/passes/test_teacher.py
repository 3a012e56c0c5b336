"""Distillation from an external teacher (a training step's `teacher`): loaded once, checked to take the same
token ids and score the same labels, its files part of the pass cache's key; a missing one is named by validate."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgeslm.cli import main
from edgeslm.config.catalog import load_target
from edgeslm.config.recipe import load_recipe
from edgeslm.errors import ConfigError
from edgeslm.pipeline import build, plan
from tiny import make_model, write_recipe

pytestmark = pytest.mark.slow


def _teacher(folder, labels):
    make_model("bert", "sequence-classification", folder, initializer_range=0.02)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["id2label"] = {str(i): lb for i, lb in enumerate(labels)}
    cfg["label2id"] = {lb: i for i, lb in enumerate(labels)}
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def _recipe(tmp_path, student, data, teacher, name="distilled"):
    extra = (f'[datasets.topics]\nsource = "{data}"\n[[passes]]\ntype = "finetune"\nepochs = 2\n'
             f'learning_rate = 5e-3\ndistill = "teacher"\nteacher = "{teacher}"\n')
    return write_recipe(tmp_path / f"{name}.toml", student, "sequence-classification", name=name, extra=extra,
                        formats=("onnx",))


def test_an_external_teacher_is_distilled_from_and_checked(tmp_path, trainable_model, topics_csv):
    student = trainable_model("bert")
    good = _teacher(tmp_path / "teacher", ["culture", "money", "tech"])
    recipe = load_recipe(_recipe(tmp_path, student, topics_csv, good))
    r = build(recipe, plan(recipe, [load_target("host")])[0], tmp_path / "out")
    assert r.manifest.passes[0]["distilled"] and any(s["name"].startswith("load teacher") for s in r.manifest.build["steps"])

    wrong = _teacher(tmp_path / "wrong", ["a", "b", "c"])
    recipe = load_recipe(_recipe(tmp_path, student, topics_csv, wrong, name="wrong"))
    with pytest.raises(ConfigError, match=r"passes.teacher.*scores labels \['a', 'b', 'c'\]"):
        build(recipe, plan(recipe, [load_target("host")])[0], tmp_path / "out")

    missing = _recipe(tmp_path, student, topics_csv, tmp_path / "nowhere", name="missing")
    out = CliRunner().invoke(main, ["validate", str(missing)])
    assert out.exit_code == 2 and "passes[0].teacher" in out.output, out.output
