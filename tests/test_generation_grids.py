"""text-generation from quantized sources: GGUF files (transformers dequantizes them on load; damaged ones are
refused in one line) and the integer grids both formats carry instead of rounding again (a GGUF's own Q4_0,
Q4_1 and Q8_0 blocks, neural-compressor GPTQ's symmetric int4), read exactly and carried only where they
reproduce the weights the model loaded. Tiny random decoders (conftest's session-wide decoder_models)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeslm.config.recipe import load_recipe
from edgeslm.errors import ConfigError
from tiny import QUANT_8DA4W, build_generation, metrics, write_generation_recipe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def decoders(decoder_models):
    return {"llama": decoder_models("llama")}


def test_a_gguf_source_builds_and_damaged_ggufs_are_refused(tmp_path, decoders):
    """GGUF files (what people have) as the source: transformers dequantizes the Q8_0 tensors on load; the
    manifest says which grid the file held. A file that is not GGUF, or is cut short, is named in one line."""
    from edgeslm.errors import ModelSourceError
    from tiny import write_gguf

    path = write_gguf(decoders["llama"], tmp_path / "tiny.Q8_0.gguf")
    r = build_generation(tmp_path, path, "gguf", formats=("onnx",))  # the loading is the same for both formats
    a = r.manifest.artifacts[0]
    assert a.verification.passed and r.manifest.model["gguf"]["tensor_types"]["Q8_0"] >= 14
    assert r.manifest.model["model_type"] == "llama" and list(r.manifest.model["files"]) == [path.name]
    assert all(c["artifact"] == c["reference"] for c in a.extras["continuations"])
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04" + bytes(100))
    for bad, why in ((cut, "damaged"), (fake, "not a GGUF file"), (tmp_path / "none.gguf", "does not exist")):
        with pytest.raises(ModelSourceError, match=why) as info:
            build_generation(tmp_path, bad, "bad")
        assert bad.name in str(info.value)


def test_a_gguf_grid_is_carried_instead_of_rounded_again(tmp_path, decoders):
    """A Q4_1 GGUF (w = q d + m per block of 32): with gguf_grid = "keep" (the default) the ONNX file holds
    the file's own integers, scales and minimums, so the eager model read back from it equals the weights
    transformers dequantized, and only the int8 activations cost anything; "requantize" rounds the
    dequantized floats to a symmetric int4 grid again and loses more. By default (onnx_ops = "edgeslm") each
    Q4_1 projection is one GgufLinear node (edgeslm's op library, verified in the runtime folder the device
    gets), the head (Q4_1 here) too; with onnx_ops = "standard", MatMulNBits over the input widened with its
    block sums, and the head, which onnxruntime's own ops cannot hold exactly beside the lookup, is named. The .pte runs the file's Q4_1 blocks, the head's too, as
    edgeslm::gguf_linear (edgeslm's kernel, verified in the runtime the device gets)."""
    from tiny import write_gguf

    path = write_gguf(decoders["llama"], tmp_path / "tiny.Q4_1.gguf", quant="Q4_1")
    loose = "[verify]\nmax_perplexity_increase = 0.5\nmin_top5_agreement = 0.5\n"
    keep = build_generation(tmp_path, path, "keep", QUANT_8DA4W.replace("embeddings = true\n", "") + loose)
    again = build_generation(tmp_path, path, "again", QUANT_8DA4W.replace("embeddings = true\n", 'gguf_grid = "requantize"\n') + loose,
                   formats=("onnx",))
    plain = build_generation(tmp_path, path, "plain", QUANT_8DA4W.replace("embeddings = true\n", 'onnx_ops = "standard"\n') + loose,
                   formats=("onnx",))
    pte, k, a, s = (keep.manifest.artifacts[0], keep.manifest.artifacts[1], again.manifest.artifacts[0],
                    plain.manifest.artifacts[0])
    grid = s.quantization["gguf_grid"]
    assert grid["carried_layers"] == 10 and grid["types"] == ["Q4_1"]  # qkv, o, gate, up, down x 2 layers
    assert "no exact form in onnxruntime's own ops" in grid["not_carried"]["output.weight"]
    grid = k.quantization["gguf_grid"]
    assert grid["carried_layers"] == 11 and grid["types"] == ["Q4_1"] and not grid["not_carried"]  # and the head
    assert "gguf_grid" not in a.quantization
    # edgeslm's op: one GgufLinear per projection and the head, nothing left in MatMulNBits, the op library named
    assert k.export["ops"]["ai.edgeslm.GgufLinear"] == 11 and k.export["weights"]["matmul_nbits"] == 0
    assert "Concat" not in k.export["ops"] and k.export["custom_ops"]["nodes"] == 11
    assert "11 as edgeslm's GgufLinear" in k.quantization["grid"] and k.verification.passed
    # standard ops: one asymmetric MatMulNBits per projection over its input widened with the input's block sums
    # (one small MatMulNBits and a Concat per distinct input: 4 per layer; q, k, v fused and gate, up share theirs)
    assert s.export["ops"]["com.microsoft.MatMulNBits"] == 11 + 8 and s.export["ops"]["Concat"] == 8
    assert "MatMul" not in s.export["ops"] and "Add" not in s.export["ops"] and "custom_ops" not in s.export
    assert s.export["weights"]["matmul_nbits"] == 11
    ac = metrics(a.compression)
    for onnx_file in (k, s):
        kc = metrics(onnx_file.compression)
        # one rounding (activations) instead of two (measured: KL 0.006 vs 0.083, top-1 0.91 vs 0.52; the
        # perplexity of a random model moves either way, SmolLM2's is in the closing note: +1.0% vs +29.7%)
        assert kc["kl_mean"] < 0.25 * ac["kl_mean"] and kc["top1_agreement"] > ac["top1_agreement"], (kc, ac)
        kf = metrics(onnx_file.verification)  # vs the eager model with the file's weights read back
        assert kf["top1_agreement"] >= 0.95 and kf["kl_mean"] < 0.002, kf  # measured: 1.0, KL 0.0004
    # the .pte: 14 linears (q, k, v, o, gate, up, down x 2 layers) and the head on the file's grid
    pg = pte.quantization["gguf_grid"]
    assert pg["carried_layers"] == 15 and pg["types"] == ["Q4_1"] and not pg["not_carried"], pg
    ops = pte.export["delegation"]["non_delegated_by_op"]
    assert ops.get("edgeslm::gguf_linear") == 15 and ops.get("linear", 0) == 0, ops
    assert "15 as edgeslm::gguf_linear" in pte.quantization["grid"]
    assert keep.manifest.passes[0]["output_layer_int8"] == []  # the head runs the file's grid, not int8
    pc = metrics(pte.compression)
    assert pc["kl_mean"] < 0.25 * ac["kl_mean"] and pc["top1_agreement"] > ac["top1_agreement"], (pc, ac)
    assert pte.verification.passed


def test_a_q8_0_gguf_runs_its_own_grid_in_both_formats(tmp_path, decoders):
    """A Q8_0 GGUF (w = q d, an int8 q and a fp16 d per block of 32: what people take for small models) under
    8da4w with gguf_grid = "keep": the .pte runs every linear and the head as edgeslm::gguf_linear over the
    file's Q8_0 blocks and looks tokens up in the file's own table (ExecuTorch's int8 embedding with a scale
    per block of 32, the very integers and scales); ONNX holds the linears in 8-bit MatMulNBits. Only the int8
    activations cost anything, so both stay far closer to the dequantized GGUF than rounding its weights
    to int4 again does."""
    from tiny import write_gguf

    path = write_gguf(decoders["llama"], tmp_path / "tiny.Q8_0.gguf", quant="Q8_0")
    loose = "[verify]\nmax_perplexity_increase = 0.5\nmin_top5_agreement = 0.5\n"
    keep = build_generation(tmp_path, path, "keep8", QUANT_8DA4W + loose)
    again = build_generation(tmp_path, path, "again8", QUANT_8DA4W + 'gguf_grid = "requantize"\n' + loose, formats=("executorch",))
    pte, onnx_file, rounded = keep.manifest.artifacts[0], keep.manifest.artifacts[1], again.manifest.artifacts[0]
    pg = pte.quantization["gguf_grid"]
    assert pg["carried_layers"] == 15 and pg["types"] == ["Q8_0"] and not pg["not_carried"], pg
    ops = pte.export["delegation"]["non_delegated_by_op"]
    assert ops.get("edgeslm::gguf_linear") == 15 and ops.get("linear", 0) == 0, ops
    assert "15 as edgeslm::gguf_linear over the file's Q8_0 blocks" in pte.quantization["grid"]
    assert pte.quantization["output_layer_int8"] == []
    emb = pte.quantization["embeddings"]
    assert emb["grid"] == "GGUF Q8_0" and emb["block"] == 32, emb
    assert rounded.quantization["embeddings"]["int8_per_row"] and "gguf_grid" not in rounded.quantization
    og = onnx_file.quantization["gguf_grid"]
    assert og["types"] == ["Q8_0"] and og["carried_layers"] == 11, og  # qkv, o, gate, up, down x 2 and the head
    # labelled as what the files hold (8-bit GGUF blocks), not as the recipe's int4 method
    assert pte.precision == onnx_file.precision == "GGUF Q8_0" and rounded.precision == "8da4w"
    kc, rc = metrics(pte.compression), metrics(rounded.compression)
    assert kc["kl_mean"] < 0.1 * rc["kl_mean"] and kc["top1_agreement"] > rc["top1_agreement"], (kc, rc)
    for a in (pte, onnx_file):
        assert a.verification.passed, a.name
        assert metrics(a.compression)["top1_agreement"] >= 0.95, (a.name, metrics(a.compression))


# a llama-quantize-style mix: every block type, and q, k, v of one layer in three different types (K_M files
# give attn_v more bits than attn_q and attn_k)
K_MIX = {"blk.0.attn_q.weight": "Q4_K", "blk.0.attn_k.weight": "Q5_K", "blk.0.attn_v.weight": "Q6_K",
         "blk.0.attn_output.weight": "Q5_0", "blk.0.ffn_gate.weight": "Q5_1", "blk.0.ffn_up.weight": "Q4_K",
         "blk.0.ffn_down.weight": "Q6_K", "blk.1.attn_q.weight": "Q5_K", "blk.1.attn_k.weight": "Q5_K",
         "blk.1.attn_v.weight": "Q5_K", "blk.1.attn_output.weight": "Q6_K", "blk.1.ffn_gate.weight": "Q4_K",
         "blk.1.ffn_up.weight": "Q4_0", "blk.1.ffn_down.weight": "Q5_1", "output.weight": "Q6_K",
         "token_embd.weight": "Q4_K"}


def test_k_quant_and_q5_gguf_grids_run_exactly_in_both_formats(tmp_path, decoder_models):
    """A GGUF holding Q4_K, Q5_K, Q6_K (super-blocks of 256 with integer sub-block scales and minimums), Q4_0, Q5_0
    and Q5_1, as llama-quantize's K_M mixes do (K_MIX): every linear and the head run the file's own blocks, in the
    .pte as edgeslm::gguf_linear and in ONNX as GgufLinear nodes (q, k and v of different types one node each,
    then a Concat). The eager models read back from the files hold exactly the weights transformers dequantized
    (verification against them passes), and only the int8 activations separate the files from the dequantized
    GGUF. Rounding the same file's weights again to int4 loses far more."""
    from tiny import write_gguf

    path = write_gguf(decoder_models("llama-k"), tmp_path / "tiny.K_M.gguf", types=K_MIX)
    keep = build_generation(tmp_path, path, "kmix", QUANT_8DA4W)
    loose = "[verify]\nmax_perplexity_increase = 5\nmin_top5_agreement = 0.1\n"
    again = build_generation(tmp_path, path, "kagain", QUANT_8DA4W + 'gguf_grid = "requantize"\n' + loose,
                             formats=("executorch",))
    pte, onnx_file, rounded = keep.manifest.artifacts[0], keep.manifest.artifacts[1], again.manifest.artifacts[0]
    types = ["Q4_0", "Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q6_K"]
    pg = pte.quantization["gguf_grid"]
    assert pg["carried_layers"] == 15 and pg["types"] == types and not pg["not_carried"], pg
    ops = pte.export["delegation"]["non_delegated_by_op"]
    assert ops.get("edgeslm::gguf_linear") == 15 and ops.get("linear", 0) == 0, ops
    og = onnx_file.quantization["gguf_grid"]
    assert og["carried_layers"] == 11 and og["types"] == types, og
    # 3 nodes for layer 0's q, k, v, 1 for layer 1's, o, gate, up, down x 2, the head: 13; nothing left in MatMulNBits
    assert onnx_file.export["ops"]["ai.edgeslm.GgufLinear"] == 13 and onnx_file.export["weights"]["matmul_nbits"] == 0
    assert pte.precision == onnx_file.precision == "GGUF " + "/".join(types)
    rc = metrics(rounded.compression)
    for a in (pte, onnx_file):
        assert a.verification.passed, (a.name, metrics(a.verification))
        v, c = metrics(a.verification), metrics(a.compression)
        assert v["kl_mean"] < 0.01 and v["top1_agreement"] >= 0.95, (a.name, v)
        assert c["kl_mean"] < 0.25 * rc["kl_mean"], (a.name, c, rc)


def test_a_float_gguf_is_quantized_by_the_recipe_without_warnings(tmp_path, decoder_models):
    """An F16 (or BF16) GGUF holds no grid to carry: the recipe's 8da4w quantizes it (no 'not carried' warning),
    and the manifest says the file held F16."""
    from tiny import write_gguf

    path = write_gguf(decoder_models("llama"), tmp_path / "tiny.F16.gguf", quant="F16")
    r = build_generation(tmp_path, path, "f16", QUANT_8DA4W + "[verify]\nmax_perplexity_increase = 0.5\n"
                         "min_top5_agreement = 0.5\n", formats=("onnx",))
    a = r.manifest.artifacts[0]
    assert r.manifest.model["gguf"]["tensor_types"].get("F16", 0) >= 14, r.manifest.model["gguf"]
    assert not any("not carried" in w or "requantized" in w for w in r.manifest.build.get("warnings", [])), r.manifest.build
    assert "gguf_grid" not in a.quantization and a.precision == "8da4w"
    # BF16 too: nothing to carry, nothing said not carried
    import torch
    from transformers import AutoModelForCausalLM

    from edgeslm.models.gguf_grid import module_grids

    bf16 = write_gguf(decoder_models("llama"), tmp_path / "tiny.BF16.gguf", quant="BF16")
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=bf16.name, dtype=torch.float32)
    assert module_grids(bf16, model) == ({}, {})


