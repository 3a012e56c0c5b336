"""The device runner ships as one reproducible zip of edgeslm.runner + edgeslm.contract that imports
nothing else of edgeslm and no torch, and runs on a bare Python."""

from __future__ import annotations

import ast
import hashlib
import io
import json
import subprocess
import sys
import zipfile

from edgeslm.runner.bundle import build_bytes, sources

ALLOWED_THIRD_PARTY = {"numpy", "onnxruntime", "executorch", "executorch_numpy_runtime", "psutil"}


def test_the_bundle_is_reproducible_and_holds_only_device_code():
    a, b = build_bytes(), build_bytes()
    assert hashlib.sha256(a).digest() == hashlib.sha256(b).digest()
    names = zipfile.ZipFile(io.BytesIO(a)).namelist()
    assert names[0] == "__main__.py" and "edgeslm/runner/bundle.py" not in names
    assert {n.split("/")[1] for n in names if n.count("/") == 2} == {"runner", "contract"}


def test_device_code_imports_only_the_stdlib_numpy_runtimes_and_itself():
    stdlib = set(sys.stdlib_module_names)
    for name, data in sources():
        for node in ast.walk(ast.parse(data, name)):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for mod in mods:
                top = mod.split(".")[0]
                if top == "edgeslm":
                    assert mod.startswith(("edgeslm.runner", "edgeslm.contract")), (name, mod)
                    # the host-only bundle builder: only behind runner/__init__'s lazy RUNNER_PATH
                    assert mod != "edgeslm.runner.bundle" or name == "edgeslm/runner/__init__.py", (name, mod)
                elif top == "torch":  # only behind the official runtime, which speaks torch tensors
                    assert name.endswith("runtimes.py"), (name, mod)
                else:
                    assert top in stdlib or top in ALLOWED_THIRD_PARTY or top == "__future__", (name, mod)


def test_the_zip_runs_in_an_isolated_python(tmp_path):
    """-I: no site-packages of edgeslm, no current folder on the path; the zip alone answers."""
    z = tmp_path / "edgeslm-runner.pyz"
    z.write_bytes(build_bytes())
    r = subprocess.run([sys.executable, "-I", "-S", str(z), "hash", str(z)], capture_output=True, text=True,
                       cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {str(z): hashlib.sha256(z.read_bytes()).hexdigest()}
