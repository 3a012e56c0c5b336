"""GGUF tensors edgeslm cannot carry (Q2_K, Q3_K, the IQ and ternary types) are requantized: the build says so on the
console and in the manifest's build.warnings (type, how many tensors and layers, what they run as, what it
costs), not only in the manifest's not_carried."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgeslm.models.gguf_grid import UNCARRIED, not_carried_warning

SCHEME = "8da4w (int4 weights in groups of 32, int8 activations)"


def test_the_warning_names_types_counts_layers_and_the_cost():
    """On module_grids' facts for a Q3_K_M-like file: Q3_K in two layers, a Q2_K output layer, and one
    Q4_0 tensor whose grid did not reproduce the loaded weights."""
    skipped = {f"blk.{i}.{p}.weight": f"Q3_K {UNCARRIED}" for i in (0, 1) for p in ("attn_q", "attn_k", "ffn_up")}
    skipped |= {"blk.1.ffn_down.weight": f"Q2_K {UNCARRIED}", "output.weight": f"Q2_K {UNCARRIED}",
                "blk.0.ffn_down.weight": "its grid does not reproduce the weights transformers loaded"}
    w = not_carried_warning(skipped, SCHEME)
    assert "\n" not in w
    assert "Q3_K: 6 tensors (2 layers)" in w and "Q2_K: 2 tensors (1 layer, the output layer)" in w, w
    assert "1 more whose grid does not fit (blk.0.ffn_down.weight)" in w, w
    assert f"They run as {SCHEME}" in w and "perplexity increase against the file" in w, w
    assert not_carried_warning({}, SCHEME) is None


@pytest.mark.slow
def test_a_ternary_gguf_build_warns_on_the_console_and_in_the_manifest(tmp_path, decoder_models, monkeypatch):
    """A real TQ2_0 GGUF (ternary weights; gguf-py writes it) built with 8da4w and gguf_grid = "keep": no tensor
    can be carried, each is requantized, and the build says so where a user looks."""
    from edgeslm.cli import main
    from tiny import QUANT_8DA4W, write_generation_recipe, write_gguf

    path = write_gguf(decoder_models("llama-k"), tmp_path / "tiny.TQ2_0.gguf", quant="TQ2_0")
    loose = "[verify]\nmax_perplexity_increase = 2.0\nmin_top5_agreement = 0.3\n"
    recipe = write_generation_recipe(tmp_path / "q5.toml", path, name="q5", extra=QUANT_8DA4W + loose,
                                     formats=("onnx",))
    r = CliRunner().invoke(main, ["build", str(recipe), "-o", str(tmp_path / "out"), "-q"])
    assert r.exit_code == 0, r.output
    console = " ".join(r.output.split())  # the summary table wraps long lines
    assert "warning: GGUF tensors in block types edgeslm cannot carry were requantized" in console, r.output
    # 7 linears x 2 layers, the output layer and the embedding table
    assert "TQ2_0: 16 tensors (2 layers, the output layer, the embedding table)" in console, r.output
    assert "8da4w (int4 weights in groups of 32, int8 activations; the embedding table int8 per row)" in console
    m = json.loads((tmp_path / "out" / "q5" / "host" / "manifest.json").read_text())
    [w] = [w for w in m["build"]["warnings"] if "GGUF" in w]
    assert "TQ2_0: 16 tensors" in w and "perplexity increase against the file" in w
