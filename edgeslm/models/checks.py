"""Check a model folder before loading it, without torch: config, architecture, weights, tokenizer.

Everything here reads headers and small JSON files only, so `edgeslm validate` and the first step of a
build refuse a broken or unsuitable model in milliseconds instead of failing deep inside transformers
(or, worse, building something meaningless: a folder without tokenizer files makes transformers invent
a 5-token tokenizer that turns every word into [UNK]).
"""

from __future__ import annotations

import json
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgeslm.config.tasks import TASKS
from edgeslm.errors import ModelSourceError

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


def read_config(spec: str, folder: Path) -> dict:
    path = folder / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _fail(spec, folder, "no config.json", "point model.source at a folder saved with "
                    "save_pretrained") from None
    except (OSError, ValueError) as exc:
        raise _fail(spec, folder, f"config.json is not valid JSON ({str(exc).splitlines()[0][:80]})",
                    "restore the file from the model's release") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise _fail(spec, folder, "config.json has no model_type", "restore the file from the model's release")
    return data


def check_model_folder(spec: str, folder: Path, task: str, gguf: str | None = None) -> ModelFacts:
    """Refuse what cannot build: unknown architecture for the task, missing or damaged weights, missing
    or mismatched tokenizer. Returns what was found."""
    if gguf is not None:
        return check_gguf(spec, folder / gguf, task)
    config = read_config(spec, folder)
    model_type = config["model_type"]
    info = TASKS[task]
    if model_type not in info.model_types:
        raise _fail(spec, folder, f"architecture {model_type!r} is not supported for task {task!r}",
                    f"supported: {', '.join(sorted(info.model_types))}")
    weights = _check_weights(spec, folder)
    vocab = config.get("vocab_size") if isinstance(config.get("vocab_size"), int) else None
    tok_size = check_tokenizer(spec, folder, vocab)
    return ModelFacts(model_type, vocab, tok_size, weights)


def _check_weights(spec: str, folder: Path) -> tuple[str, ...]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                raise _fail(spec, folder, f"{index_name} is damaged", "restore it from the model's release") from None
            for shard in shards:
                path = folder / shard
                if Path(shard).name != shard or not path.is_file():
                    raise _fail(spec, folder, f"weights shard {shard} named by {index_name} is missing",
                                "download every shard")
                _check_weight_file(spec, folder, path)
            return tuple(shards)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            _check_weight_file(spec, folder, folder / name)
            return (name,)
    raise _fail(spec, folder, "no weights (model.safetensors or pytorch_model.bin)",
                "save the model with save_pretrained, or download its weights")


def _check_weight_file(spec: str, folder: Path, path: Path) -> None:
    if path.suffix == ".safetensors":
        problem = safetensors_problem(path)
    else:
        problem = None if zipfile.is_zipfile(path) or path.stat().st_size > 0 else "empty file"
    if problem:
        raise _fail(spec, folder, f"{path.name} is damaged: {problem}",
                    "download or save the weights again")


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is not whole (header and data size must agree), or None."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return "shorter than its 8-byte header length"
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, 100 << 20):
                return "header length is beyond the file (truncated or not safetensors)"
            header = json.loads(f.read(n).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return "header is not valid JSON (not a safetensors file)"
    if not isinstance(header, dict):
        return "header is not a table of tensors"
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = entry["data_offsets"]
        except (TypeError, KeyError, ValueError):
            return f"tensor {name!r} has no data offsets"
        if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start <= stop):
            return f"tensor {name!r} has bad data offsets"
        end = max(end, stop)
    if 8 + n + end != size:
        return f"{size} bytes where the header describes {8 + n + end} (truncated or padded)"
    return None


def check_tokenizer(spec: str, folder: Path, model_vocab: int | None) -> int | None:
    """The tokenizer's size, when it can be read without transformers; refuse a folder without one and a
    tokenizer that does not fit the model's embedding table."""
    present = [n for n in TOKENIZER_FILES if (folder / n).is_file()]
    if not present:
        raise _fail(spec, folder, f"no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); transformers "
                    "would invent a tiny one that maps every word to [UNK]",
                    "save the model's tokenizer there with tokenizer.save_pretrained(folder)")
    size = tokenizer_size(folder)
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
    tj = folder / "tokenizer.json"
    try:
        if tj.is_file():
            data = json.loads(tj.read_text(encoding="utf-8"))
            vocab = (data.get("model") or {}).get("vocab")
            ids = set()
            if isinstance(vocab, dict):
                ids |= {v for v in vocab.values() if isinstance(v, int)}
            elif isinstance(vocab, list):
                ids |= set(range(len(vocab)))
            ids |= {t.get("id") for t in data.get("added_tokens") or [] if isinstance(t, dict)}
            ids.discard(None)
            return (max(ids) + 1) if ids else None
        vt = folder / "vocab.txt"
        if vt.is_file():
            return sum(1 for _ in vt.open(encoding="utf-8", errors="replace"))
        vj = folder / "vocab.json"
        if vj.is_file():
            vocab = json.loads(vj.read_text(encoding="utf-8"))
            return (max(vocab.values()) + 1) if isinstance(vocab, dict) and vocab else None
    except (OSError, ValueError, TypeError):
        return None
    return None


# GGUF `general.architecture` -> transformers model_type (llama.cpp writes Mistral models as "llama")
GGUF_ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2", "phi3": "phi3", "gemma2": "gemma2"}


def check_gguf(spec: str, path: Path, task: str) -> ModelFacts:
    """A GGUF file: magic and version, architecture for the task, tensors and tokenizer present."""
    folder = path.parent
    try:
        with open(path, "rb") as f:
            head = f.read(8)
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
