"""GgufLinear, edgeslm's onnxruntime custom op (libedgeslm_ort.so in the runtime folder, the .pte's tile
kernels): an ONNX graph with one node per block type (Q4_1 without the ggml_type attribute, as files written
before it; Q4_0, Q8_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K with it; 40 outputs: two tiles and a padded one; 256 inputs)
runs in plain
onnxruntime with the library registered, with every kernel this machine and the emulated Pi have, torch-free,
and gives the Python reference's outputs (edgeslm.formats.executorch.gguf_op); a grid with two rows swapped gives other
outputs; tiles that do not match the input's width are refused with an error naming the op."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # compiles the onnxruntime op library and runs it under qemu

N, K = 40, 256
KINDS = ("Q4_0", "Q8_0", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K")
SCRIPT = r"""
import json, sys
import numpy as np
import onnxruntime as ort
so = ort.SessionOptions()
so.intra_op_num_threads = 2
so.register_custom_ops_library(sys.argv[1])
sess = ort.InferenceSession(sys.argv[2], so, providers=["CPUExecutionProvider"])
x = np.load(sys.argv[3])
outs = [[o.tolist() for o in sess.run(None, {"x": x[:, :t]})] for t in (5, 1)]
import ctypes
kernel = ctypes.CDLL(sys.argv[1]).es_gguf_kernel
kernel.restype = ctypes.c_char_p
print(json.dumps({"kernel": kernel().decode(), "outs": outs, "torch": "torch" in sys.modules}))
"""


def _grid(seed: int, k: int = K) -> dict:
    rng = np.random.default_rng(seed)
    f16 = lambda a: a.astype(np.float16).astype(np.float32)  # noqa: E731 - the file's fp16 values
    return {"type": "Q4_1", "q": rng.integers(0, 16, (N, k)).astype(np.uint8),
            "d": f16(rng.random((N, k // 32)) * 0.01 + 0.001), "m": f16(-rng.random((N, k // 32)) * 0.08)}


def _grids(seed: int) -> list[dict]:
    """Q4_1, then each of KINDS written in ggml's layout and read by gguf_grid."""
    from gguf_blocks import Tensor, encode

    from edgeslm.models.gguf_grid import _grid as read

    rng = np.random.default_rng(seed + 1)
    return [_grid(seed)] + [read(Tensor(kind, encode(rng.standard_normal((N, K)).astype(np.float32) * 0.05, kind)))
                            for kind in KINDS]


def _model(path: Path, grids: list[dict]) -> Path:
    from onnx import TensorProto, helper, numpy_helper, save

    from edgeslm.formats.executorch.gguf_op import Q4_1, pack

    nodes, inits, outs = [], [], []
    for i, g in enumerate(grids):
        tiles, kind = pack(g)
        attrs = {} if kind == Q4_1 else {"ggml_type": kind}
        nodes.append(helper.make_node("GgufLinear", ["x", f"tiles{i}"], [f"y{i}"], domain="ai.edgeslm", **attrs))
        inits.append(numpy_helper.from_array(tiles, f"tiles{i}"))
        outs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "t", K])],
                              outs, inits)
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.edgeslm", 1)]),
         str(path))
    return path


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """(folder with q41.onnx, swapped.onnx and x.npy; the reference outputs for 5 and 1 tokens)."""
    import torch

    from edgeslm.formats.executorch.gguf_op import gguf_linear_module, pack

    folder = tmp_path_factory.mktemp("ortq41")
    grids = _grids(0)
    _model(folder / "q41.onnx", grids)
    _model(folder / "swapped.onnx", [{**g, "q": g["q"][[1, 0, *range(2, N)]]} for g in grids])
    x = torch.randn(1, 5, K, generator=torch.Generator().manual_seed(1))
    np.save(folder / "x.npy", x.numpy())
    with torch.no_grad():
        refs = [gguf_linear_module(*pack(g)[:1], N, None, pack(g)[1])(x).numpy() for g in grids]
    return folder, [refs, [r[:, :1] for r in refs]]


def _run(cmd: list[str], env: dict, timeout: float) -> dict:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _check(got: dict, refs: list, swapped: dict) -> None:
    assert not got["torch"]
    for outs, want in zip(got["outs"], refs):
        for i, (out, ref) in enumerate(zip(outs, want)):
            out = np.asarray(out, dtype=np.float32)[..., :N]  # the padded tile's rows sliced off
            assert out.shape == ref.shape and np.abs(out - ref).max() < 1e-5 * np.abs(ref).max(), (got["kernel"], i)
    for i, ref in enumerate(refs[0]):  # rows are told apart in every node
        wrong = np.asarray(swapped["outs"][0][i], dtype=np.float32)[..., :N]
        assert np.abs(wrong - ref).max() > 0.01 * np.abs(ref).max(), i


def test_each_x86_kernel_gives_the_reference(case):
    from edgeslm.native.runtime_folder import runtime_folder

    folder, refs = case
    lib = str(runtime_folder("x86_64") / "libedgeslm_ort.so")
    flags = Path("/proc/cpuinfo").read_text()
    kernels = ["scalar", "avx2"] + (["avx512-vnni"] if "avx512_vnni" in flags else [])
    for kernel in kernels:
        env = {"PATH": "/usr/bin:/bin", "EDGESLM_GGUF_KERNEL": kernel}
        got, swapped = (_run([sys.executable, "-c", SCRIPT, lib, str(folder / name), str(folder / "x.npy")], env, 120)
                        for name in ("q41.onnx", "swapped.onnx"))
        assert got["kernel"] == kernel
        _check(got, refs, swapped)


