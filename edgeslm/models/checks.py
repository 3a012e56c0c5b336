"""Check a model folder before loading it, without torch: config, architecture, weights, tokenizer.

Everything here reads headers and small JSON files only, so `edgeslm validate` and the first step of a
build refuse a broken or unsuitable model in milliseconds instead of failing deep inside transformers
(or, worse, building something meaningless: a folder without tokenizer files makes transformers invent
a 5-token tokenizer that turns every word into [UNK]).
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgeslm.contract.tasks import TASKS
from edgeslm.contract.documents import DocumentError, loads
from edgeslm.errors import ModelSourceError
from edgeslm.inputs import InputError, check_regular, inside, open_regular, read_json, read_text

# the files a model folder's build reads (links among them must stay inside the folder; sources.py hashes them)
MODEL_FILE_GLOBS = ("*.json", "*.safetensors", "*.bin", "*.txt", "*.model", "*.tiktoken", "*.jinja", "*.py")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")
# A tokenizer smaller than this share of the embedding table is not the model's own.
MIN_VOCAB_SHARE = 0.5


@dataclass(frozen=True)
class ModelFacts:
    model_type: str
    vocab_size: int | None
    tokenizer_size: int | None
    weights: tuple[str, ...]


def _fail(spec: str, folder: Path, problem: str, fix: str) -> ModelSourceError:
    return ModelSourceError(f"model source {spec!r} ({folder}): {problem} ({fix})")


RESTORE = "restore it from the model's release"
# config.json keys transformers and edgeslm build from: positive whole numbers when present (None allowed
# where transformers itself writes null for "derive it")
POSITIVE_INTS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "max_position_embeddings", "num_labels", "embedding_size")
POSITIVE_OR_NULL = ("num_key_value_heads", "head_dim")
MAX_SIZE = (1 << 31) - 1  # transformers and the runtimes index tensors with 32- or 64-bit integers
# JSON files transformers reads from a model folder besides config.json, tokenizer.json and weight indexes
OTHER_JSON = ("generation_config.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
              "chat_template.json", "preprocessor_config.json")
# the legacy torch.save format starts with a pickled magic number (protocol 2..5, LONG1 of 10 bytes)
TORCH_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def model_root(folder: Path) -> Path:
    """The folder a model folder's files must stay inside (after links): the folder itself, or for a Hugging
    Face hub snapshot (models--org--name/snapshots/<commit>, whose files link to ../../blobs) its repo's
    cache folder. A config.json or tokenizer file that links elsewhere (/etc/passwd) is refused."""
    folder = Path(folder)
    if folder.parent.name == "snapshots" and (folder.parent.parent / "blobs").is_dir():
        return folder.parent.parent
    return folder


def model_files(folder: Path, patterns) -> list[Path]:
    """The files of `folder` matching `patterns`, each a regular file inside model_root(folder): else the
    InputError naming it (a link leaving the folder, a FIFO, a device)."""
    root, seen = model_root(folder), {}
    for pattern in patterns:
        for p in sorted(folder.glob(pattern)):
            if p in seen or (p.is_dir() and not p.is_symlink()):
                continue
            inside(p, root, "model folder")
            if not p.is_dir():
                check_regular(p, "model file")
                seen[p] = None
    return list(seen)


def _json(spec: str, folder: Path, name: str, kind: str = "json"):
    try:
        return read_json(folder / name, kind, root=model_root(folder))
    except InputError as exc:
        raise _fail(spec, folder, f"{name} {exc.problem}", RESTORE) from None


def read_config(spec: str, folder: Path) -> dict:
    path = folder / "config.json"
    if not os.path.lexists(path):
        raise _fail(spec, folder, "no config.json", "point model.source at a folder saved with save_pretrained")
    data = _json(spec, folder, "config.json", "config.json")
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise _fail(spec, folder, "config.json has no model_type", "restore the file from the model's release")
    problem = config_problem(data)
    if problem:
        raise _fail(spec, folder, f"config.json: {problem}", RESTORE)
    return data


def config_problem(config: dict) -> str | None:
    """The first key of config.json whose type transformers or edgeslm would trip over later (a string
    vocab_size passes transformers' config and fails deep in the build), or None."""
    for key in POSITIVE_INTS + POSITIVE_OR_NULL:
        if key not in config or (key in POSITIVE_OR_NULL and config[key] is None):
            continue
        v = config[key]
        if type(v) is not int or not 0 < v <= MAX_SIZE:
            return f"{key} is {_given(v)}; it must be a positive whole number (at most {MAX_SIZE})"
    tv = config.get("type_vocab_size", 0)
    if type(tv) is not int or not 0 <= tv <= MAX_SIZE:
        return f"type_vocab_size is {_given(tv)}; it must be a whole number from 0 to {MAX_SIZE}"
    for key, kind in (("id2label", str), ("label2id", int)):
        table = config.get(key)
        if table is None:
            continue
        if not isinstance(table, dict) or not all(type(v) is kind for v in table.values()):
            return f"{key} is not a table of {'names' if kind is str else 'class numbers'}"
    arch = config.get("architectures")
    if arch is not None and not (isinstance(arch, list) and all(isinstance(a, str) for a in arch)):
        return "architectures is not a list of class names"
    return None


def _given(value) -> str:
    kind = {str: "a string", bool: "a boolean", float: "a number", list: "a list", dict: "a table",
            type(None): "null"}.get(type(value), "a number")
    return kind if isinstance(value, (list, dict)) or value is None else f"{json.dumps(value)[:40]} ({kind})"


def check_model_folder(spec: str, folder: Path, task: str, gguf: str | None = None) -> ModelFacts:
    """Refuse what cannot build: unknown architecture for the task, missing or damaged weights, missing
    or mismatched tokenizer, files that lead outside the folder. Returns what was found."""
    if gguf is not None:
        return check_gguf(spec, folder / gguf, task)
    try:
        model_files(folder, MODEL_FILE_GLOBS)
    except InputError as exc:
        raise _fail(spec, folder, f"{Path(exc.path).name} {exc.problem}", exc.fix or RESTORE) from None
    config = read_config(spec, folder)
    model_type = config["model_type"]
    info = TASKS[task]
    if model_type not in info.model_types:
        raise _fail(spec, folder, f"architecture {model_type!r} is not supported for task {task!r}",
                    f"supported: {', '.join(sorted(info.model_types))}")
    for name in OTHER_JSON:
        if os.path.lexists(folder / name) and not isinstance(_json(spec, folder, name), dict):
            raise _fail(spec, folder, f"{name} is not a JSON object", RESTORE)
    weights = _check_weights(spec, folder)
    vocab = config.get("vocab_size")
    tok_size = check_tokenizer(spec, folder, vocab)
    return ModelFacts(model_type, vocab, tok_size, weights)


def _check_weights(spec: str, folder: Path) -> tuple[str, ...]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if os.path.lexists(folder / index_name):
            index = _json(spec, folder, index_name)
            weight_map = index.get("weight_map") if isinstance(index, dict) else None
            if not isinstance(weight_map, dict) or not weight_map or \
                    not all(isinstance(v, str) for v in weight_map.values()):
                raise _fail(spec, folder, f"{index_name} is damaged (no weight_map from tensor names to shard "
                            "files)", "restore it from the model's release")
            shards = sorted(set(weight_map.values()))
            for shard in shards:
                if Path(shard).name != shard or shard in (".", "..") or "\x00" in shard:
                    raise _fail(spec, folder, f"{index_name} names the shard {shard[:80]!r}, which is not a file "
                                "name in the folder", "restore it from the model's release")
                if not os.path.lexists(folder / shard):
                    raise _fail(spec, folder, f"weights shard {shard} named by {index_name} is missing",
                                "download every shard")
                _check_weight_file(spec, folder, folder / shard)
            return tuple(shards)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if os.path.lexists(folder / name):
            _check_weight_file(spec, folder, folder / name)
            return (name,)
    raise _fail(spec, folder, "no weights (model.safetensors or pytorch_model.bin)",
                "save the model with save_pretrained, or download its weights")


def _check_weight_file(spec: str, folder: Path, path: Path) -> None:
    try:
        with open_regular(path, model_root(folder), "weights file") as f:
            safetensors = path.suffix == ".safetensors"
            problem = _safetensors_problem(f) if safetensors else torch_problem(f)
    except InputError as exc:
        raise _fail(spec, folder, f"{path.name} {exc.problem}", exc.fix or "download the weights again") from None
    if problem and safetensors:
        raise _fail(spec, folder, f"{path.name} is damaged: {problem}", "download or save the weights again")
    if problem:
        raise _fail(spec, folder, f"{path.name} is damaged or not a PyTorch checkpoint: {problem}",
                    "restore it from the model's release, or save the model as model.safetensors")


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is not whole (header and data size must agree), or None."""
    try:
        with open_regular(path, what="safetensors file") as f:
            return _safetensors_problem(f)
    except InputError as exc:
        return exc.problem


def _safetensors_problem(f) -> str | None:
    size = os.fstat(f.fileno()).st_size
    head = f.read(8)
    if len(head) < 8:
        return "shorter than its 8-byte header length"
    (n,) = struct.unpack("<Q", head)
    if n > min(size - 8, 100 << 20):
        return "header length is beyond the file (truncated or not safetensors)"
    try:
        header = loads(f.read(n), what="header", max_bytes=None)
    except DocumentError as exc:
        return f"{exc} (not a safetensors file)"
    if not isinstance(header, dict):
        return "header is not a table of tensors"
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = entry["data_offsets"]
        except (TypeError, KeyError, ValueError):
            return f"tensor {name[:80]!r} has no data offsets"
        if not (type(start) is int and type(stop) is int and 0 <= start <= stop):
            return f"tensor {name[:80]!r} has bad data offsets"
        end = max(end, stop)
    if 8 + n + end != size:
        return f"{size} bytes where the header describes {8 + n + end} (truncated or padded)"
    return None


def torch_problem(f) -> str | None:
    """Why a pytorch_model.bin is not a torch.save file, read from its structure without unpickling anything:
    a zip archive holding <name>/data.pkl that starts as a pickle, or the legacy format's pickled magic
    number. None when it looks like one (torch.load with weights_only=True still judges its content)."""
    head = f.read(16)
    if not head:
        return "empty file"
    if head[:1] == b"\x80" and 2 <= head[1] <= 5 and head[2:14] == TORCH_MAGIC:
        return None  # the legacy (pre-1.6) format
    if head[:4] != b"PK\x03\x04":
        return "neither a zip archive nor a legacy torch.save file"
    try:
        f.seek(0)
        with zipfile.ZipFile(f) as z:
            pickles = [n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if not pickles:
                return "a zip archive without <name>/data.pkl"
            with z.open(pickles[0]) as pkl:
                start = pkl.read(2)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError,
            RuntimeError) as exc:
        return f"a damaged zip archive ({type(exc).__name__})"
    if len(start) < 2 or start[0] != 0x80 or not 2 <= start[1] <= 5:
        return "its data.pkl is not a pickle"
    return None


def check_tokenizer(spec: str, folder: Path, model_vocab: int | None) -> int | None:
    """The tokenizer's size, when it can be read without transformers; refuse a folder without one, a
    tokenizer file that is damaged (not JSON, no model table, vocab.txt not text) and a tokenizer that does
    not fit the model's embedding table."""
    present = [n for n in TOKENIZER_FILES if os.path.lexists(folder / n)]
    if not present:
        raise _fail(spec, folder, f"no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); transformers "
                    "would invent a tiny one that maps every word to [UNK]",
                    "save the model's tokenizer there with tokenizer.save_pretrained(folder)")
    size = _tokenizer_size(spec, folder)
    check_vocab(spec, size, model_vocab, str(folder))
    return size


def check_vocab(spec: str, tokenizer_len: int | None, model_vocab: int | None, where: str) -> None:
    if tokenizer_len is None or model_vocab is None:
        return
    if tokenizer_len < MIN_VOCAB_SHARE * model_vocab:
        raise ModelSourceError(
            f"model source {spec!r} ({where}): the tokenizer has {tokenizer_len} tokens but the model's "
            f"embedding table has {model_vocab} rows: it is not this model's tokenizer (save the model's own "
            "tokenizer beside it)")
    if tokenizer_len > model_vocab:
        raise ModelSourceError(
            f"model source {spec!r} ({where}): the tokenizer has {tokenizer_len} tokens, more than the "
            f"model's {model_vocab} embedding rows: ids beyond the table would crash or read garbage (use the "
            "model's own tokenizer, or resize the embeddings and save again)")


def tokenizer_size(folder: Path) -> int | None:
    """The tokenizer's size (None when it cannot be told without transformers); ModelSourceError for a
    damaged tokenizer file."""
    return _tokenizer_size(str(folder), folder)


def _tokenizer_size(spec: str, folder: Path) -> int | None:
    if os.path.lexists(folder / "tokenizer.json"):
        return _tokenizer_json_size(spec, folder, _json(spec, folder, "tokenizer.json", "tokenizer"))
    if os.path.lexists(folder / "vocab.txt"):
        try:
            text = read_text(folder / "vocab.txt", "tokenizer", root=model_root(folder), what="vocab.txt")
        except InputError as exc:
            raise _fail(spec, folder, f"vocab.txt {exc.problem}", RESTORE) from None
        return len(io.StringIO(text, newline=None).readlines())  # lines as the tokenizer reads them
    if os.path.lexists(folder / "vocab.json"):
        vocab = _json(spec, folder, "vocab.json", "tokenizer")
        if not isinstance(vocab, dict) or not all(type(v) is int and v >= 0 for v in vocab.values()):
            raise _fail(spec, folder, "vocab.json is not a table of tokens to ids", RESTORE)
        return (max(vocab.values()) + 1) if vocab else None
    for name in TOKENIZER_FILES:  # sentencepiece models: binary, read by transformers; here only their kind
        if os.path.lexists(folder / name):
            try:
                check_regular(inside(folder / name, model_root(folder), "model folder"), "tokenizer file")
            except InputError as exc:
                raise _fail(spec, folder, f"{name} {exc.problem}", RESTORE) from None
    return None


def _tokenizer_json_size(spec: str, folder: Path, data) -> int | None:
    """What the tokenizers library needs at least: an object with a model table holding a vocab (a table of
    token ids, or a Unigram list); added_tokens, when present, a list of tables with integer ids."""
    model = data.get("model") if isinstance(data, dict) else None
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if not isinstance(vocab, (dict, list)):
        raise _fail(spec, folder, "tokenizer.json has no model table with a vocab (not a tokenizers file)", RESTORE)
    added = data.get("added_tokens") or []
    if not isinstance(added, list) or not all(isinstance(t, dict) and type(t.get("id")) is int for t in added):
        raise _fail(spec, folder, "tokenizer.json: added_tokens is not a list of tokens with integer ids", RESTORE)
    ids = set(range(len(vocab))) if isinstance(vocab, list) else \
        {v for v in vocab.values() if type(v) is int and v >= 0}
    ids |= {t["id"] for t in added if t["id"] >= 0}
    return (max(ids) + 1) if ids else None


# GGUF `general.architecture` -> transformers model_type (llama.cpp writes Mistral models as "llama")
GGUF_ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2", "phi3": "phi3", "gemma2": "gemma2"}


def check_gguf(spec: str, path: Path, task: str) -> ModelFacts:
    """A GGUF file: magic and version, architecture for the task, tensors and tokenizer present."""
    folder = path.parent
    try:
        with open_regular(path, what="GGUF file") as f:  # a FIFO would hang the read
            head = f.read(8)
    except InputError as exc:
        raise _fail(spec, folder, f"{path.name} {exc.problem}", exc.fix or "check the file") from None
    except OSError as exc:
        raise _fail(spec, folder, f"cannot read {path.name} ({exc.strerror})", "check the file") from None
    if len(head) < 8 or head[:4] != b"GGUF":
        raise _fail(spec, folder, f"{path.name} is not a GGUF file (no GGUF magic)", "download it again")
    version = struct.unpack("<I", head[4:8])[0]
    if version not in (2, 3):
        raise _fail(spec, folder, f"{path.name} is GGUF version {version}; versions 2 and 3 are read",
                    "convert it with a current llama.cpp")
    try:
        import gguf
    except ImportError:
        raise _fail(spec, folder, "reading GGUF files needs the gguf package", "pip install gguf") from None
    try:
        reader = gguf.GGUFReader(str(path))
        field = reader.fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode()
    except KeyError:
        raise _fail(spec, folder, f"{path.name} names no general.architecture", "download it again") from None
    except Exception as exc:  # noqa: BLE001 - a damaged or truncated file raises many kinds
        raise _fail(spec, folder, f"{path.name} is damaged ({type(exc).__name__}: {str(exc)[:80]})",
                    "download it again") from None
    model_type = GGUF_ARCHITECTURES.get(arch)
    info = TASKS[task]
    if model_type is None or model_type not in info.model_types:
        raise _fail(spec, folder, f"GGUF architecture {arch!r} is not supported for task {task!r}",
                    f"supported GGUF architectures: {', '.join(sorted(GGUF_ARCHITECTURES))}")
    if not reader.tensors:
        raise _fail(spec, folder, f"{path.name} holds no tensors", "download it again")
    if "tokenizer.ggml.tokens" not in reader.fields:
        raise _fail(spec, folder, f"{path.name} has no tokenizer (tokenizer.ggml.tokens)",
                    "use a GGUF converted with its tokenizer")
    tokens = len(reader.fields["tokenizer.ggml.tokens"].data)
    return ModelFacts(model_type, tokens, tokens, (path.name,))


def gguf_tensor_types(path: Path) -> dict[str, int]:
    """How many tensors of each GGML type (Q4_1, Q8_0, F32...) the file holds."""
    import collections

    import gguf

    return dict(collections.Counter(t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors))
