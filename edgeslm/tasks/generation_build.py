"""text-generation's part of the build loop: a decoder with a KV cache.

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

import numpy as np

from edgeslm.errors import ConfigError
from edgeslm.artifacts.manifest import Artifact, TensorSpec
from edgeslm.contract import reference as ref
from edgeslm.contract.decoding import teacher_forced
from edgeslm.contract.parity import log_softmax
from edgeslm.tasks.base import Exported, ManifestBody, TaskBuild
from edgeslm.models.causal_lm import prompt_ids

TEXT_TOKENS = 160  # tokens of held text for teacher forcing (first half as the prompt)

FLOAT_LIMITS = {"max_kl": 1e-4, "min_top1_agreement": 0.99, "min_top5_agreement": 1.0,
                "max_perplexity_increase": 0.001}
# fidelity of a quantized artifact to its own eager model (same integer grid; kernels round differently:
# SmolLM2-135M 8da4w, XNNPACK vs torchao eager, KL mean 0.028, top-1 0.93 on 128 positions)
QUANT_FIDELITY = {"max_kl": 0.05, "min_top1_agreement": 0.9, "min_top5_agreement": 0.95,
                  "max_perplexity_increase": None}
COMPRESSION = {"8da4w": 0.35, "8da8w": 0.05, "int8-weight-only": 0.05}


def limits(recipe) -> tuple[dict, dict]:
    """(fidelity limits, compression limits) from [verify], else the defaults for the weights."""
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


def held_text_ids(tokenizer, n: int) -> list[int]:
    from edgeslm.texts import builtin_texts

    text = " ".join(builtin_texts("verify_long_texts"))
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    while len(ids) < n:
        ids = ids + ids
    return [int(i) for i in ids[:n]]


def greedy_hf(model, prompt: list, n: int, stops: list) -> list:
    """Greedy continuation by transformers' own generate (the eager reference)."""
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False,
                             eos_token_id=stops or None, pad_token_id=(stops or [0])[0])
    return [int(t) for t in out[0, len(prompt):]]


