"""Bring your own model file: an encoder's .onnx or .pte made elsewhere (Optimum, ExecuTorch's own scripts, a
colleague) becomes a build folder like edgeslm's own, so `deploy`, `profile` and `report` take it.

What cannot be checked is said, in the manifest and on the terminal: with no PyTorch model behind the file,
export fidelity is not known. The reference outputs are this file's own, run in its runtime on this host, so the
check on a device answers "does the device compute what this host computed with the same file" (a broken
runtime, a wrong architecture's kernels, a damaged copy), not "is the file a faithful export".
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from edgeslm import __version__
from edgeslm.artifacts.cache import tool_versions
from edgeslm.artifacts.manifest import Artifact, Manifest, Verification, file_entries, plain_name, write_manifest
from edgeslm.contract import reference as ref
from edgeslm.contract.parity import compare_outputs
from edgeslm.contract.tasks import TASKS
from edgeslm.errors import UserError
from edgeslm.inputs import InputError, check_regular

FORMATS = {".onnx": ("onnx", "model.onnx", "onnxruntime"), ".pte": ("executorch", "model.pte", "executorch")}
KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "merges.txt",
                   "vocab.json", "spiece.model", "sentencepiece.bpe.model", "added_tokens.json")
NOT_CHECKED = ("imported file: export fidelity is not known (no PyTorch model behind it); the reference outputs "
               "are this file's own on the build host, so a device's check shows it computes what this host "
               "computed with the same file")


def import_file(file: Path, task: str, tokenizer: Path, name: str, target, out: Path, min_seq_len: int = 4,
                max_seq_len: int = 128, inputs: tuple[str, ...] | None = None, min_cosine: float = 0.999,
                log=lambda line: None) -> Path:
    """The build folder <out>/<name>/<target> for `file` (see the module docstring); returns it."""
    t0 = time.perf_counter()
    file, tokenizer = Path(file), Path(tokenizer)
    suffix = file.suffix.lower()
    if suffix not in FORMATS:
        raise UserError(f"{file}: edgeslm imports .onnx and .pte files (got {suffix or 'no suffix'})")
    try:
        check_regular(file, "model")
    except InputError as exc:
        raise UserError(f"{exc}; give the model file itself") from None
    if task not in TASKS or TASKS[task].device_loop != "encoders":
        encoders = ", ".join(t for t, info in TASKS.items() if info.device_loop == "encoders")
        raise UserError(f"--task {task}: import takes encoder files ({encoders}); a decoder made elsewhere "
                        "cannot be checked without its KV-cache layout")
    try:
        plain_name(name, "--name")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if not 1 <= min_seq_len <= max_seq_len:
        raise UserError(f"--min-seq-len {min_seq_len} / --max-seq-len {max_seq_len}: need 1 <= min <= max")
    fmt, dest_name, runtime_name = FORMATS[suffix]
    tok, tok_files = _tokenizer(tokenizer)
    names, out_spec = _onnx_io(file) if fmt == "onnx" else _pte_io(file, inputs)
    texts = _texts()
    samples = []
    for text in texts:
        enc = tok(text, truncation=True, max_length=max_seq_len, return_tensors="np")
        n = max(min_seq_len, int(enc["input_ids"].shape[1]))
        sample = {}
        for key in names:
            arr = np.asarray(enc[key] if key in enc else np.zeros_like(enc["input_ids"]), dtype=np.int64)
            pad = n - arr.shape[1]
            fill = 0 if key != "input_ids" else int(getattr(tok, "pad_token_id", 0) or 0)
            sample[key] = np.pad(arr, ((0, 0), (0, pad)), constant_values=fill) if pad else arr
        samples.append(sample)

    from edgeslm.runner.runtimes import open_runtime

    log(f"running {file.name} in {runtime_name} on this host on {len(samples)} texts (the reference outputs)")
    session = open_runtime(fmt).encoder(str(file), 0, list(names))
    outs = []
    for s in samples:
        try:
            outs.append(np.asarray(session(s)))
        except Exception as exc:  # noqa: BLE001 - the file is input: say what it did with a real input
            raise UserError(f"{file}: {runtime_name} could not run it on a tokenized text of "
                            f"{s['input_ids'].shape[1]} tokens ({type(exc).__name__}: {str(exc)[:200]}); check "
                            f"--task and the inputs it takes ({', '.join(names)}); a program made for one length "
                            "takes --min-seq-len and --max-seq-len both set to it") from None
    if not all(np.isfinite(o).all() for o in outs):
        raise UserError(f"{file}: gives non-finite outputs on the bundled texts; it is broken or needs other inputs")
    masks = [s["attention_mask"] if "attention_mask" in s else np.ones_like(s["input_ids"]) for s in samples]
    compare_outputs(task, outs, outs, masks, {})  # the device's comparison can read these outputs (shapes, rows)

    folder = out / name / target.name
    work = folder.with_name(f".{folder.name}.build-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    (work / "tokenizer").mkdir(parents=True)
    shutil.copyfile(file, work / dest_name)
    for f in tok_files:
        shutil.copyfile(f, work / "tokenizer" / f.name)
    arrays = {}
    for i, (s, o) in enumerate(zip(samples, outs)):
        for key, arr in s.items():
            arrays[ref.sample_input(i, key)] = arr
        arrays[ref.eager_output(i, out_spec["name"])] = o
        arrays[ref.host_output(fmt, i, out_spec["name"])] = o
    np.savez(work / ref.FILE, **arrays)

    file_sha = hashlib.sha256(file.read_bytes()).hexdigest()
    imported = {"file": str(file), "sha256": file_sha, "task": task, "tokenizer": str(tokenizer),
                "min_seq_len": min_seq_len, "max_seq_len": max_seq_len, "inputs": list(names)}
    recipe_sha = hashlib.sha256(json.dumps(imported, sort_keys=True).encode()).hexdigest()
    key = hashlib.sha256(json.dumps({"imported": imported, "tokenizer": [f.name for f in tok_files],
                                     "target": target.name}, sort_keys=True).encode()).hexdigest()
    verification = Verification(
        passed=True, samples=len(samples), seq_lens=[int(s["input_ids"].shape[1]) for s in samples],
        metrics=[],
        against="this file on the build host (imported: no PyTorch model to compare with)", runtime=runtime_name,
        how=NOT_CHECKED)
    artifact = Artifact(name=fmt, format=fmt, file=dest_name, runtime=runtime_name, precision=_precision(file, fmt),
                        export={"imported_from": str(file), "input_order": list(names), "dynamic_seq": True},
                        verification=verification)
    manifest = Manifest(
        edgeslm_version=__version__, cache_key=key, status="ok",
        recipe={"name": name, "path": None, "sha256": recipe_sha, "content": {"imported": imported}},
        target=target.model_dump(mode="json"),
        model={"source": str(file), "kind": "imported", "revision": None, "files": {file.name: file_sha}},
        task=task, inputs=[{"name": n, "dtype": "int64", "axes": ["batch", "sequence"]} for n in names],
        outputs=[out_spec], shapes={"min_seq_len": min_seq_len, "max_seq_len": max_seq_len, "batch_size": 1},
        artifacts=[artifact], files=[],
        reference={"file": ref.FILE, "samples": len(samples), "texts": texts, "keys": ref.ENCODER_KEYS,
                   "thresholds": {"min_cosine": min_cosine}, "eval": None, "imported": True},
        tools=tool_versions(),
        build={"started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "seconds": round(time.perf_counter() - t0, 3), "steps": [], "warnings": [NOT_CHECKED],
               "host": {"machine": platform.machine(), "system": platform.system(),
                        "python": platform.python_version(), "cpus": os.cpu_count()}},
    )
    manifest.files = file_entries(work, {"tokenizer/": "tokenizer", ref.FILE: "reference", "model.": "model"})
    write_manifest(work, manifest)
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        os.replace(folder, old)
        os.replace(work, folder)
        keep = old / "profiles"
        if keep.is_dir():
            shutil.move(str(keep), folder / "profiles")
        shutil.rmtree(old, ignore_errors=True)
    else:
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.replace(work, folder)
    return folder


def _onnx_io(file: Path) -> tuple[tuple[str, ...], dict]:
    import onnx

    try:
        model = onnx.load(str(file), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - a damaged file is input
        raise UserError(f"{file}: not a readable ONNX model ({type(exc).__name__}: {str(exc)[:160]})") from None
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise UserError(f"{file}: keeps its weights in a separate data file; save it as one file "
                        "(onnx.save(model, path, save_as_external_data=False)) and import that")
    inits = {i.name for i in model.graph.initializer}
    names = tuple(i.name for i in model.graph.input if i.name not in inits)
    for i in model.graph.input:
        if i.name in inits:
            continue
        if i.name not in KNOWN_INPUTS:
            raise UserError(f"{file}: input {i.name!r} is not one edgeslm can feed ({', '.join(KNOWN_INPUTS)}); "
                            "export the model with the tokenizer's input names")
        if i.type.tensor_type.elem_type != onnx.TensorProto.INT64:
            raise UserError(f"{file}: input {i.name!r} is not int64; export it with int64 token ids")
    if "input_ids" not in names:
        raise UserError(f"{file}: has no input_ids input (inputs: {', '.join(names)})")
    first = model.graph.output[0]
    dims = first.type.tensor_type.shape.dim
    axes = [d.dim_param or (str(d.dim_value) if d.dim_value else f"d{k}") for k, d in enumerate(dims)]
    return names, {"name": first.name, "dtype": "float32", "axes": axes}


def _pte_io(file: Path, inputs: tuple[str, ...] | None) -> tuple[tuple[str, ...], dict]:
    names = tuple(inputs or ("input_ids", "attention_mask"))
    bad = [n for n in names if n not in KNOWN_INPUTS]
    if bad or "input_ids" not in names:
        raise UserError(f"--inputs {','.join(names)}: give the program's inputs in order, from "
                        f"{', '.join(KNOWN_INPUTS)} (input_ids among them)")
    return names, {"name": "output", "dtype": "float32", "axes": ["batch", "..."]}


def _tokenizer(folder: Path):
    if not folder.is_dir():
        raise UserError(f"--tokenizer {folder}: not a folder; give the folder with tokenizer.json (or vocab.txt) "
                        "and tokenizer_config.json the model was trained with")
    files = []
    for n in TOKENIZER_FILES:
        p = folder / n
        if p.is_symlink() and not p.resolve().is_relative_to(folder.resolve()):
            raise UserError(f"--tokenizer {folder}: {n} links out of the folder; copy the file in")
        if p.is_file():
            files.append(p)
    if not files:
        raise UserError(f"--tokenizer {folder}: holds none of {', '.join(TOKENIZER_FILES[:4])}")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder)), files
    except Exception as exc:  # noqa: BLE001 - the folder is input
        raise UserError(f"--tokenizer {folder}: cannot be loaded ({type(exc).__name__}: {str(exc)[:160]})") from None


def _texts() -> list[str]:
    from edgeslm.texts import builtin_texts

    short, long = builtin_texts("verify_texts"), builtin_texts("verify_long_texts")
    return short + long + [" ".join(long)]


def _precision(file: Path, fmt: str) -> str:
    if fmt != "onnx":
        return "unknown"
    import onnx

    ops = {n.op_type for n in onnx.load(str(file), load_external_data=False).graph.node}
    if ops & {"MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"}:
        return "int8-dynamic"
    if ops & {"QLinearMatMul", "QuantizeLinear"}:
        return "int8-static"
    if ops & {"MatMulNBits"}:
        return "int4"
    return "fp32"
