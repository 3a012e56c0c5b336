"""The build of a text-generation recipe: load -> reference logits -> quantize -> export (.pte with a KV
cache) -> verify -> manifest.

Verification is teacher-forced on a held text: the first tokens go in as a prompt (the prefill path),
then every true token is fed back one at a time (the decode path), and the logits predicting each next
token are compared with PyTorch's. Two questions, as for encoders:
- export fidelity (`verification`, gated): the artifact against the eager model it was exported from
  (after quantization), run through the same calls;
- compression loss (`compression`, gated on perplexity increase and top-5 agreement): the artifact
  against the model before quantization, teacher-forced through transformers' own KV cache (as its
  generate runs; a single forward pass differs where the model depends on the length: Phi-3's long RoPE).
Greedy continuations of the recipe's prompts are reported (first token, common prefix), never gated:
a 4-bit grid legitimately flips near-ties and the texts then diverge.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

from edgeslm import __version__
from edgeslm.artifacts.manifest import Manifest, TensorSpec, file_entries, write_manifest
from edgeslm.config.recipe import LoadedRecipe, path_for_display
from edgeslm.config.target import Target
from edgeslm.contract import reference as ref
from edgeslm.contract.decoding import teacher_forced
from edgeslm.contract.parity import log_softmax
from edgeslm.verify.decoders import CONTINUATION_TOKENS, Facts, hf_step
from edgeslm.errors import ConfigError, ModelSourceError
from edgeslm.models.sources import ResolvedSource
from edgeslm.formats import format_unit
from edgeslm.tasks.generation import prompt_ids
from edgeslm.texts import calibration_texts

TEXT_TOKENS = 160  # tokens of held text for teacher forcing (first half as the prompt)

FLOAT_LIMITS = {"max_kl": 1e-4, "min_top1_agreement": 0.99, "min_top5_agreement": 1.0,
                "max_perplexity_increase": 0.001}
# fidelity of a quantized artifact to its own eager model (same integer grid; kernels round differently:
# SmolLM2-135M 8da4w, XNNPACK vs torchao eager, KL mean 0.028, top-1 0.93 on 128 positions)
QUANT_FIDELITY = {"max_kl": 0.05, "min_top1_agreement": 0.9, "min_top5_agreement": 0.95,
                  "max_perplexity_increase": None}
COMPRESSION = {"8da4w": 0.35, "8da8w": 0.05, "int8-weight-only": 0.05}


GPTQ_ENOUGH_TOKENS = 8192  # fewer calibration tokens get a warning in the build


def limits(loaded: LoadedRecipe) -> tuple[dict, dict]:
    """(fidelity limits, compression limits) from [verify], else the defaults for the weights."""
    recipe = loaded.recipe
    v, q = recipe.verify, recipe.quantize
    fid = dict(FLOAT_LIMITS if q is None else QUANT_FIDELITY)
    comp = {"max_kl": None, "min_top1_agreement": None,
            "min_top5_agreement": 1.0 if q is None else 0.9,
            "max_perplexity_increase": 0.001 if q is None else COMPRESSION[q.method]}
    if v.max_kl is not None:
        fid["max_kl"] = v.max_kl
    if v.min_top1_agreement is not None:
        fid["min_top1_agreement"] = v.min_top1_agreement
    if v.top1_margin is not None:
        fid["top1_margin"] = comp["top1_margin"] = v.top1_margin
    if v.min_top5_agreement is not None:
        comp["min_top5_agreement"] = v.min_top5_agreement
    if v.max_perplexity_increase is not None:
        comp["max_perplexity_increase"] = v.max_perplexity_increase
    return fid, comp


def load_causal_lm(source: ResolvedSource, trust_remote_code: bool):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra = {"gguf_file": source.gguf} if source.gguf else {}  # transformers dequantizes GGUF tensors
    try:
        tok = AutoTokenizer.from_pretrained(str(source.folder), trust_remote_code=trust_remote_code, **extra)
        model = AutoModelForCausalLM.from_pretrained(str(source.folder), dtype=torch.float32,
                                                     trust_remote_code=trust_remote_code, **extra)
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"model source {source.spec!r} ({source.folder}): cannot load a causal LM "
                               f"({str(exc).splitlines()[0][:160]})") from None
    if source.gguf:  # loaded into float: nothing of the GGUF quantizer stays attached
        model.hf_quantizer, model.is_quantized = None, False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return tok, model.eval()


def held_text_ids(tokenizer, n: int) -> list[int]:
    from edgeslm.texts import builtin_texts

    text = " ".join(builtin_texts("verify_long_texts"))
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    while len(ids) < n:
        ids = ids + ids
    return [int(i) for i in ids[:n]]


def stop_ids(tokenizer, model) -> list[int]:
    out = set()
    for src in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(src, int):
            out.add(src)
        elif isinstance(src, (list, tuple)):
            out.update(int(x) for x in src)
    return sorted(out)


def build_generation_into(work: Path, loaded: LoadedRecipe, target: Target, source: ResolvedSource,
                          model_files: dict, tools: dict, key: str, log, started: str, t0: float,
                          force: bool = False) -> Manifest:
    from edgeslm.stages import recipe_facts, source_facts
    from edgeslm.formats.executorch.decoder import sliding_window_problem

    recipe = loaded.recipe
    file = str(path_for_display(loaded.path))
    g, q = recipe.generation, recipe.quantize
    with log.step("load model"):
        tokenizer, model = load_causal_lm(source, recipe.model.trust_remote_code)
        tokenizer.save_pretrained(str(work / "tokenizer"))
    problem = sliding_window_problem(model.config, g.max_context)
    if problem:
        raise ConfigError(file, "generation.max_context", problem)
    vocab = model.config.get_text_config().vocab_size
    n_text = min(TEXT_TOKENS, g.max_context)
    ids = held_text_ids(tokenizer, n_text)
    first = min(n_text // 2, g.max_prompt)
    stops = stop_ids(tokenizer, model)
    prompts = [prompt_ids(tokenizer, p, g.chat_template)[: g.max_context - CONTINUATION_TOKENS - 1]
               for p in g.prompts]

    with log.step("reference logits (eager PyTorch)"):
        # teacher-forced through transformers' own KV cache, as its generate runs: the same calls as the
        # artifacts (a single forward pass differs where the model changes with the length: Phi-3's long
        # RoPE switches factors once the sequence outgrows original_max_position_embeddings)
        original = teacher_forced(hf_step(model), ids, first, g.max_prompt)  # rows predicting ids[first:]
        reference_tokens = [greedy_hf(model, p, CONTINUATION_TOKENS, stops) for p in prompts]

    fid_limits, comp_limits = limits(loaded)
    targets = np.asarray(ids[first:])
    facts = Facts(ids, first, targets, original, prompts, reference_tokens, stops, fid_limits, comp_limits)
    # an integer grid both formats carry as it is, chosen once before anything is rounded: GPTQ's, or the
    # GGUF source's own
    carried, warnings = None, []
    if q is not None and q.method == "8da4w" and q.algorithm == "gptq":
        from edgeslm.generation.gptq import calibration_chunks, gptq_grids

        chunks = calibration_chunks(tokenizer, calibration_texts(loaded, q), g.max_context)
        n_cal = sum(map(len, chunks))
        with log.step(f"GPTQ (neural-compressor) on {n_cal} calibration tokens"):
            carried = gptq_grids(model, chunks, work)
        if n_cal < GPTQ_ENOUGH_TOKENS:
            warnings.append(f"GPTQ calibrated on {n_cal} tokens only (SmolLM2-135M: +72% perplexity on 819 tokens, "
                            f"+43% on 32k); give [passes.calibration] source = a folder of text like the task's")
    elif q is not None and q.method == "8da4w" and source.gguf and q.gguf_grid == "keep":
        from edgeslm.formats.gguf_grid import BLOCK, module_grids, not_carried_warning

        with log.step("read the GGUF's integer grid"):
            carried = module_grids(source.folder / source.gguf, model)
        group = BLOCK if carried[0] else q.group_size  # the .pte's int4 groups follow a carried grid's blocks
        scheme = (f"8da4w (int4 weights in groups of {group}, int8 activations"
                  + ("; the embedding table int8 per row" if q.embeddings else "") + ")")
        warning = not_carried_warning(carried[1], scheme)
        if warning:
            warnings.append(warning)
    built, qfacts = {}, None
    log_file = work.parent / f"{target.name}.onnx-builder.log"
    # a runtime whose export rewires the model (ExecuTorch's attention, weights quantized in place) goes last
    for fmt in sorted(recipe.export.formats, key=lambda f: format_unit(f).rewires_model):
        artifact, actual, pass_facts = format_unit(fmt).build_decoder(work, model, tokenizer, g, q, facts, log,
                                                                        carried, log_file)
        built[fmt] = (artifact, actual)
        qfacts = pass_facts or qfacts
    artifacts = [built[f][0] for f in recipe.export.formats]
    passed = all(a.verification.passed for a in artifacts)

    order = np.argsort(-original, axis=1)[:, :ref.TOP_K_STORED]
    lsm = log_softmax(original)
    ref_file = {ref.TEXT_IDS: np.asarray(ids, dtype=np.int64), ref.TEXT_FIRST: np.asarray(first),
                ref.ORIGINAL_TOP_IDS: order.astype(np.int32),
                ref.ORIGINAL_TOP_LOGITS: np.take_along_axis(original, order, axis=1).astype(np.float32),
                ref.ORIGINAL_LOGSUMEXP: (original[:, 0] - lsm[:, 0]).astype(np.float32),
                ref.ORIGINAL_TARGET_LOGPROB: lsm[np.arange(len(targets)), targets].astype(np.float32),
                **{ref.artifact_top_ids(a.name): np.argsort(-built[a.format][1], axis=1)[:, :ref.TOP_K_STORED]
                   .astype(np.int32) for a in artifacts}}
    for i, p in enumerate(prompts):
        ref_file[ref.prompt(i)] = np.asarray(p, dtype=np.int64)
        ref_file[ref.prompt_reference(i)] = np.asarray(reference_tokens[i], dtype=np.int64)
    np.savez_compressed(work / ref.FILE, **ref_file)

    status = "ok" if passed else "verification-failed"
    manifest = Manifest(
        edgeslm_version=__version__, cache_key=key, status=status,
        recipe=recipe_facts(loaded), target=target.model_dump(mode="json"),
        model={**source_facts(source, model_files), "model_type": model.config.model_type,
               "parameters": int(sum(p.numel() for p in model.parameters())), "vocab_size": vocab,
               "stop_token_ids": stops, **_gguf_facts(source)},
        task="text-generation",
        inputs=[TensorSpec(name="tokens", dtype="int64", axes=["batch", "sequence"]),
                TensorSpec(name="start_pos", dtype="int64", axes=["one"])],
        outputs=[TensorSpec(name="logits", dtype="float32", axes=["batch", "vocab"])],
        shapes={"max_context": g.max_context, "max_prompt": g.max_prompt, "batch_size": 1},
        artifacts=artifacts, files=[],
        reference={"file": ref.FILE, "samples": 1, "text_tokens": len(ids), "prompt_tokens": first,
                   "keys": ref.DECODER_KEYS,
                   "thresholds": {"fidelity": fid_limits, "compression": comp_limits}},
        tools=tools,
        build={"started_at": started, "seconds": round(time.perf_counter() - t0, 3), "steps": log.steps,
               "warnings": warnings,
               "host": {"machine": platform.machine(), "system": platform.system(),
                        "python": platform.python_version(), "cpus": os.cpu_count()}},
        passes=[{"type": "quantize", "method": q.method, "group_size": q.group_size, "algorithm": q.algorithm,
                 **(qfacts or {})}]
        if q is not None else [],
    )
    manifest.files = file_entries(work, {"tokenizer/": "tokenizer", ref.FILE: "reference", "model.": "model"})
    write_manifest(work, manifest)
    return manifest


def _gguf_facts(source: ResolvedSource) -> dict:
    if not source.gguf:
        return {}
    from edgeslm.models.checks import gguf_tensor_types

    return {"gguf": {"file": source.gguf, "tensor_types": gguf_tensor_types(source.folder / source.gguf),
                     "note": "dequantized to float by transformers on load (the reference); with "
                             "quantize.gguf_grid = 'keep' both formats carry the file's integer grid where it "
                             "fits (see each artifact's quantization)"}}


def greedy_hf(model, prompt: list, n: int, stops: list) -> list:
    """Greedy continuation by transformers' own generate (the eager reference)."""
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False,
                             eos_token_id=stops or None, pad_token_id=(stops or [0])[0])
    return [int(t) for t in out[0, len(prompt):]]