def test_a_gguf_grid_that_does_not_reproduce_the_loaded_weights_is_not_carried(tmp_path, decoders):
    """A tensor is carried only where its dequantized grid equals what transformers loaded: a model whose
    down projection differs from the file (here changed after loading) keeps that layer off the grid and
    names it, in both formats' fused and per-module views."""
    import torch
    from transformers import AutoModelForCausalLM

    from edgeslm.models.gguf_grid import module_grids, read_grids
    from tiny import write_gguf

    path = write_gguf(decoders["llama"], tmp_path / "tiny.Q4_0.gguf", quant="Q4_0")
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name, dtype=torch.float32)
    per, skipped = module_grids(path, model)
    assert len(per) == 16 and not skipped  # 7 linears x 2 layers, the head and the embedding table (Q4_0 here)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] += 0.01
    per, skipped = module_grids(path, model)
    assert "model.layers.1.mlp.down_proj" not in per and len(per) == 15
    assert skipped == {"blk.1.ffn_down.weight": "its grid does not reproduce the weights transformers loaded"}
    fused, why = read_grids(path, model)
    assert "model.layers.1.mlp.down_proj" not in fused and "model.layers.0.mlp.down_proj" in fused
    assert "blk.1.ffn_down.weight" in why


def test_an_embedding_table_that_does_not_match_its_grid_is_not_carried(tmp_path, decoders):
    """The token embedding table's Q8_0 grid is carried only where it reproduces the table transformers
    loaded (here changed after loading: left off and named), and only into an int8 embedding of its shape
    (a grid of another shape is not copied in: the table stays rounded from the floats)."""
    import torch
    from executorch.examples.models.llama.source_transformation.quantize import get_quant_embedding_transform
    from transformers import AutoModelForCausalLM

    from edgeslm.formats.executorch.carry import carry_embedding
    from edgeslm.models.gguf_grid import module_grids
    from tiny import write_gguf

    path = write_gguf(decoders["llama"], tmp_path / "tiny.Q8_0.gguf", quant="Q8_0")
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name, dtype=torch.float32)
    per, _ = module_grids(path, model)
    grid = per["embed_tokens"]
    assert grid["type"] == "Q8_0"
    table = torch.nn.Sequential(torch.nn.Embedding(*grid["q"].shape))
    get_quant_embedding_transform("8,32", quantize_with_hqq=False)(table)
    before = table[0].weight.clone()
    narrow = {**grid, "q": grid["q"][:, :32], "d": grid["d"][:, :1]}
    assert not carry_embedding(table, narrow) and torch.equal(table[0].weight, before)
    assert carry_embedding(table, grid) and torch.equal(
        table[0].weight, torch.from_numpy(grid["q"].astype(np.int16) - 128).to(torch.int8))
    with torch.no_grad():
        model.model.embed_tokens.weight[3, 5] += 0.01
    per, skipped = module_grids(path, model)
    assert "embed_tokens" not in per and "lm_head" in per
    assert skipped == {"token_embd.weight": "its grid does not reproduce the weights transformers loaded"}


