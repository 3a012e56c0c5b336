"""ExecuTorch without torch: libedgeslm_et.so (built here from the pinned executorch wheel's own runtime
libraries) runs a real .pte through the runner's ctypes binding, in a process that never imports torch,
and gives exactly the host's ExecuTorch outputs; a broken program is a clear error, not a crash."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgeslm.runner.bundle import build_bytes
from edgeslm.native.build import build

pytestmark = pytest.mark.slow  # compiles the ExecuTorch runtime folder and lowers programs

SCRIPT = r"""
import json, os, sys
import numpy as np
from edgeslm.runner.native_et import NativeRuntime
from edgeslm.runner.errors import RunnerError
lib_dir, build_dir = sys.argv[1:3]
m = json.load(open(os.path.join(build_dir, "manifest.json")))
art = next(a for a in m["artifacts"] if a["format"] == "executorch")
ref = np.load(os.path.join(build_dir, m["reference"]["file"]))
order = art.get("export", {}).get("input_order") or [i["name"] for i in m["inputs"]]
rt = NativeRuntime(lib_dir, threads=1)
method = rt.load(os.path.join(build_dir, art["file"]))
out_name = m["outputs"][0]["name"]
worst, samples = 0.0, m["reference"]["samples"]
for i in range(samples):
    out = method([ref[f"input/{i}/{k}"] for k in order])[0]
    host = ref[f"host/{art['name']}/{i}/{out_name}"]
    worst = max(worst, float(np.abs(out - host).max()))
broken = os.path.join(os.path.dirname(lib_dir), "broken.pte")
with open(os.path.join(build_dir, art["file"]), "rb") as f:
    open(broken, "wb").write(f.read()[:4096])
try:
    rt.load(broken)
    error = None
except RunnerError as exc:
    error = str(exc)
print(json.dumps({"worst": worst, "samples": samples, "threads": rt.threads, "error": error,
                  "torch": "torch" in sys.modules, "executorch_py": "executorch" in sys.modules}))
"""


@pytest.fixture(scope="module")
def runtime_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("etrt") / "rt"
    build(out)
    return out


def test_a_pte_runs_torch_free_with_the_hosts_exact_outputs(tmp_path, runtime_dir, tiny_builds):
    bundle = tmp_path / "runner.pyz"
    bundle.write_bytes(build_bytes())
    env = {"PYTHONPATH": str(bundle), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(runtime_dir), str(tiny_builds["v1"])],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["samples"] >= 5 and got["worst"] == 0.0 and got["threads"] == 1
    assert not got["torch"] and not got["executorch_py"]
    assert got["error"] and "broken.pte" in got["error"]


def test_the_runtime_folder_is_self_contained(runtime_dir):
    names = sorted(p.name for p in runtime_dir.iterdir())
    assert names[0] == "libedgeslm_et.so" and len(names) == 7 and "runtime.json" in names
    for lib in runtime_dir.glob("*.so"):  # nothing in the folder needs libtorch or c10
        needed = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, timeout=30).stdout
        assert "(NEEDED)" in needed and "libtorch" not in needed and "libc10" not in needed, lib.name
        if lib.name == "libedgeslm_et.so":
            assert "$ORIGIN" in needed


def test_profile_with_et_runtime_never_imports_torch(tmp_path, runtime_dir, tiny_builds):
    """The runner's profile command on the shim: torch made unimportable, parity with the stored
    reference passes, and the result names the runtime."""
    bundle = tmp_path / "runner.pyz"
    bundle.write_bytes(build_bytes())
    no_torch = ("import runpy, sys; sys.modules['torch'] = None; sys.modules['executorch'] = None; "
                "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", no_torch, str(bundle), "profile", str(tiny_builds["v1"]),
                        "--artifact", "executorch", "--iters", "3", "--warmup", "1", "--et-runtime", str(runtime_dir)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, (r.stdout[-1000:], r.stderr[-2000:])
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["artifact"]["runtime"].startswith("edgeslm-et (executorch 1.5.1")
    assert result["parity"]["passed"] and result["latency_ms"]["n"] >= 3
    missing = subprocess.run([sys.executable, str(bundle), "profile", str(tiny_builds["v1"]), "--artifact",
                              "executorch", "--iters", "1", "--et-runtime", str(tmp_path / "nowhere")],
                             capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert missing.returncode == 1 and "no libedgeslm_et.so in" in json.loads(missing.stdout)["error"]


def test_executorchs_custom_ops_can_load_after_the_runtime_folder(runtime_dir):
    """The build host loads the runtime folder in-process (verification of programs with edgeslm's own
    operators) and later executorch's custom ops (the next export). Both register llama::custom_sdpa;
    executorch's registry aborts the process on a second registration, so its kernels must come first."""
    script = ("import sys, torch\n"
              "from edgeslm.runner.native_et import NativeRuntime\n"
              "NativeRuntime(sys.argv[1])\n"
              "import executorch.extension.llm.custom_ops.custom_ops\n"
              "print(torch.ops.llama.custom_sdpa is not None)\n")
    r = subprocess.run([sys.executable, "-c", script, str(runtime_dir)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("True"), r.stderr[-2000:]
