"""Bring your own model file: an ONNX file exported with torch.onnx (not edgeslm) and a .pte lowered with
ExecuTorch's own API become build folders that deploy over real SSH, profile and report like edgeslm's own;
what cannot be checked is said; a swapped file fails the device's check; bad files are one-line errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgeslm.cli import main
from edgeslm.hashing import sha256_file
from tiny import make_model

pytestmark = pytest.mark.slow


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


class Encoder:
    """A tiny BERT's last hidden state, as other tools export it (inputs input_ids, attention_mask)."""

    def __init__(self, folder):
        import torch
        import transformers as tf

        self.model = tf.AutoModel.from_pretrained(str(folder)).eval()
        self.torch = torch

    def __call__(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _onnx_elsewhere(src, path, seed_scale=None):
    import torch

    enc = Encoder(src)
    if seed_scale is not None:  # another model of the same shape: the weights scaled
        with torch.no_grad():
            for p in enc.model.parameters():
                p.mul_(seed_scale)
    ids = torch.ones(1, 8, dtype=torch.long)
    torch.onnx.export(_Wrap(enc.model), (ids, torch.ones_like(ids)), str(path), dynamo=False,
                      input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                      dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}})
    return path


def _Wrap(model):
    import torch

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    return Wrap().eval()


def test_an_onnx_file_made_elsewhere_deploys_profiles_and_reports(tmp_path, inventory):
    src = make_model("bert", "embedding", tmp_path / "tiny")
    (tmp_path / "elsewhere").mkdir()
    onnx_file = _onnx_elsewhere(src, tmp_path / "elsewhere" / "model.onnx")
    out = tmp_path / "build"
    r = cli("import", onnx_file, "--task", "embedding", "--tokenizer", src, "--name", "byo", "--max-seq-len", "64",
            "-o", out)
    assert r.exit_code == 0, r.output
    assert "export fidelity is not known" in r.output
    folder = out / "byo" / "host"
    m = json.loads((folder / "manifest.json").read_text())
    assert m["status"] == "ok" and m["model"]["kind"] == "imported" and m["build"]["warnings"]
    inv = inventory(pi={})
    r = cli("profile", folder, "--device", "pi", "--devices", inv, "--iters", 20, "-o", out)
    assert r.exit_code == 0, r.output
    assert "parity on device: pass" in r.output and "vs this file on the build host (imported" in r.output
    r = cli("report", folder)
    assert r.exit_code == 0 and "imported" in r.output and "| pi |" in r.output, r.output

    # the same name imported from another file of the same shape, its manifest then made to claim the first
    # file's outputs (a swapped file): the device's check compares outputs, not names, and fails
    other = _onnx_elsewhere(src, tmp_path / "other.onnx", seed_scale=1.7)
    (folder / "model.onnx").chmod(0o644)
    (folder / "model.onnx").write_bytes(other.read_bytes())
    m["files"] = [{**f, "sha256": sha256_file(folder / f["path"]), "size": (folder / f["path"]).stat().st_size}
                  if f["path"] == "model.onnx" else f for f in m["files"]]
    m["cache_key"] = "f" * 64
    (folder / "manifest.json").write_text(json.dumps(m))
    r = cli("profile", folder, "--device", "pi", "--devices", inv, "--iters", 5, "-o", out)
    assert r.exit_code == 1 and "parity on device: FAIL" in r.output, r.output


def test_a_pte_lowered_with_executorchs_own_api_imports_and_profiles(tmp_path):
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    src = make_model("bert", "embedding", tmp_path / "tiny")
    model = _Wrap(Encoder(src).model)
    ids = torch.ones(1, 16, dtype=torch.long)
    seq = torch.export.Dim("seq", min=4, max=64)
    ep = torch.export.export(model, (ids, torch.ones_like(ids)), dynamic_shapes=({1: seq}, {1: seq}))
    program = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch()
    pte = tmp_path / "tiny-encoder.pte"
    pte.write_bytes(program.buffer)
    out = tmp_path / "build"
    r = cli("import", pte, "--task", "embedding", "--tokenizer", src, "--max-seq-len", "64", "-o", out)
    assert r.exit_code == 0, r.output
    folder = out / "tiny-encoder" / "host"
    r = cli("profile", folder, "--device", "local", "--iters", 10, "-o", out)
    assert r.exit_code == 0 and "parity on device: pass" in r.output, r.output


def test_files_that_cannot_be_imported_are_named(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    src = make_model("bert", "embedding", tmp_path / "tiny")
    graph = helper.make_graph([helper.make_node("Identity", ["pixel_values"], ["y"])], "g",
                              [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    onnx.save(helper.make_model(graph), tmp_path / "vision.onnx")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "empty").mkdir()
    cases = [
        (["import", tmp_path / "vision.onnx", "--task", "embedding", "--tokenizer", src],
         "input 'pixel_values' is not one edgeslm can feed"),
        (["import", tmp_path / "notes.txt", "--task", "embedding", "--tokenizer", src], "imports .onnx and .pte files"),
        (["import", tmp_path / "missing.onnx", "--task", "embedding", "--tokenizer", src], "does not exist"),
        (["import", tmp_path / "vision.onnx", "--task", "embedding", "--tokenizer", tmp_path / "empty"],
         "holds none of tokenizer.json"),
        (["profile", tmp_path / "vision.onnx", "--device", "local"], "import it first: edgeslm import"),
        (["profile", tmp_path, "--device", "local"], "is not a build folder (no manifest.json)"),
    ]
    for argv, says in cases:
        r = cli(*argv)
        assert r.exit_code == 2 and says in r.output and "Traceback" not in r.output, (argv, r.output)
    assert not (tmp_path / "build").exists()  # the errors came before anything was written
