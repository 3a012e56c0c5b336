"""edgeslm::gguf_linear, the .pte's linear over a GGUF's blocks: a program holding one linear of each block type
it runs (Q4_1, Q8_0, Q4_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K; 40 outputs: two whole tiles of 16 and a padded one; 256
inputs: eight blocks, one K-quant super-block) runs in the torch-free runtime
with every kernel this machine and the emulated Pi have (AVX512-VNNI, AVX2, scalar; NEON on a Cortex-A72,
NEON dotprod on an A76) and gives the Python reference's outputs, for one token and for five. The reference
itself is checked against the dequantized weights, and a kernel that read the tiles wrongly would fail here:
the test also feeds the program grids whose rows were swapped; a program whose tiles do not match its input
width or type is refused by the kernel, not read past its end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeslm.runner.bundle import build_bytes

pytestmark = pytest.mark.slow  # compiles the kernels (g++, the aarch64 cross g++) and runs them under qemu

N, K = 40, 256
KINDS = ("Q4_0", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K")  # written in ggml's layout (tests/gguf_blocks)
SCRIPT = r"""
import json, sys
import numpy as np
from edgeslm.runner.native_et import NativeRuntime
rt = NativeRuntime(sys.argv[1], threads=2)
m = rt.load(sys.argv[2])
x = np.load(sys.argv[3])
outs = [m([x[:, :t]])[0].tolist() for t in (5, 1)]
print(json.dumps({"kernel": rt.kernel, "outs": outs, "torch": "torch" in sys.modules}))
"""


def _f16(a):
    return a.astype(np.float16).astype(np.float32)  # the file's fp16 values


def _grid(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"type": "Q4_1", "q": rng.integers(0, 16, (N, K)).astype(np.uint8),
            "d": _f16(rng.random((N, K // 32)) * 0.01 + 0.001), "m": _f16(-rng.random((N, K // 32)) * 0.08)}


def _grid8(seed: int) -> dict:
    """Q8_0 as gguf_grid reads it (q + 128), with the extremes -128 and 127 present."""
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 256, (N, K)).astype(np.uint8)
    q[0, :2], q[1, :2] = (0, 255), (255, 0)
    return {"type": "Q8_0", "q": q, "d": _f16(rng.random((N, K // 32)) * 0.002 + 0.0005), "m": None}


def _encoded(kind: str, seed: int) -> dict:
    """A `kind` tensor as llama.cpp writes it, read by gguf_grid; gguf-py's dequantize must give its weights."""
    import gguf
    from gguf_blocks import Tensor, encode

    from edgeslm.models.gguf_grid import _dequant, _grid

    w = np.random.default_rng(seed).standard_normal((N, K)).astype(np.float32) * 0.05
    raw = encode(w, kind)
    g = _grid(Tensor(kind, raw))
    assert np.array_equal(_dequant(g), gguf.quants.dequantize(raw, getattr(gguf.GGMLQuantizationType, kind)))
    return g


