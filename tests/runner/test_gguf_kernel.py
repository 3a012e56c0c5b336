"""edgeslm::gguf_linear, the .pte's Q4_1 linear: a program holding one (40 outputs: two whole tiles of 16
and a padded one; 96 inputs: three blocks) runs in the torch-free runtime with every kernel this machine
and the emulated Pi have (AVX512-VNNI, AVX2, scalar; NEON on a Cortex-A72, NEON dotprod on an A76) and
gives the Python reference's outputs, for one token and for five. The reference itself is checked against
the dequantized weights, and a kernel that read the tiles wrongly would fail here: the test also feeds the
program a grid whose rows were swapped; a program whose tiles do not match its input width is refused by
the kernel, not read past its end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeslm.runner.bundle import build_bytes

N, K = 40, 96
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


def _grid(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    f16 = lambda a: a.astype(np.float16).astype(np.float32)  # noqa: E731 - the file's fp16 values
    return {"type": "Q4_1", "q": rng.integers(0, 16, (N, K)).astype(np.uint8),
            "d": f16(rng.random((N, K // 32)) * 0.01 + 0.001), "m": f16(-rng.random((N, K // 32)) * 0.08)}


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    """(folder with q41.pte and x.npy, the reference outputs for 5 and 1 tokens, the reference of a grid
    whose first two rows are swapped)."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    from edgeslm.generation.gguf_op import gguf_linear_module, pack_q4_1, unpack_q4_1

    folder = tmp_path_factory.mktemp("q41")
    g = _grid(0)
    tiles = pack_q4_1(g)
    q, d, m = (t.numpy() for t in unpack_q4_1(torch.from_numpy(tiles)))
    assert (q[:N].reshape(N, K) == g["q"]).all() and (d[:N] == g["d"]).all() and (m[:N] == g["m"]).all()
    assert (q[N:] == 0).all() and (d[N:] == 0).all()  # the padded rows of the last tile

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = gguf_linear_module(tiles, N)

        def forward(self, x):
            return self.lin(x) * 2.0  # an XNNPACK op after the kernel: the program mixes both

    net = Net().eval()
    x = torch.randn(1, 5, K, generator=torch.Generator().manual_seed(1))
    w = torch.from_numpy((g["q"].reshape(N, -1, 32) * g["d"][..., None] + g["m"][..., None]).reshape(N, K))
    with torch.no_grad():
        ref = net(x)
        exact = 2.0 * (x @ w.T)
        # the reference differs from float weights only by the int8 activations (per block of 32)
        assert 0 < (ref - exact).abs().max() < 0.02 * exact.abs().max()
        swapped = {**g, "q": g["q"][[1, 0, *range(2, N)]]}
        wrong = 2.0 * gguf_linear_module(pack_q4_1(swapped), N)(x)
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
    assert np.abs(np.asarray(got["outs"][0]) - wrong).max() > 0.01 * np.abs(wrong).max()  # rows are told apart


def test_each_x86_kernel_gives_the_reference(program):
    import platform

    from edgeslm.profiling.et_runtime import runtime_folder

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
    from edgeslm.emulate import ensure_image
    from edgeslm.profiling.et_runtime import runtime_folder

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
    """The kernel checks the tiles against x's width (here 64 inputs' worth for 96 inputs): the call fails with
    an error, nothing is read out of bounds."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    from edgeslm.generation.gguf_op import Q4_1, pack_q4_1, register
    from edgeslm.profiling.et_runtime import runtime_folder
    from edgeslm.runner.errors import RunnerError
    from edgeslm.runner.native_et import NativeRuntime

    register()
    g = _grid(2)
    narrow = pack_q4_1({**g, "q": g["q"][:, :64], "d": g["d"][:, :2], "m": g["m"][:, :2]})

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("tiles", torch.from_numpy(narrow))

        def forward(self, x):
            return torch.ops.edgeslm.gguf_linear(x, self.tiles, Q4_1)

    x = torch.randn(1, 1, K)
    with torch.no_grad():
        ep = torch.export.export(Net(), (x,), strict=False)
    program = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()],
                                          compile_config=EdgeCompileConfig(_check_ir_validity=False)).to_executorch()
    (tmp_path / "bad.pte").write_bytes(program.buffer)
    method = NativeRuntime(str(runtime_folder("x86_64"))).load(str(tmp_path / "bad.pte"))
    with pytest.raises(RunnerError, match=r"failed \(ExecuTorch error 18\)"):  # InvalidArgument, the kernel's
        method([x.numpy()])