class GenerationBuild(TaskBuild):
    def load(self):
        from edgeslm.models.causal_lm import LoadedDecoder, load_causal_lm, stop_ids
        from edgeslm.passes import PassContext
        from edgeslm.verify.decoders import CONTINUATION_TOKENS

        b, recipe = self.b, self.b.recipe
        g = self.g = recipe.generation
        with b.log.step("load model"):
            tokenizer, model = load_causal_lm(b.source, recipe.model.trust_remote_code)
            tokenizer.save_pretrained(str(b.work / "tokenizer"))
        from edgeslm.formats import format_unit

        for fmt in recipe.export.formats:  # before any export: a format that cannot take this model says so now
            problem = format_unit(fmt).decoder_problem(model.config)
            if problem:
                raise ConfigError(b.file, "export.formats", f"{fmt}: {problem}")
        self.model = LoadedDecoder(hf=model, tokenizer=tokenizer, source=b.source, max_context=g.max_context,
                                   work=b.work)
        n_text = min(TEXT_TOKENS, g.max_context)
        self.ids = held_text_ids(tokenizer, n_text)
        self.first = min(n_text // 2, g.max_prompt)
        self.stops = stop_ids(tokenizer, model)
        self.prompts = [prompt_ids(tokenizer, p, g.chat_template)[: g.max_context - CONTINUATION_TOKENS - 1]
                        for p in g.prompts]

        def calibration():
            from edgeslm.passes.gptq import calibration_chunks
            from edgeslm.texts import calibration_texts

            return calibration_chunks(tokenizer, calibration_texts(b.loaded, recipe.quantize), g.max_context)

        return PassContext(model=self.model, recipe=recipe, datasets=lambda name: None, calibration=calibration,
                           step=b.log.step, progress=getattr(b.log, "progress", lambda m: None))

    def probe(self, step) -> np.ndarray:
        """Teacher-forced logits of `step` on the held text (the rows predicting ids[first:])."""
        return teacher_forced(step, self.ids, self.first, self.g.max_prompt)

    def before_compression(self, pctx) -> None:
        from edgeslm.verify.decoders import CONTINUATION_TOKENS, Facts, hf_step

        model = self.model.hf
        with self.b.log.step("reference logits (eager PyTorch)"):
            # teacher-forced through transformers' own KV cache, as its generate runs: the same calls as the
            # artifacts (a single forward pass differs where the model changes with the length: Phi-3's long
            # RoPE switches factors once the sequence outgrows original_max_position_embeddings)
            original = self.probe(hf_step(model))
            reference_tokens = [greedy_hf(model, p, CONTINUATION_TOKENS, self.stops) for p in self.prompts]
        self.fid_limits, self.comp_limits = limits(self.b.recipe)
        self.facts = Facts(self.ids, self.first, np.asarray(self.ids[self.first:]), original, self.prompts,
                           reference_tokens, self.stops, self.fid_limits, self.comp_limits)
        self.actual: dict = {}

    def export_order(self) -> list[str]:
        from edgeslm.formats import format_unit

        # a runtime whose export rewires the model (ExecuTorch's attention, weights quantized in place) goes last
        return sorted(self.b.recipe.export.formats, key=lambda f: format_unit(f).rewires_model)

    def export(self, fmt: str, pctx) -> Exported:
        from edgeslm.formats import format_unit

        b = self.b
        return format_unit(fmt).export_decoder(b.work, self.model.hf, self.model.tokenizer, self.g,
                                               pctx.plan.quantization, b.log, b.log_file, self.probe)

    def judge(self, fmt: str, exported: Exported, pctx) -> Artifact:
        from edgeslm.verify.decoders import judge

        result = exported.result
        eager = self.facts.original if exported.eager is None else exported.eager
        with self.b.log.step(f"{fmt}: verify"), exported.quiet():
            step = exported.session()
            try:
                actual, fidelity, loss, continuations = judge(self.facts, self.g, eager, step, result.runtime,
                                                              exported.against)
                # the runtime's peak memory while it ran the held text (a process of its own: the file alone), for
                # the device fit check at deploy
                peak = getattr(step, "peak_rss_kb", lambda: None)()
            finally:
                getattr(step, "close", lambda: None)()  # a session in a process of its own ends with it
            del step
        if peak:
            result.export["verify_peak_rss_kb"] = peak
        self.actual[fmt] = actual
        if exported.facts:  # what the adapter did of the quantize pass's plan
            entry = next((f for f in pctx.facts if f.get("type") == "quantize"), None)
            if entry is not None:
                entry.update(exported.facts)
        return Artifact(name=fmt, format=fmt, file=result.file, runtime=result.runtime, precision=result.precision,
                        quantization=result.quantization, export=result.export, verification=fidelity,
                        compression=loss, extras={"continuations": continuations})

    def finish(self, artifacts: list, pctx) -> ManifestBody:
        b, g, facts = self.b, self.g, self.facts
        original, targets, ids = facts.original, facts.targets, self.ids
        order = np.argsort(-original, axis=1)[:, :ref.TOP_K_STORED]
        lsm = log_softmax(original)
        ref_file = {ref.TEXT_IDS: np.asarray(ids, dtype=np.int64), ref.TEXT_FIRST: np.asarray(self.first),
                    ref.ORIGINAL_TOP_IDS: order.astype(np.int32),
                    ref.ORIGINAL_TOP_LOGITS: np.take_along_axis(original, order, axis=1).astype(np.float32),
                    ref.ORIGINAL_LOGSUMEXP: (original[:, 0] - lsm[:, 0]).astype(np.float32),
                    ref.ORIGINAL_TARGET_LOGPROB: lsm[np.arange(len(targets)), targets].astype(np.float32),
                    **{ref.artifact_top_ids(a.name): np.argsort(-self.actual[a.format], axis=1)[:, :ref.TOP_K_STORED]
                       .astype(np.int32) for a in artifacts}}
        for i, p in enumerate(self.prompts):
            ref_file[ref.prompt(i)] = np.asarray(p, dtype=np.int64)
            ref_file[ref.prompt_reference(i)] = np.asarray(facts.reference_tokens[i], dtype=np.int64)
        np.savez_compressed(b.work / ref.FILE, **ref_file)
        model = self.model.hf
        return ManifestBody(
            model={"model_type": model.config.model_type, "parameters": int(sum(p.numel() for p in model.parameters())),
                   "vocab_size": model.config.get_text_config().vocab_size, "stop_token_ids": self.stops,
                   **gguf_facts(b.source)},
            inputs=[TensorSpec(name="tokens", dtype="int64", axes=["batch", "sequence"]),
                    TensorSpec(name="start_pos", dtype="int64", axes=["one"])],
            outputs=[TensorSpec(name="logits", dtype="float32", axes=["batch", "vocab"])],
            shapes={"max_context": g.max_context, "max_prompt": g.max_prompt, "batch_size": 1},
            reference={"file": ref.FILE, "samples": 1, "text_tokens": len(ids), "prompt_tokens": self.first,
                       "keys": ref.DECODER_KEYS,
                       "thresholds": {"fidelity": self.fid_limits, "compression": self.comp_limits}},
            warnings=self.model.notes + pctx.warnings)


def gguf_facts(source) -> dict:
    if not source.gguf:
        return {}
    from edgeslm.models.checks import gguf_tensor_types

    return {"gguf": {"file": source.gguf, "tensor_types": gguf_tensor_types(source.folder / source.gguf),
                     "note": "dequantized to float by transformers on load (the reference); with "
                             "quantize.gguf_grid = 'keep' both formats carry the file's integer grid where it "
                             "fits (see each artifact's quantization)"}}
