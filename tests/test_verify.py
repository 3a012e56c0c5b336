"""Verification can tell a broken model from a working one, on the build host and on the device, with
the same maths; it runs at the recipe's max length and its batch size."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edgeslm.config.catalog import load_target
from edgeslm.config.recipe import load_recipe
from edgeslm.pipeline import build, plan
from edgeslm.runner import RUNNER_PATH
from edgeslm.contract.parity import compare_outputs
from edgeslm.verify import FLOAT_DEFAULTS, INT8_DEFAULTS
from tiny import write_recipe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def classifier_build(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("verify")
    recipe = load_recipe(write_recipe(tmp / "cls.toml", tiny_model("albert", "sequence-classification"),
                                      "sequence-classification", name="cls", formats=("onnx",)))
    return build(recipe, plan(recipe, [load_target("host")])[0], tmp / "out").folder


def _reference(folder):
    m = json.loads((folder / "manifest.json").read_text())
    ref = np.load(folder / "reference.npz")
    n = m["reference"]["samples"]
    return ([ref[f"output/{i}/logits"] for i in range(n)], [ref[f"input/{i}/attention_mask"] for i in range(n)],
            [ref[f"host/onnx/{i}/logits"] for i in range(n)])


def _failed(result):
    return {m["name"] for m in result["metrics"] if m["passed"] is False}


def test_a_constant_output_fails_even_where_cosine_and_top1_pass(classifier_build):
    refs, masks, _ = _reference(classifier_build)
    mean = np.mean(np.concatenate(refs), axis=0)
    constant = [np.broadcast_to(mean, r.shape).copy() for r in refs]
    for limits in (FLOAT_DEFAULTS, INT8_DEFAULTS):
        result = compare_outputs("sequence-classification", refs, constant, masks, limits)
        assert not result["passed"] and "centered_cosine" in _failed(result)
    centred = next(m for m in result["metrics"] if m["name"] == "centered_cosine")
    assert abs(centred["value"]) < 1e-6


def test_near_ties_do_not_count_for_top1_but_clear_flips_fail():
    ref = np.array([[1.0, 1.0002, -3.0], [2.0, 0.0, -1.0], [0.0, 3.0, 1.0], [1.0, -1.0, 0.5]])
    tie_flip = ref.copy()
    tie_flip[0, :2] = [1.0002, 1.0]  # the near-tie (gap 2e-4) flips: not counted
    masks = [np.ones((1, 4))] * 4
    r = compare_outputs("sequence-classification", [x[None] for x in ref], [x[None] for x in tie_flip], masks,
                        {**INT8_DEFAULTS, "min_cosine": None})
    metrics = {m["name"]: m["value"] for m in r["metrics"]}
    assert metrics["top1_clear_rows"] == 3 and metrics["top1_agreement"] == 1.0
    clear_flip = ref.copy()
    clear_flip[1] = [0.0, 2.0, -1.0]
    r = compare_outputs("sequence-classification", [x[None] for x in ref], [x[None] for x in clear_flip], masks,
                        INT8_DEFAULTS)
    assert {"top1_agreement", "kl_max"} <= _failed(r)


def _constant_onnx(path, names, mean):
    """A model that ignores its input and answers the mean logits for every row."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Shape", [names[0]], ["shape"]),
             helper.make_node("Slice", ["shape", "zero", "one"], ["batch"]),
             helper.make_node("Concat", ["batch", "labels"], ["out_shape"], axis=0),
             helper.make_node("Expand", ["mean", "out_shape"], ["logits"])]
    inits = [numpy_helper.from_array(mean.astype(np.float32)[None], "mean"),
             numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([1], np.int64), "one"),
             numpy_helper.from_array(np.array([mean.shape[0]], np.int64), "labels")]
    graph = helper.make_graph(nodes, "constant",
                              [helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "s"]) for n in names],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", mean.shape[0]])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_the_device_runner_fails_a_broken_model(tmp_path, classifier_build):
    broken = tmp_path / "broken"
    shutil.copytree(classifier_build, broken)
    m = json.loads((broken / "manifest.json").read_text())
    refs, _, _ = _reference(broken)
    _constant_onnx(broken / "model.onnx", [i["name"] for i in m["inputs"]], np.mean(np.concatenate(refs), axis=0))
    for f in m["files"]:
        if f["path"] == "model.onnx":
            data = (broken / "model.onnx").read_bytes()
            f["sha256"], f["size"] = hashlib.sha256(data).hexdigest(), len(data)
    (broken / "manifest.json").write_text(json.dumps(m))
    out = tmp_path / "r.json"
    for folder, ok in ((classifier_build, True), (broken, False)):
        r = subprocess.run([sys.executable, str(RUNNER_PATH), "profile", str(folder), "--artifact", "onnx",
                            "--iters", "3", "--warmup", "1", "--out", str(out)], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        parity = json.loads(out.read_text())["parity"]
        assert parity["passed"] is ok
    failed = {x["name"] for x in parity["metrics"] if x["passed"] is False}
    assert "centered_cosine" in failed


def test_host_and_device_judge_the_same_way(tmp_path, tiny_model):
    """Fill-mask used to be judged differently on the device; now both sides share compare_outputs."""
    recipe = load_recipe(write_recipe(tmp_path / "fm.toml", tiny_model("distilbert", "fill-mask"), "fill-mask",
                                      name="fm", formats=("onnx",)))
    folder = build(recipe, plan(recipe, [load_target("host")])[0], tmp_path / "out").folder
    host = {x["name"]: x["value"] for x in json.loads((folder / "manifest.json").read_text())["artifacts"][0]
            ["verification"]["metrics"]}
    out = tmp_path / "r.json"
    subprocess.run([sys.executable, str(RUNNER_PATH), "profile", str(folder), "--artifact", "onnx", "--iters", "2",
                    "--warmup", "1", "--out", str(out)], check=True, capture_output=True, timeout=300)
    device = {x["name"]: x["value"] for x in json.loads(out.read_text())["parity"]["metrics"]}
    for name in ("cosine_min", "cosine_p5", "centered_cosine", "kl_max"):
        assert device[name] == pytest.approx(host[name], rel=1e-5, abs=1e-9), name


def test_verification_uses_full_length_inputs_and_the_recipe_batch(tmp_path, tiny_model):
    """batch_size = 3 used to crash every ExecuTorch build: verification fed batch-1 samples."""
    path = write_recipe(tmp_path / "b3.toml", tiny_model("bert", "embedding"), "embedding", name="b3")
    path.write_text(path.read_text().replace("max_seq_len = 64\n", "max_seq_len = 64\nbatch_size = 3\n"))
    recipe = load_recipe(path)
    m = build(recipe, plan(recipe, [load_target("host")])[0], tmp_path / "out").manifest
    ref = np.load(tmp_path / "out/b3/host/reference.npz")
    assert ref["input/0/input_ids"].shape[0] == 3 and ref["output/0/sentence_embedding"].shape[0] == 3
    for a in m.artifacts:
        assert a.verification.passed and max(a.verification.seq_lens) == 64
        assert len(a.verification.seq_lens) == 3 * a.verification.samples


def test_host_kernels_that_saturate_do_not_judge_an_arm_artifact(tmp_path, tiny_model, monkeypatch):
    """x86 without VNNI saturates u8 x s8 products (vpmaddubsw); ARM and VNNI kernels do not. An ARM-preset
    ONNX artifact built there is checked with exact int32 products, a check that still fails a broken model."""
    import onnx
    from onnx import numpy_helper

    from edgeslm.contract.parity import compare_outputs
    from edgeslm.formats.onnx import encoder as onnx_exporter
    from edgeslm.runner import facts

    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.setattr(facts, "cpu_features", lambda: ["avx2", "fma"])
    assert "saturates" in onnx_exporter.host_saturates({"preset": "arm-s8s8"})
    assert "saturates" in onnx_exporter.host_saturates({"preset": "x86-u8s8"})
    assert onnx_exporter.host_saturates({"preset": "x86-u8u8"}) is None
    assert onnx_exporter.host_saturates({"preset": "x86-u8s8-reduced"}) is None
    assert onnx_exporter.host_saturates(None) is None
    monkeypatch.setattr(facts, "cpu_features", lambda: ["avx2", "avx512_vnni"])
    assert onnx_exporter.host_saturates({"preset": "arm-s8s8"}) is None
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    monkeypatch.setattr(facts, "cpu_features", lambda: ["asimd"])
    assert onnx_exporter.host_saturates({"preset": "arm-s8s8"}) is None
    monkeypatch.undo()

    # u8 x u8 saturates nowhere: there onnxruntime and the exact evaluator must agree
    quant = '[[passes]]\ntype = "quantize"\nmethod = "dynamic-int8"\n'
    src = tiny_model("bert", "embedding")
    recipe = load_recipe(write_recipe(tmp_path / "x86.toml", src, "embedding", name="x86", formats=("onnx",),
                                      targets=("x86-avx2",), extra=quant))
    folder = build(recipe, plan(recipe, [load_target("x86-avx2")])[0], tmp_path / "out").folder
    m = json.loads((folder / "manifest.json").read_text())
    assert m["artifacts"][0]["quantization"]["preset"] == "x86-u8u8" and m["artifacts"][0]["verification"]["how"] is None
    ref = np.load(folder / "reference.npz")
    inputs = [{k.split("/")[2]: ref[k] for k in ref.files if k.startswith(f"input/{i}/")}
              for i in range(m["reference"]["samples"])]
    exact = onnx_exporter.exact_integer_runner(folder / "model.onnx", "test")
    ort_run = onnx_exporter.OnnxExporter().runner(folder / "model.onnx", threads=1)
    for x in inputs:
        np.testing.assert_allclose(exact(x), ort_run(x), atol=2e-4)

    # the ARM build on a (made) saturating host: judged by the exact evaluator, and it passes
    monkeypatch.setattr(onnx_exporter, "host_saturates", lambda q: "exact int32 products (test)")
    recipe = load_recipe(write_recipe(tmp_path / "arm.toml", src, "embedding", name="arm", formats=("onnx",),
                                      targets=("rpi4",), extra=quant))
    folder = build(recipe, plan(recipe, [load_target("rpi4")])[0], tmp_path / "out").folder
    art = json.loads((folder / "manifest.json").read_text())["artifacts"][0]
    assert art["quantization"]["preset"] == "arm-s8s8"
    assert art["verification"]["passed"] and art["verification"]["how"] == "exact int32 products (test)"

    # ... and the same check fails the artifact once one quantized weight matrix is zeroed
    model = onnx.load(str(folder / "model.onnx"))
    victim = next(t for t in model.graph.initializer if t.name.endswith("_quantized") and len(t.dims) == 2)
    victim.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(victim)), victim.name))
    onnx.save(model, str(tmp_path / "broken.onnx"))
    broken = onnx_exporter.exact_integer_runner(tmp_path / "broken.onnx", "test")
    exact = onnx_exporter.exact_integer_runner(folder / "model.onnx", "test")
    ref = np.load(folder / "reference.npz")
    n = len(inputs)
    inputs = [{k.split("/")[2]: ref[k] for k in ref.files if k.startswith(f"input/{i}/")} for i in range(n)]
    refs = [ref[f"output/{i}/sentence_embedding"] for i in range(n)]
    masks = [x["attention_mask"] for x in inputs]
    assert compare_outputs("embedding", refs, [exact(x) for x in inputs], masks, INT8_DEFAULTS)["passed"]
    assert not compare_outputs("embedding", refs, [broken(x) for x in inputs], masks, INT8_DEFAULTS)["passed"]