def _dequant(g: dict) -> np.ndarray:
    from edgeslm.models.gguf_grid import _dequant as dequant

    return dequant(g)


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    """(folder with q41.pte and x.npy, the reference outputs for 5 and 1 tokens, the reference of grids
    whose first two rows are swapped). The program's outputs: the Q4_1 linear's 40, then the Q8_0 one's."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    from edgeslm.formats.executorch.gguf_op import gguf_linear_module, pack, unpack

    folder = tmp_path_factory.mktemp("q41")
    from edgeslm.formats.executorch.gguf_op import dequantize_tiles

    grids = [_grid(0), _grid8(3)] + [_encoded(kind, 10 + i) for i, kind in enumerate(KINDS)]
    for g in grids:
        tiles, kind = pack(g)
        q, d, m = (t.numpy() for t in unpack(torch.from_numpy(tiles), kind))
        w = dequantize_tiles(tiles, kind)
        assert np.array_equal(w[:N], _dequant(g)), g["type"]  # the tiles hold the file's weights exactly
        assert (q[N:] == 0).all() and (d[N:] == 0).all()  # the padded rows of the last tile

    def net_of(gs):
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lins = torch.nn.ModuleList([gguf_linear_module(t, N, None, kind) for t, kind in map(pack, gs)])

            def forward(self, x):  # an XNNPACK op after the kernels: the program mixes both
                return torch.cat([lin(x) for lin in self.lins], dim=-1) * 2.0

        return Net().eval()

    net = net_of(grids)
    x = torch.randn(1, 5, K, generator=torch.Generator().manual_seed(1))
    w = torch.from_numpy(np.concatenate([_dequant(g) for g in grids]))
    with torch.no_grad():
        ref = net(x)
        exact = 2.0 * (x @ w.T)
        # the reference differs from float weights only by the int8 activations (per block of 32)
        for i in range(len(grids)):
            part = slice(i * N, (i + 1) * N)
            err = (ref - exact)[..., part].abs().max()
            assert 0 < err < 0.02 * exact[..., part].abs().max(), grids[i]["type"]
        wrong = 2.0 * net_of([{**g, "q": g["q"][[1, 0, *range(2, N)]]} for g in grids])(x)
        ep = torch.export.export(net, (x,), dynamic_shapes=({1: torch.export.Dim("tokens", min=1, max=8)},),
                                 strict=False)
    program = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()],
                                          compile_config=EdgeCompileConfig(_check_ir_validity=False)).to_executorch()
    (folder / "q41.pte").write_bytes(program.buffer)
    np.save(folder / "x.npy", x.numpy())
    (folder / "runner.pyz").write_bytes(build_bytes())
    return folder, [ref.numpy(), ref[:, :1].numpy()], wrong.numpy()


def _check(got: dict, refs: list, wrong: np.ndarray) -> None:
    assert not got["torch"]
    for out, ref in zip(got["outs"], refs):
        out = np.asarray(out, dtype=np.float32)
        assert out.shape == ref.shape and np.abs(out - ref).max() < 1e-5 * np.abs(ref).max(), got["kernel"]
    for i in range(wrong.shape[-1] // N):  # rows are told apart in every linear
        part = slice(i * N, (i + 1) * N)
        diff = np.abs(np.asarray(got["outs"][0])[..., part] - wrong[..., part]).max()
        assert diff > 0.01 * np.abs(wrong[..., part]).max(), (got["kernel"], i)


def test_each_x86_kernel_gives_the_reference(program):
    import platform

    from edgeslm.native.runtime_folder import runtime_folder

    if platform.machine() != "x86_64":
        pytest.fail("this test runs on an x86_64 build host")
    folder, refs, wrong = program
    rt = runtime_folder("x86_64")
    flags = Path("/proc/cpuinfo").read_text()
    kernels = ["scalar", "avx2"] + (["avx512-vnni"] if "avx512_vnni" in flags else [])
    seen = []
    for kernel in kernels:
        env = {"PYTHONPATH": str(folder / "runner.pyz"), "PATH": "/usr/bin:/bin", "EDGESLM_GGUF_KERNEL": kernel}
        r = subprocess.run([sys.executable, "-c", SCRIPT, str(rt), str(folder / "q41.pte"), str(folder / "x.npy")],
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        got = json.loads(r.stdout.strip().splitlines()[-1])
        _check(got, refs, wrong)
        seen.append(got["kernel"])
    assert seen == kernels  # each was the one asked for (the best one when none is asked for is the last)


def test_the_neon_kernels_give_the_reference_on_the_emulated_pi(program):
    """qemu-aarch64 as a Cortex-A72 (Pi 4: NEON without dotprod) and a Cortex-A76 (Pi 5: dotprod), and
    the scalar kernel, with the runtime folder cross-built for aarch64."""
    from edgeslm.devtools.emulate import ensure_image
    from edgeslm.native.runtime_folder import runtime_folder

    folder, refs, wrong = program
    image = ensure_image(Path(os.environ.get("EDGESLM_EMULATE_CACHE", Path.home() / ".cache/edgeslm/emulate")))
    rt = runtime_folder("aarch64")
    for cpu, forced, kernel in (("cortex-a72", None, "neon"), ("cortex-a76", None, "neon-dotprod"),
                                ("cortex-a76", "scalar", "scalar")):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QEMU_", "EDGESLM_GGUF"))}
        env.update(image.env(cpu))
        env["PYTHONPATH"] = f"{folder / 'runner.pyz'}:{image.site}"
        if forced:
            env["EDGESLM_GGUF_KERNEL"] = forced
        r = subprocess.run([str(image.qemu), "-L", str(image.rootfs), str(image.python), "-c", SCRIPT, str(rt),
                            str(folder / "q41.pte"), str(folder / "x.npy")],
                           capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        got = json.loads(r.stdout.strip().splitlines()[-1])
        assert got["kernel"] == kernel, (cpu, got["kernel"])
        _check(got, refs, wrong)


def test_tiles_that_do_not_match_the_input_are_refused(tmp_path):
    """The kernel checks the tiles against x's width and the block type (here 64 inputs' worth of Q4_1 for 96
    inputs, Q8_0 tiles called as Q4_1, and a type it does not run): the call fails with an error, nothing is read
    out of bounds."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    from edgeslm.formats.executorch.gguf_op import Q4_1, pack_q4_1, pack_q8_0, register
    from edgeslm.native.runtime_folder import runtime_folder
    from edgeslm.runner.errors import RunnerError
    from edgeslm.runner.native_et import NativeRuntime

    register()
    g = _grid(2)
    narrow = pack_q4_1({**g, "q": g["q"][:, :64], "d": g["d"][:, :2], "m": g["m"][:, :2]})
    q8 = pack_q8_0(_grid8(4))
    x = torch.randn(1, 1, K)
    runtime = NativeRuntime(str(runtime_folder("x86_64")))
    for name, tiles, kind in (("narrow", narrow, Q4_1), ("q8-as-q41", q8, Q4_1), ("q2k", q8, 10)):
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.register_buffer("tiles", torch.from_numpy(tiles))

            def forward(self, x):
                return torch.ops.edgeslm.gguf_linear(x, self.tiles, kind)

        with torch.no_grad():
            ep = torch.export.export(Net(), (x,), strict=False)
        program = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()],
                                              compile_config=EdgeCompileConfig(_check_ir_validity=False)).to_executorch()
        (tmp_path / f"{name}.pte").write_bytes(program.buffer)
        method = runtime.load(str(tmp_path / f"{name}.pte"))
        with pytest.raises(RunnerError, match=r"failed \(ExecuTorch error 18\)"):  # InvalidArgument, the kernel's
            method([x.numpy()])
