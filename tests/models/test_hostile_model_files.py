"""Hostile files in a model folder, checked without torch: links that leave the folder, FIFOs and devices, JSON
nested thousands of levels deep, a config.json whose numbers are strings, weights and tokenizer files that are
garbage. Each is one line naming the file and what to do (exit 2), before any slow step."""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile

import pytest
from click.testing import CliRunner

from edgeslm.cli import main
from edgeslm.errors import EXIT_USER, ModelSourceError
from edgeslm.models.checks import check_gguf, check_model_folder
from edgeslm.models.sources import ResolvedSource

VOCAB = 40
DEEP = "[" * 50000 + "]" * 50000


def fake_model(folder, weights="safetensors"):
    """A model folder edgeslm's checks accept: config.json, whole safetensors weights, a WordLevel tokenizer."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "bert", "architectures": ["BertModel"], "vocab_size": VOCAB, "hidden_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 32,
        "type_vocab_size": 2, "id2label": {"0": "a", "1": "b"}, "label2id": {"a": 0, "b": 1}}))
    if weights == "safetensors":
        header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
        (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    (folder / "tokenizer.json").write_text(json.dumps(
        {"model": {"type": "WordLevel", "vocab": {f"w{i}": i for i in range(VOCAB)}, "unk_token": "w0"},
         "added_tokens": [{"id": 0, "content": "w0"}]}))
    return folder


def refused(folder, *words) -> str:
    with pytest.raises(ModelSourceError) as info:
        check_model_folder("m", folder, "embedding")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"model source 'm' ({folder}): "), msg
    for w in words:
        assert w in msg, msg
    return msg


def test_the_fake_model_passes(tmp_path):
    facts = check_model_folder("m", fake_model(tmp_path / "m"), "embedding")
    assert facts.tokenizer_size == VOCAB and facts.weights == ("model.safetensors",)


# 1. links that leave the folder ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "vocab.txt", "model.safetensors",
                                  "special_tokens_map.json", "merges.txt"])
def test_a_model_file_linking_outside_is_refused(tmp_path, name):
    folder = fake_model(tmp_path / "m")
    (folder / name).unlink(missing_ok=True)
    (folder / name).symlink_to("/etc/passwd")
    refused(folder, f"{name} leads outside its model folder", "(to /etc/passwd)")
    with pytest.raises(Exception, match="leads outside"):  # nor hashed into the build's cache key
        ResolvedSource("m", "local", folder, None).fingerprint()


def test_a_weights_shard_linking_outside_is_refused(tmp_path):
    folder = fake_model(tmp_path / "m")
    (tmp_path / "elsewhere.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    (folder / "model.safetensors").rename(folder / "model-1.safetensors")
    (folder / "model-2.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}))
    refused(folder, "model-2.safetensors leads outside its model folder")


def test_links_inside_a_hub_snapshot_are_fine(tmp_path):
    """The hub cache keeps files in blobs/ and links them from snapshots/<commit>/: that is inside the repo."""
    repo = tmp_path / "models--org--m"
    made = fake_model(tmp_path / "made")
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    for f in made.iterdir():
        f.rename(repo / "blobs" / f.name)
        (snap / f.name).symlink_to(f"../../blobs/{f.name}")
    assert check_model_folder("m", snap, "embedding").tokenizer_size == VOCAB


# 2. FIFOs and devices -------------------------------------------------------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "model.safetensors", "generation_config.json"])
def test_a_fifo_in_a_model_folder_is_refused_without_hanging(tmp_path, name):
    folder = fake_model(tmp_path / "m")
    (folder / name).unlink(missing_ok=True)
    os.mkfifo(folder / name)
    refused(folder, f"{name} is a FIFO (named pipe), not a regular file")


def test_a_weights_file_linking_to_a_device(tmp_path):
    folder = fake_model(tmp_path / "m")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").symlink_to("/dev/zero")
    refused(folder, "pytorch_model.bin leads outside its model folder")


@pytest.mark.timeout(60)
def test_a_fifo_gguf_is_refused_without_hanging(tmp_path):
    os.mkfifo(tmp_path / "m.gguf")
    with pytest.raises(ModelSourceError, match="m.gguf is a FIFO"):
        check_gguf("m", tmp_path / "m.gguf", "text-generation")


def test_a_model_source_that_is_a_device_or_a_folder_says_so(tmp_path):
    from edgeslm.models.sources import resolve_source

    with pytest.raises(ModelSourceError, match="/dev/urandom is a character device, not a folder"):
        resolve_source("/dev/urandom", tmp_path)
    (tmp_path / "m.gguf").mkdir()
    with pytest.raises(ModelSourceError, match="m.gguf is a folder, not a GGUF file"):
        resolve_source("./m.gguf", tmp_path)


# 3. deep JSON ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "generation_config.json",
                                  "tokenizer_config.json", "model.safetensors.index.json"])
def test_deeply_nested_json_is_one_line(tmp_path, name):
    folder = fake_model(tmp_path / "m")
    (folder / name).write_text('{"a": ' + DEEP + "}")
    refused(folder, f"{name} is nested deeper than 64 levels")


def test_a_deeply_nested_safetensors_header(tmp_path):
    folder = fake_model(tmp_path / "m")
    header = ('{"w": ' + DEEP + "}").encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    refused(folder, "model.safetensors is damaged: header is nested deeper than 64 levels")


# 10. garbage weights and tokenizer files ---------------------------------------------------------------------------

def torch_zip(pickle_head: bytes = b"\x80\x02}q\x00.", name="archive/data.pkl") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(name, pickle_head)
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


@pytest.mark.parametrize("content,words", [
    (os.urandom(4096), "neither a zip archive nor a legacy torch.save file"),
    (b"", "empty file"),
    (torch_zip(name="archive/other.txt"), "a zip archive without <name>/data.pkl"),
    (torch_zip(b"not a pickle"), "its data.pkl is not a pickle"),
    (b"PK\x03\x04" + os.urandom(200), "a damaged zip archive"),
])
def test_a_garbage_pytorch_model_bin_is_refused(tmp_path, content, words):
    folder = fake_model(tmp_path / "m", weights="bin")
    (folder / "pytorch_model.bin").write_bytes(content)
    msg = refused(folder, "pytorch_model.bin is damaged or not a PyTorch checkpoint", words,
                  "restore it from the model's release")
    assert "weights_only" not in msg


def test_a_torch_layout_passes_without_unpickling(tmp_path):
    folder = fake_model(tmp_path / "m", weights="bin")
    (folder / "pytorch_model.bin").write_bytes(torch_zip())
    assert check_model_folder("m", folder, "embedding").weights == ("pytorch_model.bin",)
    legacy = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b".\x80\x02M\xe9\x03."
    (folder / "pytorch_model.bin").write_bytes(legacy)
    assert check_model_folder("m", folder, "embedding").weights == ("pytorch_model.bin",)


@pytest.mark.parametrize("content,words", [
    ('{"version": "1.0"}', "tokenizer.json has no model table with a vocab"),
    ("[1, 2, 3]", "tokenizer.json has no model table with a vocab"),
    ('{"model": {"vocab": "abc"}}', "tokenizer.json has no model table with a vocab"),
    ('{"model": {"vocab": {}}, "added_tokens": [{"id": "7"}]}', "added_tokens is not a list of tokens with integer"),
    ("not json", "tokenizer.json is not valid JSON"),
    (b"\x89PNG\r\n\x1a\n\xff\xfe", "tokenizer.json is not UTF-8"),
])
def test_a_garbage_tokenizer_json_is_refused(tmp_path, content, words):
    folder = fake_model(tmp_path / "m")
    path = folder / "tokenizer.json"
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    refused(folder, words, "restore it from the model's release")


def test_a_vocab_txt_must_be_text(tmp_path):
    folder = fake_model(tmp_path / "m")
    (folder / "tokenizer.json").unlink()
    (folder / "vocab.txt").write_bytes(b"\x00\x01" * 100)
    refused(folder, "vocab.txt is not a text file (it holds NUL bytes")
    (folder / "vocab.txt").write_bytes("[PAD]\ncaf\xe9\n".encode("latin-1"))
    refused(folder, "vocab.txt is not UTF-8 text")
    (folder / "vocab.txt").write_text("".join(f"w{i}\u2028x\n" for i in range(VOCAB)))  # U+2028 is not a line end
    assert check_model_folder("m", folder, "embedding").tokenizer_size == VOCAB


# 11. config.json key types ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("key,value,words", [
    ("vocab_size", "30522", 'vocab_size is "30522" (a string); it must be a positive whole number'),
    ("hidden_size", True, "hidden_size is true (a boolean)"),
    ("num_attention_heads", 0, "num_attention_heads is 0 (a number)"),
    ("vocab_size", 10 ** 309, "vocab_size is 1000000000000000000000000000000000000000 (a number); it must be a "
     "positive whole number (at most 2147483647)"),
    ("num_hidden_layers", 2.0, "num_hidden_layers is 2.0 (a number)"),
    ("max_position_embeddings", None, "max_position_embeddings is null"),
    ("type_vocab_size", -1, "type_vocab_size is -1"),
    ("id2label", ["a", "b"], "id2label is not a table of names"),
    ("num_labels", "2", 'num_labels is "2" (a string)'),
    ("model_type", 5, "config.json has no model_type"),
])
def test_config_json_key_types(tmp_path, key, value, words):
    folder = fake_model(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, key: value}))
    refused(folder, words)


def test_validate_names_the_key_and_exits_2(tmp_path):
    folder = fake_model(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": "40"}))
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'name = "x"\n[model]\nsource = "{folder}"\ntask = "embedding"\n')
    r = CliRunner().invoke(main, ["validate", str(recipe)])
    assert r.exit_code == EXIT_USER and "model.source: model source" in r.output, r.output
    assert 'config.json: vocab_size is "40" (a string)' in r.output


# 13. the loader never suggests weights_only=False ---------------------------------------------------------------

def test_weights_torch_refuses_to_unpickle_are_named_without_the_unsafe_advice(tmp_path, tiny_model):
    import shutil

    import torch

    from edgeslm.models.loader import load_model
    from edgeslm.models.sources import resolve_source

    folder = tmp_path / "m"
    shutil.copytree(tiny_model("bert", "embedding"), folder)
    (folder / "model.safetensors").unlink()
    torch.save({"embeddings.word_embeddings.weight": torch.zeros(2), "run": os.getcwd}, folder / "pytorch_model.bin")
    source = resolve_source(str(folder), tmp_path)
    assert check_model_folder(str(folder), source.folder, "embedding")  # its layout is a torch checkpoint's
    with pytest.raises(ModelSourceError) as info:
        load_model(source, "embedding")
    msg = str(info.value)
    assert "weights_only" not in msg and "damaged or not a plain PyTorch checkpoint" in msg, msg
    assert "restore it from the model's release, or use model.safetensors" in msg
