"""SmoothQuant is exact in float, leaves tied embeddings alone; keep-float planning by shape."""

from __future__ import annotations

import numpy as np
import torch

from edgeslm.config.passes import Int8QuantizeConfig
from edgeslm.models.loader import load_model
from edgeslm.models.sources import resolve_source
from edgeslm.passes.quantize import down_projections, prepare


def _load(tiny_model, arch, task):
    from pathlib import Path

    return load_model(resolve_source(str(tiny_model(arch, task)), Path(".")), task)


def _run(module, sample, names):
    with torch.inference_mode():
        return module(*(torch.from_numpy(sample[n]) for n in names)).numpy()


def test_smoothing_is_exact_in_float_and_keeps_tied_embeddings(tiny_model):
    m = _load(tiny_model, "distilbert", "fill-mask")  # decoder weight tied to the word embeddings
    names = list(m.input_names)
    samples = [m.tokenize([t], 64, 4) for t in ("The stock market fell.", "A man is playing a guitar.")]
    emb_before = m.module.model.distilbert.embeddings.word_embeddings.weight.detach().clone()
    q = Int8QuantizeConfig(method="dynamic-int8", smooth_alpha=0.7)
    prepared = prepare(m.module, q, lambda: samples, names)
    assert prepared.module is not m.module
    assert prepared.facts["smoothquant"]["smoothed_linear"] > 0
    for s in samples:
        np.testing.assert_allclose(_run(prepared.module, s, names), _run(m.module, s, names), atol=1e-4)
    smoothed_emb = prepared.module.model.distilbert.embeddings.word_embeddings.weight
    assert torch.equal(smoothed_emb, emb_before)  # tied decoder left alone
    assert torch.equal(m.module.model.distilbert.embeddings.word_embeddings.weight, emb_before)


def test_static_keeps_down_projections_float_by_default(tiny_model):
    m = _load(tiny_model, "bert", "embedding")
    downs = down_projections(m.module)
    assert downs and all(n.endswith("output.dense") for n in downs)
    static = prepare(m.module, Int8QuantizeConfig(method="static-int8", smooth_alpha=0), list, m.input_names)
    dynamic = prepare(m.module, Int8QuantizeConfig(method="dynamic-int8", smooth_alpha=0), list, m.input_names)
    assert static.kept_float == sorted(downs) and dynamic.kept_float == []
    excl = prepare(m.module, Int8QuantizeConfig(method="dynamic-int8", smooth_alpha=0, exclude=("*layer.0.*",)),
                   list, m.input_names)
    assert excl.kept_float and all(".layer.0." in n for n in excl.kept_float)
