"""finetune and prune on tiny models of all four encoder architectures: heads and FFN neurons are cut out
of the weight matrices by measured importance, shared weights (ALBERT) once, stacked FFNs (MobileBERT)
all; the pruned model still runs and recovers by fine-tuning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgeslm.config.data import DatasetSpec
from edgeslm.config.passes import FinetuneConfig, PruneConfig, TrainingSpec
from edgeslm.datasets import load_dataset
from edgeslm.models.loader import load_model
from edgeslm.models.sources import resolve_source
from edgeslm.passes import PassContext
from edgeslm.passes.finetune import accuracy, train
from edgeslm.passes.prune import importance, structure
from edgeslm.passes.prune import run as prune
from tiny import ARCHS, make_model, write_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def topics(tmp_path_factory):
    path = write_dataset(tmp_path_factory.mktemp("topics"), per_label=60)
    return load_dataset("topics", DatasetSpec(source=str(path)), Path("."), "test")


@pytest.fixture(scope="module")
def trainable(tmp_path_factory):
    made = {}

    def get(arch):
        if arch not in made:
            made[arch] = make_model(arch, "embedding", tmp_path_factory.mktemp(f"trainable-{arch}"),
                                    initializer_range=0.02)
        return made[arch]
    return get


def _classifier(trainable, arch, topics):
    return load_model(resolve_source(str(trainable(arch)), Path(".")), "sequence-classification",
                      labels=topics.labels)


def _ctx(model, topics):
    from edgeslm.config.recipe import Recipe

    recipe = Recipe(name="t", model={"source": "x", "task": "sequence-classification"},
                    inputs={"max_seq_len": 64})
    return PassContext(model=model, recipe=recipe, datasets=lambda name: topics, calibration=list,
                       step=lambda name: __import__("contextlib").nullcontext())


def test_finetune_learns_the_topics(trainable, topics):
    model = _classifier(trainable, "bert", topics)
    before = accuracy(model, topics.eval.texts, topics.eval.labels, 64)
    facts = train(model, topics, FinetuneConfig(epochs=8, learning_rate=5e-3), 64)
    after = accuracy(model, topics.eval.texts, topics.eval.labels, 64)
    assert before < 0.6 and after > 0.85
    best = max(facts["history"], key=lambda e: (e["validation_accuracy"], -e["validation_loss"]))
    assert facts["kept_epoch"] == best["epoch"] and facts["picked_on"].startswith("validation split")
    assert len(facts["history"]) == 8 and all("train_loss" in e and "validation_loss" in e for e in facts["history"])
    head_only = _classifier(trainable, "bert", topics)
    encoder = {n: p.clone() for n, p in head_only.hf.named_parameters() if n.startswith("bert.")}
    train(head_only, topics, FinetuneConfig(epochs=1, learning_rate=5e-3, train="head"), 64)
    assert all(torch.equal(p, encoder[n]) for n, p in head_only.hf.named_parameters() if n in encoder)


@pytest.mark.parametrize("arch", ARCHS)
def test_prune_shrinks_every_architecture(trainable, topics, arch):
    model = _classifier(trainable, arch, topics)
    train(model, topics, FinetuneConfig(epochs=2, learning_rate=5e-3), 64)
    attn, ffn = structure(model.hf)
    heads_before = [a.q.out_features // a.head_dim for a in attn]
    ffn_before = [f.up.out_features for f in ffn]
    params_before = sum(p.numel() for p in model.hf.parameters())
    sample = model.tokenize(topics.eval.texts[:3], 64)
    facts = prune(_ctx(model, topics), PruneConfig(heads=0.5, ffn=0.5, importance_samples=32))
    attn, ffn = structure(model.hf)
    assert [a.q.out_features // a.head_dim for a in attn] == [h - h // 2 for h in heads_before]
    assert [f.up.out_features for f in ffn] == [n - n // 2 for n in ffn_before]
    for a in attn:  # q, k, v rows and the output projection's columns shrink together
        assert a.q.weight.shape[0] == a.k.weight.shape[0] == a.v.weight.shape[0] == a.o.weight.shape[1]
    assert facts["parameters"]["after"] < params_before == facts["parameters"]["before"]
    if arch == "albert":  # one shared layer: pruned once, every layer uses the pruned weights
        assert len(attn) == 1 and model.hf.config.num_hidden_layers == 2
    if arch == "mobilebert":  # the stacked feed-forward networks are pruned too
        assert len(ffn) == model.hf.config.num_hidden_layers * model.hf.config.num_feedforward_networks
    out = model.module(**{k: torch.from_numpy(v) for k, v in sample.items()})
    assert out.shape == (3, 3) and torch.isfinite(out).all()


def test_importance_is_measured(trainable, topics):
    """A head whose value projection is zeroed contributes nothing: it is the one removed."""
    model = _classifier(trainable, "bert", topics)
    train(model, topics, FinetuneConfig(epochs=2, learning_rate=5e-3), 64)
    attn, ffn = structure(model.hf)
    a = attn[0]
    with torch.no_grad():
        a.v.weight[a.head_dim * 2: a.head_dim * 3] = 0
        a.v.bias[a.head_dim * 2: a.head_dim * 3] = 0
    scores = importance(model, topics, PruneConfig(heads=0.25, importance_samples=32), 64, attn, ffn)
    per_head = scores[id(a.o)].reshape(-1, a.head_dim)[:, 0]
    assert int(per_head.argmin()) == 2 and float(per_head[2]) == 0.0
    prune(_ctx(model, topics), PruneConfig(heads=0.25, importance_samples=32))
    assert a.q.out_features == 3 * a.head_dim  # one of four heads removed: the dead one
    with torch.no_grad():
        kept_values = a.v.weight.abs().sum(1).reshape(3, a.head_dim).sum(1)
    assert bool((kept_values > 0).all())


def test_recovery_after_pruning_with_distillation(trainable, topics):
    model = _classifier(trainable, "distilbert", topics)
    train(model, topics, FinetuneConfig(epochs=6, learning_rate=5e-3), 64)
    ctx = _ctx(model, topics)
    import copy

    ctx.teacher = copy.deepcopy(model)
    tuned = accuracy(model, topics.eval.texts, topics.eval.labels, 64)
    facts = prune(ctx, PruneConfig(heads=0.5, ffn=0.5, importance_samples=64,
                                   recovery=TrainingSpec(epochs=3, learning_rate=3e-3, distill="teacher")))
    assert facts["recovery"]["distilled"] and len(facts["recovery"]["history"]) == 3
    assert accuracy(model, topics.eval.texts, topics.eval.labels, 64) >= tuned - 0.15


def test_epochs_are_picked_on_a_validation_split_the_eval_split_never_sees(topics, trainable):
    """The validation texts come out of the train split, stratified; the eval split (what the build reports)
    shares no text with either; patience stops early; balanced class weights train."""
    train_set, val, ev = set(topics.train.texts), set(topics.validation.texts), set(topics.eval.texts)
    assert val and not (val & train_set) and not (val & ev) and not (train_set & ev)
    assert set(topics.validation.labels) == set(range(len(topics.labels)))
    model = _classifier(trainable, "bert", topics)
    facts = train(model, topics, FinetuneConfig(epochs=20, learning_rate=0.3, patience=2,
                                                class_weights="balanced"), 64)
    assert facts["stopped_early"] and facts["epochs_run"] < 20 and facts["class_weights"] == "balanced"
    assert facts["epochs_run"] - facts["kept_epoch"] == 2
    none = load_dataset("topics", DatasetSpec(source=str(topics.facts["source"]), validation_fraction=0),
                        Path("."), "test")
    facts = train(_classifier(trainable, "bert", none), none, FinetuneConfig(epochs=2, learning_rate=5e-3), 64)
    assert facts["picked_on"] == "last epoch (no validation split)" and facts["kept_epoch"] == 2
