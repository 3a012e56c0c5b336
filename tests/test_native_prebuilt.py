"""What is taken as given: the package's prebuilt runtime folder only when it was built from these sources for this
install's executorch, whole; a manifest's artifact format only when it is a registered one; the Debian archive
from this machine's APT sources."""

from __future__ import annotations

import json
import shutil
from importlib import metadata
from pathlib import Path

import pytest

from edgeslm.errors import UserError
from edgeslm.native import build as native
from edgeslm.native import runtime_folder as rf

GOLDEN = Path(__file__).resolve().parent / "reports" / "golden" / "tinydeploy" / "host"


def _prebuilt(root: Path, **meta) -> Path:
    folder = root / "x86_64"
    folder.mkdir(parents=True)
    for name in (*native.LIBS, native.SHIM):
        (folder / name).write_bytes(b"\x7fELF")
    (folder / "runtime.json").write_text(json.dumps({"executorch": metadata.version("executorch"), "arch": "x86_64",
                                                     "abi": 1, "onnxruntime_ops": True,
                                                     "sources": native.sources_hash(), **meta}))
    return folder


def test_a_prebuilt_folder_is_taken_only_when_it_fits(tmp_path, monkeypatch):
    monkeypatch.setattr(rf, "PREBUILT", tmp_path / "ok")
    folder = _prebuilt(tmp_path / "ok")
    assert rf.prebuilt("x86_64") == folder
    assert rf.prebuilt("aarch64") is None  # none shipped for it here
    for name, meta in (("sources", {"sources": "0" * 64}), ("version", {"executorch": "0.1.0"}),
                       ("no-ops", {"onnxruntime_ops": False})):
        monkeypatch.setattr(rf, "PREBUILT", tmp_path / name)
        _prebuilt(tmp_path / name, **meta)
        assert rf.prebuilt("x86_64") is None, name
    monkeypatch.setattr(rf, "PREBUILT", tmp_path / "partial")
    (_prebuilt(tmp_path / "partial") / native.LIBS[0]).unlink()
    assert rf.prebuilt("x86_64") is None
    monkeypatch.setattr(rf, "PREBUILT", tmp_path / "garbage")
    (_prebuilt(tmp_path / "garbage") / "runtime.json").write_text("[1, 2")
    assert rf.prebuilt("x86_64") is None


def test_a_manifest_naming_an_unknown_format_is_refused(tmp_path):
    from edgeslm.artifacts.manifest import load_manifest, read_manifest

    folder = tmp_path / "build"
    shutil.copytree(GOLDEN, folder)
    assert read_manifest(folder).artifacts[0].format in ("onnx", "executorch")
    m = json.loads((folder / "manifest.json").read_text())
    m["artifacts"][0]["format"] = "tflite"
    (folder / "manifest.json").write_text(json.dumps(m))
    assert read_manifest(folder) is None  # the cache's reader: not a usable build
    with pytest.raises(UserError, match="unknown format 'tflite'") as info:
        load_manifest(folder)
    assert "\n" not in str(info.value)


def test_the_debian_archive_comes_from_this_machines_apt_sources(tmp_path, monkeypatch):
    from edgeslm.devtools.emulate.image import debian_mirror

    monkeypatch.delenv("EDGESLM_DEBIAN_MIRROR", raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "other.list").write_text("deb http://example.invalid/ubuntu noble main\n")
    with pytest.raises(RuntimeError, match="no Debian archive"):
        debian_mirror(tmp_path)
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\nComponents: main\n")
    assert debian_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://other.example/debian bookworm main\n")
    monkeypatch.setenv("EDGESLM_DEBIAN_MIRROR", "http://own.example/debian")
    assert debian_mirror(tmp_path) == "http://own.example/debian"
