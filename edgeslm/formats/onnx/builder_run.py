"""onnxruntime-genai's model builder, run with edgeslm's fixes for families it reads wrongly (this module is what
the decoder export runs in its subprocess: `python -m edgeslm.formats.onnx.builder_run <builder arguments>`).

- Gemma 3 (text): transformers 5 keeps RoPE per layer type (`rope_parameters.full_attention` /
  `.sliding_attention`); the builder reads one flat `rope_parameters` and `rope_local_base_freq`.
- SmolLM3: its layers without RoPE (`no_rope_layers[i] == 0`) were given an external RotaryEmbedding over a
  `position_ids` input the graph does not have (KeyError); they get no rotation at all, as in transformers.
- Mistral: its sliding window applies to every layer, but without `layer_types` the builder took every layer
  for global attention (wrong once the context outgrows the window).
Each fix is checked by the family's fp32 test (the file computes what transformers computes).
"""

from __future__ import annotations

import runpy
import sys


def _flat_rope(config) -> None:
    rp = getattr(config, "rope_parameters", None)
    if isinstance(rp, dict) and isinstance(rp.get("full_attention"), dict):
        full, local = dict(rp["full_attention"]), rp.get("sliding_attention") or rp["full_attention"]
        full.setdefault("type", full.get("rope_type", "default"))
        config.rope_parameters = full
        config.rope_theta = full.get("rope_theta")
        config.rope_local_base_freq = local.get("rope_theta")


def _window_everywhere(config) -> None:
    window = getattr(config, "sliding_window", None)
    if isinstance(window, int) and window > 0 and getattr(config, "layer_types", None) is None:
        config.layer_types = ["sliding_attention"] * config.num_hidden_layers


def _patch_config() -> None:
    from transformers import AutoConfig

    load = AutoConfig.from_pretrained.__func__

    def from_pretrained(cls, *args, **kwargs):
        config = load(cls, *args, **kwargs)
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        _flat_rope(text)
        _window_everywhere(text)
        return config

    AutoConfig.from_pretrained = classmethod(from_pretrained)


def _builders():
    """The builder's own modules: builder.py imports them as the top-level package `builders` (its folder is put
    on sys.path by onnxruntime_genai.models), not as onnxruntime_genai.models.builders."""
    import importlib

    import onnxruntime_genai.models  # noqa: F401 - puts the builder's folder on sys.path

    return importlib.import_module("builders.smollm")


def _patch_smollm3() -> None:
    smollm = _builders()

    cls = smollm.SmolLM3Model
    make = cls.make_attention

    def make_attention(self, layer_id, attention, root_input, **kwargs):
        if self.no_rope_layers[layer_id]:
            return make(self, layer_id, attention, root_input, **kwargs)
        saved = (self.attention_attrs["rope"], self.attention_attrs["use_rope_in_attn"], self.window_size)
        self.attention_attrs["rope"] = False
        self.attention_attrs["use_rope_in_attn"] = False
        if self.layer_types[layer_id] == "full_attention":
            self.window_size = -1
        try:  # the grandparent's: SmolLM3's own would switch the rotation back on
            return super(cls, self).make_attention(layer_id, attention, root_input, **kwargs)
        finally:
            self.attention_attrs["rope"], self.attention_attrs["use_rope_in_attn"], self.window_size = saved

    cls.make_attention = make_attention


def main() -> None:
    _patch_config()
    _patch_smollm3()
    sys.argv = ["onnxruntime_genai.models.builder", *sys.argv[1:]]
    runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
