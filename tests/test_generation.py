"""text-generation recipes: tiny random decoders of the families (Llama and Llama 3.2, Qwen2 and Qwen3, Phi-3
and Phi-4-mini, Gemma 2 and Gemma 3, Mistral, SmolLM3) build to an ExecuTorch program with a KV cache on ExecuTorch's fast path (custom SDPA and
cache-update operators, XNNPACK) and to an ONNX decoder (onnxruntime-genai's builder: GroupQueryAttention,
MatMulNBits) run by onnxruntime in edgeslm's own loop. In fp32 both must reproduce eager PyTorch exactly
(same greedy tokens as transformers' own generate); quantized (8da4w, int4 MatMulNBits) within
thresholds; a broken decode path fails verification in either format; both run without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeslm.config.catalog import load_target
from edgeslm.config.recipe import load_recipe
from edgeslm.contract import artifact_size
from edgeslm.errors import CheckFailed, ConfigError
from edgeslm.pipeline import build, plan
from tiny import DECODER_FAMILIES, NEW_FAMILIES, QUANT_8DA4W, build_generation, metrics, write_generation_recipe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def decoders(decoder_models):
    return {f: decoder_models(f) for f in DECODER_FAMILIES}


@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_fp32_program_matches_eager_exactly(fp32_builds, family):
    r = fp32_builds(family)
    assert r.manifest.status == "ok" and [a.name for a in r.manifest.artifacts] == ["executorch", "onnx"]
    for a in r.manifest.artifacts:
        fid, comp = metrics(a.verification), metrics(a.compression)
        assert a.verification.passed, a.name
        assert fid["kl_max"] < 1e-6 and comp["kl_max"] < 1e-6 and fid["top1_agreement"] == 1.0, (a.name, fid)
        assert abs(comp["perplexity_increase"]) < 1e-4
        for c in a.extras["continuations"]:  # transformers' generate vs the artifact: the same tokens
            assert c["artifact"] == c["reference"], (family, a.name, c)
    et, ort = r.manifest.artifacts
    assert et.export["delegation"]["delegate_calls"] > 0
    ops = et.export["delegation"]["non_delegated_by_op"]
    assert not any("index_put" in o or "scatter" in o for o in ops), ops  # the cache is llama::update_cache
    # RMSNorm's mean and RoPE's rotate_half run inside the delegate (generation/delegable.py): the one slice
    # left keeps the last position's logits (Phi-3 slices its rotary part itself; Gemma 2 keeps its RoPE)
    assert not any(o.startswith("mean") for o in ops), ops
    # (Phi-3 and Phi-4-mini slice their rotary part themselves; Gemma 2, Gemma 3 and Mistral keep their RoPE
    # where attention is explicit matmuls: soft-capping, a window shorter than the cache)
    assert family.startswith(("phi", "gemma", "mistral")) or ops.get("slice_copy.Tensor", 0) <= 1, ops
    assert ort.export["ops"]["com.microsoft.GroupQueryAttention"] == 2 and ort.export["kv_cache"]["positions"] == 160
    assert r.manifest.task == "text-generation" and (r.folder / "model.pte").is_file()
    files = {f.path for f in r.manifest.files}
    assert {"model.onnx", "model.onnx.data", "model.pte"} <= files  # the weights beside the graph, hashed


def test_quantized_8da4w_within_thresholds_and_smaller(decoder_8da4w, decoder_8da4w_recipe, fp32_builds, tmp_path):
    """Random tiny weights lose more to a 4-bit grid than trained ones do: the compression limits are set
    for them (conftest's decoder_8da4w; a failing compression gate: test_a_broken_decode_path_fails_verification).
    Built for another target it is the same build, not lowered again: its manifest names that target."""
    recipe = load_recipe(decoder_8da4w_recipe)
    arm = build(recipe, plan(recipe, [load_target("rpi4")])[0], tmp_path / "arm")
    # the key's one build was made for host or (in another xdist worker) for rpi4: the other was retargeted
    notes = [r.note for r in (decoder_8da4w, arm) if "the same files as built for target" in r.note]
    assert arm.cached and len(notes) == 1, (decoder_8da4w.note, arm.note)
    assert arm.manifest.target["name"] == "rpi4" and arm.manifest.cache_key == decoder_8da4w.manifest.cache_key
    assert arm.manifest.files == decoder_8da4w.manifest.files
    fp32 = fp32_builds("llama")
    q = decoder_8da4w
    for a in q.manifest.artifacts:
        fid, comp = metrics(a.verification), metrics(a.compression)
        assert a.verification.passed and a.precision == "8da4w"
        assert fid["kl_mean"] < 0.02 and fid["top5_agreement"] >= 0.95, (a.name, fid)  # vs its own eager model
        assert comp["kl_mean"] > fid["kl_mean"]  # 4-bit weights cost more than exporting them does
        assert artifact_size(q.manifest.files, a.file) < 0.5 * artifact_size(fp32.manifest.files, a.file), a.name
    et, ort = q.manifest.artifacts
    assert et.quantization["group_size"] == 32 and et.quantization["embeddings"]["int8_per_row"]
    assert ort.quantization["bits"] == 4 and ort.quantization["block_size"] == 32
    assert ort.quantization["activations"] == "int8 dynamic" and ort.export["ops"]["com.microsoft.MatMulNBits"] == 11


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_new_families_4bit_within_thresholds_and_smaller(tmp_path, decoders, fp32_builds, family):
    """Qwen3, Gemma 3, SmolLM3, Llama 3.2 and Phi-4-mini under 8da4w (int4 weights in groups of 32, int8
    embeddings) in both formats: verified against the quantized eager model, compression loss within the limits
    loosened for random weights (as decoder_8da4w's), files smaller than fp32's."""
    r = build_generation(tmp_path, decoders[family], f"q-{family}",
                         extra=QUANT_8DA4W + "[verify]\nmax_perplexity_increase = 0.5\nmin_top5_agreement = 0.5\n")
    fp32 = fp32_builds(family).manifest
    assert r.manifest.status == "ok", [(a.name, metrics(a.verification)) for a in r.manifest.artifacts]
    for a in r.manifest.artifacts:
        fid, comp = metrics(a.verification), metrics(a.compression)
        assert a.verification.passed and a.precision == "8da4w"
        assert fid["kl_mean"] < 0.02 and fid["top5_agreement"] >= 0.95, (a.name, fid)  # vs its own eager model
        assert comp["perplexity_increase"] < 0.5 and comp["top5_agreement"] >= 0.5, (a.name, comp)
        size = artifact_size(r.manifest.files, a.file)
        assert size < 0.7 * artifact_size(fp32.files, fp32.artifact(a.name).file), (a.name, size)


def test_onnx_weights_read_back_are_the_grid_the_file_runs():
    """The eager model for ONNX fidelity takes the file's own integers: uint4 pairs, low nibble first,
    implicit zero point 8, one scale per block."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeslm.formats.onnx.decoder import _dequantized

    rng = np.random.RandomState(0)
    q = rng.randint(0, 16, size=(3, 64)).astype(np.uint8)  # N=3 rows of K=64, blocks of 32
    packed = (q[:, 0::2] | (q[:, 1::2] << 4)).reshape(3, 2, 16)
    scales = rng.rand(3, 2).astype(np.float32)
    node = helper.make_node("MatMulNBits", ["x", "layer.MatMul.weight_Q4", "layer.MatMul.weight_scales"], ["y"],
                            domain="com.microsoft", K=64, N=3, bits=4, block_size=32)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                              [numpy_helper.from_array(packed, "layer.MatMul.weight_Q4"),
                               numpy_helper.from_array(scales.reshape(-1), "layer.MatMul.weight_scales")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])
    w = _dequantized(model)["layer"]
    expected = (q.astype(np.float32) - 8) * np.repeat(scales, 32, axis=1)
    assert np.array_equal(w, expected)
    import onnxruntime as ort  # and onnxruntime computes x @ w.T with it

    x = rng.randn(1, 64).astype(np.float32)
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.allclose(y, x @ w.T, atol=1e-4)
    del onnx


def test_a_broken_decode_path_fails_verification(tmp_path, decoders, monkeypatch):
    """Attention that ignores the cache position (every call causal from 0) prefills right and decodes
    wrong: the teacher-forced check must catch it and the build fail."""
    import torch

    from edgeslm.formats.executorch import decoder as ee

    real = ee._attention

    def broken(module, query, key, value, attention_mask, scaling=None, softcap=None, position_ids=None, **kw):
        return real(module, query, key, value, attention_mask, scaling, softcap,
                    torch.zeros_like(position_ids), **kw)

    monkeypatch.setattr(ee, "_attention", broken)
    with pytest.raises(CheckFailed, match="verification failed") as info:
        build_generation(tmp_path, decoders["llama"], "broken", formats=("executorch",))
    # the program matches its (equally broken) eager wrapper; against the model's own forward pass it fails
    art = info.value.result.manifest.artifacts[0]
    assert metrics(art.compression)["kl_mean"] > 0.01 and "vs original" in str(info.value)


def test_an_onnx_decoder_that_forgets_the_cache_fails_verification(tmp_path, decoders, monkeypatch):
    """A graph whose attention sees only the last 4 positions (GroupQueryAttention's local window set
    to 4) with the right weights: it runs, and teacher forcing against the eager model must fail it."""
    import onnx

    from edgeslm.formats.onnx import decoder as onnx_export

    real = onnx_export.export_onnx_decoder

    def broken(model, tokenizer, work, *args, **kw):
        facts = real(model, tokenizer, work, *args, **kw)
        graph = onnx.load(str(work / onnx_export.FILE))
        for n in graph.graph.node:
            if n.op_type == "GroupQueryAttention":
                kept = [a for a in n.attribute if a.name != "local_window_size"]
                del n.attribute[:]
                n.attribute.extend(kept + [onnx.helper.make_attribute("local_window_size", 4)])
        onnx.save(graph, str(work / onnx_export.FILE))
        return facts

    monkeypatch.setattr(onnx_export, "export_onnx_decoder", broken)
    with pytest.raises(CheckFailed, match="verification failed") as info:
        build_generation(tmp_path, decoders["llama"], "forgets", formats=("onnx",))
    art = info.value.result.manifest.artifacts[0]
    assert not art.verification.passed and metrics(art.verification)["kl_mean"] > 0.01


def test_the_onnx_decoder_runs_without_torch(tmp_path, fp32_builds):
    r = fp32_builds("gemma2")
    ort = r.manifest.artifacts[1]
    ref = np.load(r.folder / "reference.npz")
    prompt, expected = ref["prompt/0"].tolist(), ref["prompt/0/reference"].tolist()
    kv = ort.export["kv_cache"]
    code = r"""
import json, sys
sys.modules["torch"] = None  # torch must not be needed
from edgeslm.runner.ort_decoder import OrtDecoder
from edgeslm.contract.decoding import greedy
path, dims, prompt, n = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
print(json.dumps(greedy(OrtDecoder(path, 2, *dims), prompt, n, 64)))
"""
    dims = [kv["layers"], kv["kv_heads"], kv["head_dim"], kv["positions"]]
    out = subprocess.run([sys.executable, "-c", code, str(r.folder / "model.onnx"), json.dumps(dims),
                          json.dumps(prompt), str(len(expected))], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == expected


def test_the_program_runs_without_torch_and_generates_the_reference_tokens(tmp_path, fp32_builds):
    from edgeslm.native.build import build as build_native

    r = fp32_builds("qwen2")
    rt = build_native(tmp_path / "rt").parent
    ref = np.load(r.folder / "reference.npz")
    prompt, expected = ref["prompt/0"].tolist(), ref["prompt/0/reference"].tolist()
    code = r"""
import json, sys
sys.modules["torch"] = None  # torch must not be needed
import numpy as np
from edgeslm.runner.native_et import NativeRuntime
from edgeslm.contract.decoding import greedy
rt, pte, prompt, n = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
m = NativeRuntime(rt, threads=2).load(pte)
step = lambda t, p: m([np.array([t], dtype=np.int64), np.array([p], dtype=np.int64)])[0].reshape(-1)
print(json.dumps(greedy(step, prompt, n, 32)))
"""
    out = subprocess.run([sys.executable, "-c", code, str(rt), str(r.folder / "model.pte"), json.dumps(prompt),
                          str(len(expected))], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == expected


def test_generation_recipes_refuse_what_is_not_built(tmp_path, decoders):
    src = decoders["llama"]
    cases = {
        '[[passes]]\ntype = "quantize"\nmethod = "8da4w"\ngroup_size = 48\n': "passes[0].group_size",
        '[[passes]]\ntype = "quantize"\nmethod = "dynamic-int8"\n': "passes[0].method",
        '[[passes]]\ntype = "prune"\nffn = 0.5\n': "passes[0]",
    }
    for extra, key in cases.items():
        text = write_generation_recipe(tmp_path / "r.toml", src, formats=("onnx",)).read_text() + extra
        (tmp_path / "r.toml").write_text(text)
        with pytest.raises(ConfigError) as info:
            load_recipe(tmp_path / "r.toml")
        assert key in str(info.value), (extra, str(info.value))



def test_a_family_or_shape_edgeslm_cannot_build_is_refused_in_one_line(tmp_path, decoders):
    """A model type outside the table is refused before loading, naming the families edgeslm builds; a Phi-4-mini
    shape with small heads (12 rotated dimensions: onnxruntime's GroupQueryAttention needs half of them a multiple
    of 8) is refused for ONNX right after loading, before any export, naming the key to change."""
    import shutil

    from edgeslm.errors import ModelSourceError

    gpt2 = tmp_path / "gpt2"
    shutil.copytree(decoders["llama"], gpt2)
    cfg = json.loads((gpt2 / "config.json").read_text())
    (gpt2 / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    recipe = load_recipe(write_generation_recipe(tmp_path / "g.toml", gpt2, name="g"))
    with pytest.raises(ModelSourceError, match=r"architecture 'gpt2' is not supported .*supported: .*gemma3_text.*"
                                               r"qwen3.*smollm3"):
        build(recipe, plan(recipe, [load_target("host")])[0], tmp_path / "out")

    small = tmp_path / "phi4small"
    shutil.copytree(decoders["phi4-mini"], small)
    cfg = json.loads((small / "config.json").read_text())
    cfg.pop("head_dim", None)  # the same weights read as 8 heads of 16 (4 kv heads): 12 rotated dimensions
    (small / "config.json").write_text(json.dumps({**cfg, "num_attention_heads": 8, "num_key_value_heads": 4}))
    recipe = load_recipe(write_generation_recipe(tmp_path / "p.toml", small, name="p", formats=("executorch", "onnx")))
    with pytest.raises(ConfigError, match=r"export\.formats.*onnx: onnxruntime's GroupQueryAttention needs half the "
                                          r"rotary dimension to be a multiple of 8; this model rotates 12 of 16"):
        build(recipe, plan(recipe, [load_target("host")])[0], tmp_path / "out2")
    assert not list((tmp_path / "out2").rglob("model.pte"))  # refused before the first export


def test_the_sampler_is_seeded_and_draws_from_the_cut_distribution():
    from edgeslm.contract.decoding import greedy, sampler

    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert {sampler(1.0, 1, 1.0, s)(logits) for s in range(20)} == {0}  # top-k 1 is greedy
    assert {sampler(1.0, 0, 0.4, s)(logits) for s in range(20)} == {0}  # 0.5 alone reaches top-p 0.4
    assert {sampler(1.0, 0, 0.7, s)(logits) for s in range(50)} == {0, 1}  # 0.5 + 0.3 reach 0.7
    pick = sampler(1.0, 0, 1.0, 7)
    draws = np.bincount([pick(logits) for _ in range(4000)], minlength=4) / 4000
    assert np.abs(draws - np.exp(logits)).max() < 0.03, draws
    step = lambda tokens, start: logits  # noqa: E731
    assert greedy(step, [1], 8, 4, pick=sampler(1.0, 0, 1.0, 3)) == greedy(step, [1], 8, 4, pick=sampler(1.0, 0, 1.0, 3))


def test_eval_scores_the_files_on_a_users_text_against_their_source(tmp_path, fp32_builds, decoder_8da4w, tiny_builds):
    """`edgeslm eval BUILD --text FILE` (llama-perplexity's yardstick): an fp32 build's files give the source
    model's perplexity and no KL; 4-bit files a measurable KL and a perplexity change; bad input is one line."""
    from click.testing import CliRunner

    from edgeslm.cli import main
    from edgeslm.errors import EXIT_USER
    from edgeslm.texts import builtin_texts

    text = tmp_path / "mine.txt"
    text.write_text("\n\n".join(builtin_texts("verify_long_texts")))

    def run(*args):
        return CliRunner().invoke(main, ["eval", *map(str, args)])

    r = run(fp32_builds("llama").folder, "--text", text, "--context", 64, "--json")
    assert r.exit_code == 0, r.output
    fp32 = json.loads(r.stdout)
    assert fp32["windows"] >= 2 and set(fp32["artifacts"]) == {"executorch", "onnx"}
    for name, a in fp32["artifacts"].items():
        assert a["tokens"] >= 64 and a["kl_mean"] < 1e-6 and a["top1_agreement"] > 0.998, (name, a)  # (near-ties)
        assert abs(a["perplexity_change"]) < 1e-4 and a["perplexity"] == pytest.approx(a["source_perplexity"], rel=1e-4)
    r = run(decoder_8da4w.folder, "--text", text, "--context", 64, "--json")
    assert r.exit_code == 0, r.output
    for name, a in json.loads(r.stdout)["artifacts"].items():  # 4-bit weights: a distance the yardstick sees
        assert a["kl_mean"] > 1e-3 and a["top1_agreement"] < 1.0 and a["perplexity_change_se"] > 0, (name, a)
    r = run(decoder_8da4w.folder, "--text", text, "--context", 64)
    assert r.exit_code == 0 and "KL mean" in r.stdout and "executorch" in r.stdout, r.output
    short = tmp_path / "short.txt"
    short.write_text("A few words.")
    for args, says in (((tmp_path / "nope.txt",), "nope.txt"), ((short,), "fewer than two windows of")):
        r = run(decoder_8da4w.folder, "--text", *args)
        assert r.exit_code == EXIT_USER and says in r.output and "Traceback" not in r.output, r.output
    r = run(tiny_builds["v1"], "--text", text)
    assert r.exit_code == EXIT_USER and "eval scores text-generation builds" in r.output, r.output
