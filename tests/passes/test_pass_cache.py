"""A recipe family (pruned, pruned+int8) computes fine-tuning, pruning with its recovery, and the score of the
model before compression once: the second variant takes them from the cache and gets the same model."""

from __future__ import annotations

import pytest

from edgeslm.config.catalog import load_target
from edgeslm.config.recipe import load_recipe
from edgeslm.pipeline import StepLog, build, plan
from tiny import FINETUNE_TOPICS, write_recipe

pytestmark = pytest.mark.slow

PRUNE = """
[[passes]]
type = "prune"
heads = 0.25
ffn = 0.25
importance_samples = 48
[passes.recovery]
epochs = 2
learning_rate = 3e-3
distill = "teacher"
"""
EVAL = '[eval]\nmetric = "accuracy"\n[verify]\nmin_cosine = 0.8\nmax_kl = 0.3\nmin_centered_cosine = 0.7\n'


def Log():
    log = StepLog()
    log.lines = []
    log.progress = log.lines.append
    return log


def test_pruned_variants_share_finetune_prune_and_the_score_before_compression(tmp_path, trainable_model, topics_csv):
    base = FINETUNE_TOPICS.format(data=topics_csv) + PRUNE
    variants = {"pruned": base + EVAL, "pruned-again": base + EVAL,
                "pruned-int8": base + '[[passes]]\ntype = "quantize"\nmethod = "dynamic-int8"\n' + EVAL}
    built = {}
    for name, extra in variants.items():
        recipe = load_recipe(write_recipe(tmp_path / f"{name}.toml", trainable_model("bert"), "sequence-classification",
                                          name=name, extra=extra, formats=("onnx",)))
        log = Log()
        built[name] = (build(recipe, plan(recipe, [load_target("host")])[0], tmp_path / "out", log=log), log)
    first, again, int8 = (built[n] for n in variants)
    steps = {n: [s["name"] for s in b.manifest.build["steps"]] for n, (b, _) in built.items()}
    assert "pass 1: prune" in steps["pruned"]  # (its score before compression may come from another test's build)
    for name in ("pruned-again", "pruned-int8"):
        assert "pass 1: prune" not in steps[name] and "evaluate: model before compression" not in steps[name]
        assert any("passes 0-1 (finetune, prune) taken from the cache" in line for line in built[name][1].lines)
    # the same weights: identical ONNX bytes, and the same facts (marked cached)
    sha = {n: next(f.sha256 for f in b.manifest.files if f.path == "model.onnx") for n, (b, _) in built.items()}
    assert sha["pruned"] == sha["pruned-again"] != sha["pruned-int8"]
    m1, m2 = first[0].manifest, again[0].manifest
    assert m2.passes[1]["cached"] and m2.passes[1]["heads"] == m1.passes[1]["heads"]
    assert m2.evaluation.original.value == m1.evaluation.original.value
    assert int8[0].manifest.artifacts[0].precision == "int8-dynamic"