def test_the_neon_kernels_give_the_reference_on_the_emulated_pi(case):
    """qemu-aarch64 as a Cortex-A72 (NEON) and a Cortex-A76 (dotprod), with the Pi's own onnxruntime wheel."""
    from edgeslm.devtools.emulate import ensure_image
    from edgeslm.native.runtime_folder import runtime_folder

    folder, refs = case
    image = ensure_image(Path(os.environ.get("EDGESLM_EMULATE_CACHE", Path.home() / ".cache/edgeslm/emulate")))
    lib = str(runtime_folder("aarch64") / "libedgeslm_ort.so")
    for cpu, kernel in (("cortex-a72", "neon"), ("cortex-a76", "neon-dotprod")):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QEMU_", "EDGESLM_GGUF"))}
        env.update(image.env(cpu))
        env["PYTHONPATH"] = str(image.site)
        got, swapped = (_run([str(image.qemu), "-L", str(image.rootfs), str(image.python), "-c", SCRIPT, lib,
                              str(folder / name), str(folder / "x.npy")], env, 300)
                        for name in ("q41.onnx", "swapped.onnx"))
        assert got["kernel"] == kernel, (cpu, got["kernel"])
        _check(got, refs, swapped)


def test_tiles_that_do_not_match_the_input_are_refused(tmp_path):
    import onnxruntime as ort

    from edgeslm.formats.executorch.gguf_op import pack_q4_1
    from edgeslm.native.runtime_folder import runtime_folder

    g = _grid(2, k=64)  # tiles for 64 inputs, fed 256
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(runtime_folder("x86_64") / "libedgeslm_ort.so"))
    sess = ort.InferenceSession(str(_model(tmp_path / "bad.onnx", [g])), so, providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match=r"GgufLinear: float32 x \[\.\.\., K\].*K=256"):
        sess.run(None, {"x": np.ones((1, 1, K), dtype=np.float32)})
    # a block type the op does not run is refused when the session is made
    from onnx import TensorProto, helper, numpy_helper, save

    node = helper.make_node("GgufLinear", ["x", "t"], ["y"], domain="ai.edgeslm", ggml_type=10)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "t", K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(pack_q4_1(g), "t")])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.edgeslm", 1)]),
         str(tmp_path / "q2k.onnx"))
    with pytest.raises(Exception, match=r"ggml_type 10 is not a block type edgeslm runs"):
        ort.InferenceSession(str(tmp_path / "q2k.onnx"), so, providers=["CPUExecutionProvider"]).run(
            None, {"x": np.ones((1, 1, K), dtype=np.float32)})


def test_the_op_header_can_come_from_a_folder_the_user_gives(tmp_path, monkeypatch):
    """A host without the system's header package names onnxruntime's C API header with EDGESLM_ORT_HEADERS:
    the runtime folder's op library is built against that header (another header, another folder); a folder
    without the header is refused in one line naming the variable."""
    from edgeslm.errors import UserError
    from edgeslm.native.runtime_folder import runtime_folder
    from edgeslm.native.ort_headers import HEADER, HEADERS_ENV, ort_headers
    from edgeslm.runner.runtimes import ORT_OPS

    fetched, default = ort_headers(), runtime_folder("x86_64")
    own = tmp_path / "include"
    own.mkdir()
    (own / HEADER).write_bytes((fetched / HEADER).read_bytes() + b"\n// this host's own copy\n")
    monkeypatch.setenv("EDGESLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(HEADERS_ENV, str(own))
    assert ort_headers() == own
    folder = runtime_folder("x86_64")
    assert folder.is_relative_to(tmp_path / "cache") and folder.name != default.name
    assert (folder / ORT_OPS).is_file()
    monkeypatch.setenv(HEADERS_ENV, str(tmp_path / "empty"))
    with pytest.raises(UserError, match=f"{HEADERS_ENV}=.*empty: no {HEADER} there"):
        ort_headers()


def test_a_host_without_the_header_is_told_how_to_get_it(tmp_path, monkeypatch):
    """No system header (the search path emptied here) and no EDGESLM_ORT_HEADERS: one line naming where it
    looked, `make system-deps` and the variable to set; nothing is fetched from anywhere."""
    from edgeslm.errors import UserError
    from edgeslm.native import ort_headers as ort_ops

    monkeypatch.delenv(ort_ops.HEADERS_ENV, raising=False)
    monkeypatch.setattr(ort_ops, "SEARCH", (tmp_path / "usr-include", tmp_path / "usr-local-include"))
    with pytest.raises(UserError) as info:
        ort_ops.ort_headers()
    text = str(info.value)
    assert "usr-include" in text and "make system-deps" in text, text
    assert f"set {ort_ops.HEADERS_ENV} to a folder holding {ort_ops.HEADER}" in text and "\n" not in text
    assert not any(tmp_path.iterdir())