def test_a_gptq_grid_is_carried_into_both_formats(tmp_path, decoders):
    """algorithm = "gptq": neural-compressor's GPTQ chooses the int4 grid (symmetric, groups of 32) on the
    calibration texts, and both formats carry that grid as it is: the ONNX file's MatMulNBits hold GPTQ's
    integers and scales exactly, the .pte's int4 linears the same, both verified against their own eager
    model. GPTQ's integers are mostly the rounded weights (it moves some by one step to compensate error),
    so a wrong unpacking order would show."""
    import onnx
    import torch
    from onnx import numpy_helper
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgeslm.models.gguf_grid import _dequant, builder_grids
    from edgeslm.passes.gptq import calibration_chunks, gptq_grids
    from edgeslm.texts import builtin_texts

    loose = "[verify]\nmax_perplexity_increase = 0.5\nmin_top5_agreement = 0.5\n"  # random weights lose more
    r = build_generation(tmp_path, decoders["llama"], "gptq", QUANT_8DA4W + 'algorithm = "gptq"\n' + loose)
    pte, ort = r.manifest.artifacts
    assert pte.verification.passed and ort.verification.passed
    og, pg = ort.quantization["carried_grid"], pte.quantization["carried_grid"]
    assert og["source"] == pg["source"] == "GPTQ" and og["types"] == pg["types"] == ["Q4_0"]
    assert og["carried_layers"] == 10 and pg["carried_layers"] == 14  # qkv fused in ONNX; 7 linears x 2 layers
    assert "neural-compressor GPTQ" in ort.quantization["grid"] and r.manifest.passes[0]["algorithm"] == "gptq"
    # the same GPTQ run again (it is deterministic): its grid is what the ONNX file holds, integer for integer
    model = AutoModelForCausalLM.from_pretrained(str(decoders["llama"]), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(decoders["llama"]))
    chunks = calibration_chunks(tok, builtin_texts("calibration_texts"), 128)
    per, skipped = gptq_grids(model, chunks, tmp_path)
    few = sum(map(len, chunks)) < 8192  # the build warns when GPTQ had little text to calibrate on
    assert few == any("GPTQ calibrated on" in w for w in r.manifest.build["warnings"])
    assert len(per) == 14 and "lm_head" in skipped and not (tmp_path / ".gptq").exists()
    for name, g in per.items():
        w = model.get_submodule(name).weight.detach().numpy()
        rtn = np.clip(np.round(w / np.repeat(g["d"], 32, axis=1)) + 8, 0, 15)
        assert 0.6 < (g["q"] == rtn).mean() < 1.0, name  # GPTQ's grid, not a plain rounding, not a misreading
        assert np.abs(_dequant(g) - w).max() <= 1.01 * g["d"].max(), name
    fused, _ = builder_grids(per, skipped, model)
    graph = onnx.load(str(r.folder / "model.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    q = fused["model.layers.1.mlp.down_proj"]
    blob = inits["model.layers.1.mlp.down_proj.MatMul.weight_Q4"].reshape(q["q"].shape[0], -1)
    assert np.array_equal(blob, (q["q"][:, 0::2] | (q["q"][:, 1::2] << 4)).astype(np.uint8))
    assert np.array_equal(inits["model.layers.1.mlp.down_proj.MatMul.weight_scales"].reshape(q["d"].shape), q["d"])


def test_a_gptq_layout_edgeslm_cannot_carry_is_refused_in_one_line():
    """Act-order indices (GPTQ's true_sequential / act_order) or another group size: named, not misread."""
    from types import SimpleNamespace

    from edgeslm.errors import ExportError
    from edgeslm.passes.gptq import read_grid

    for mod, why in ((SimpleNamespace(out_features=8, in_features=64, bits=4, group_size=32, g_idx=[0]), "act-order"),
                     (SimpleNamespace(out_features=8, in_features=64, bits=4, group_size=64, g_idx=None), "groups of 64")):
        with pytest.raises(ExportError, match=why):
            read_grid(mod)


def test_gptq_needs_int4_groups_of_32_and_a_decoder(tmp_path, decoders):

    for extra, why in (('method = "8da4w"\ngroup_size = 64\nalgorithm = "gptq"\n', "groups of 32"),
                       ('method = "8da8w"\nalgorithm = "gptq"\n', "groups of 32")):
        path = write_generation_recipe(tmp_path / "bad.toml", decoders["llama"], extra='[[passes]]\ntype = '
                                       f'"quantize"\n{extra}', formats=("executorch",))
        with pytest.raises(ConfigError, match=why) as info:
            load_recipe(path)
        assert "algorithm" in str(info.value)


def test_gguf_grids_are_read_exactly():
    """ggml's block layouts (Q4_0, Q4_1, Q8_0: f16 scale, [f16 min], nibbles j / j + 16) read back to what
    gguf-py dequantizes."""
    import gguf

    from edgeslm.models.gguf_grid import _dequant, _grid

    rng = np.random.RandomState(1)
    w = rng.randn(6, 96).astype(np.float32)
    for quant in ("Q4_0", "Q4_1", "Q8_0"):
        qtype = getattr(gguf.GGMLQuantizationType, quant)
        raw = gguf.quants.quantize(w, qtype)
        tensor = type("T", (), {"tensor_type": qtype, "data": raw})()
        assert np.allclose(_dequant(_grid(tensor)), gguf.quants.dequantize(raw, qtype), atol=1e-6), quant


def test_a_q4_1_grid_runs_as_one_matmulnbits_over_the_widened_input():
    """Q4_1 (w = q d + m) in onnxruntime: q and d exactly with integer zero points round(-m / d), the rest of
    each minimum through the input's block sums; the graph computes x w^T with only that rest rounded (and
    the read-back folds the sums' columns into the same weights)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgeslm.models.gguf_grid import _dequant
    from edgeslm.formats.onnx.gguf import apply_grids
    from edgeslm.formats.onnx.decoder import _dequantized

    rng = np.random.RandomState(0)
    n, k = 40, 96
    d = rng.uniform(0.01, 0.05, (n, k // 32)).astype(np.float32)
    m = (-8 * d * rng.uniform(0.5, 1.5, d.shape)).astype(np.float32)  # -m / d mostly in 0..15, some beyond
    m[0, 0] = 20 * d[0, 0]  # a positive minimum: zero point 0, all of it through the sums
    g = {"type": "Q4_1", "q": rng.randint(0, 16, (n, k)).astype(np.uint8), "d": d, "m": m}
    w = _dequant(g)
    name = "model.layers.0.mlp.down_proj"
    node = helper.make_node("MatMulNBits", ["x", f"{name}.MatMul.weight_Q4", f"{name}.MatMul.weight_scales"], ["y"],
                            name=f"{name}/MatMul_Q4", domain="com.microsoft", K=k, N=n, bits=4, block_size=32,
                            accuracy_level=0)
    graph = helper.make_model(helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "s", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "s", n])],
        [numpy_helper.from_array(np.zeros((n, k // 32, 16), np.uint8), f"{name}.MatMul.weight_Q4"),
         numpy_helper.from_array(np.ones(n * k // 32, np.float32), f"{name}.MatMul.weight_scales")]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    assert apply_grids(graph, {name: g}) == [name]
    assert [nd.op_type for nd in graph.graph.node] == ["MatMulNBits", "Concat", "MatMulNBits"]
    back = _dequantized(graph)[name]
    assert back.shape == w.shape
    err = np.abs(back - w).reshape(n, -1, 32).max(-1) / d  # in steps of the row's grid
    # the rests of a row share 4-bit blocks: within range they are <= d / 2 and round to << d; the row whose
    # minimum lies off the zero points' range (20 d) carries it all through its rests and rounds coarser
    assert err[1:].max() < 0.1 and err[0].max() < 0.7 and np.median(err) < 0.01, err
    x = rng.randn(3, k).astype(np.float32)
    y = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x[None]})[0][0]
    assert np.allclose(y, x @ back.T, atol=1e-4), np.abs(y - x @ back.T).max()
    assert np.abs(y - x @ w.T).max() < 0.02 * np.abs(x @ w.T).max()
