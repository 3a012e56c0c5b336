"""Accuracy-aware quantization: candidates in order of compression, each exported and scored in its real
runtime; the first within the limit wins and every trial is reported; none within it fails the build."""

from __future__ import annotations

import pytest

from edgeslm.config.catalog import load_target
from edgeslm.config.passes import Int8QuantizeConfig
from edgeslm.config.recipe import load_recipe
from edgeslm.errors import CheckFailed
from edgeslm.pipeline import build, plan
from tiny import FINETUNE_TOPICS, write_recipe

pytestmark = pytest.mark.slow


def test_candidates_go_from_most_to_least_compressed(trainable_model):
    from pathlib import Path

    from edgeslm.models.loader import load_model
    from edgeslm.models.sources import resolve_source
    from edgeslm.passes.quant_search import candidates

    m = load_model(resolve_source(str(trainable_model("bert")), Path(".")), "sequence-classification",
                   labels=["a", "b", "c"])
    names = [n for n, _ in candidates(Int8QuantizeConfig(method="dynamic-int8"), m.hf)]
    assert names == ["as configured", "SmoothQuant alpha 0.5", "SmoothQuant alpha 0.85",
                     "FFN down-projections in float", "+ attention output projections in float",
                     "+ first and last layer in float"]


def test_search_picks_the_first_setting_that_holds(tmp_path, trainable_model, topics_csv):
    extra = (FINETUNE_TOPICS.format(data=topics_csv) + '[[passes]]\ntype = "quantize"\nmethod = "dynamic-int8"\n'
             'max_accuracy_drop = 50\n[eval]\nmetric = "accuracy"\n'
             '[verify]\nmin_cosine = 0.8\nmax_kl = 0.3\nmin_centered_cosine = 0.7\n')
    recipe = load_recipe(write_recipe(tmp_path / "r.toml", trainable_model("bert"), "sequence-classification",
                                      name="search", extra=extra, formats=("onnx",)))
    m = build(recipe, plan(recipe, [load_target("host")])[0], tmp_path / "out").manifest
    found = m.artifact("onnx").quantization["search"]
    assert found["chosen"] == "as configured" and len(found["trials"]) == 1 and found["limit_points"] == 50
    assert found["trials"][0]["value"] == m.artifact("onnx").task_metric.value


def test_no_setting_within_the_limit_fails_listing_every_trial(tmp_path, trainable_model, topics_csv, monkeypatch):
    """A baseline no artifact can reach (101%: the eager model's score, raised) makes every candidate
    miss; each is exported and scored for real, in order, and the build fails naming them all."""
    from edgeslm.tasks import encoder_build as stages
    from edgeslm.evaluate import EvalSet

    extra = (FINETUNE_TOPICS.format(data=topics_csv) + '[[passes]]\ntype = "quantize"\nmethod = "dynamic-int8"\n'
             'max_accuracy_drop = 0\n[eval]\nmetric = "accuracy"\n')
    recipe = load_recipe(write_recipe(tmp_path / "r.toml", trainable_model("bert"), "sequence-classification",
                                      name="nohold", extra=extra, formats=("onnx",)))
    score = EvalSet.score

    def raised_baseline(self, run, batch, centroids=None):
        out = score(self, run, batch, centroids)
        return {**out, "value": 1.01} if batch == stages.EAGER_BATCH else out  # eager = the baseline

    monkeypatch.setattr(EvalSet, "score", raised_baseline)
    with pytest.raises(CheckFailed) as info:
        build(recipe, plan(recipe, [load_target("host")])[0], tmp_path / "out", force=True)  # no cached scores
    msg = str(info.value)
    assert "no quantization setting keeps the accuracy drop within 0 points" in msg
    for name in ("as configured", "SmoothQuant alpha 0.5", "FFN down-projections in float",
                 "+ first and last layer in float"):
        assert name in msg
