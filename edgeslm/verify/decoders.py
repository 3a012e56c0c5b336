"""Judging a decoder artifact on the build host: teacher-forced next-token logits on the held text against
eager PyTorch (export fidelity: the model the file was made from; compression loss: the model before
quantization), and greedy continuations of the recipe's prompts (reported, never gated). Every format's
exporter calls `judge` with its own step(tokens, start), so the formats are judged alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeslm.artifacts.manifest import Metric, Verification
from edgeslm.contract.decoding import greedy, teacher_forced
from edgeslm.contract.parity import common_prefix, compare_next_tokens

CONTINUATION_TOKENS = 16


def hf_step(model):
    """step(tokens, start) over transformers' own model and DynamicCache (start 0 begins a new cache)."""
    import torch
    from transformers import DynamicCache

    state = {}

    def step(tokens, start):
        if start == 0:
            state["cache"] = DynamicCache(config=model.config)
        with torch.no_grad():
            out = model(input_ids=torch.tensor([tokens]), past_key_values=state["cache"], use_cache=True)
        return out.logits[0, -1].float().numpy()

    return step


@dataclass
class Facts:
    """What every artifact of a decoder build is checked against."""
    ids: list
    first: int
    targets: np.ndarray
    original: np.ndarray  # PyTorch before compression: logits predicting ids[first:]
    prompts: list
    reference_tokens: list
    stops: list
    fid_limits: dict
    comp_limits: dict


def verification(result: dict, runtime: str, against: str, n: int) -> Verification:
    metrics = [Metric(name=m["name"], value=m["value"], threshold=m["threshold"], kind=m["kind"], passed=m["passed"])
               for m in result["metrics"]]
    return Verification(passed=result["passed"], samples=1, seq_lens=[n], metrics=metrics, runtime=runtime,
                        against=against)


def judge(facts: Facts, g, eager: np.ndarray, step, runtime: str, against: str):
    """Teacher-forced logits of `step`; fidelity (vs `eager`) and compression loss (vs the original);
    greedy continuations of the recipe's prompts."""
    actual = teacher_forced(step, facts.ids, facts.first, g.max_prompt)
    fidelity = verification(compare_next_tokens(eager, actual, facts.targets, facts.fid_limits), runtime,
                             against, len(facts.ids))
    loss = verification(compare_next_tokens(facts.original, actual, facts.targets, facts.comp_limits), runtime,
                         "eager PyTorch before compression (transformers' KV cache, same calls)", len(facts.ids))
    fidelity.passed = fidelity.passed and loss.passed
    continuations = []
    for p, ref in zip(facts.prompts, facts.reference_tokens):
        got = greedy(step, p, CONTINUATION_TOKENS, g.max_prompt, facts.stops, g.max_context)
        continuations.append({"prompt_tokens": len(p), "reference": ref, "artifact": got,
                              "first_token_agrees": bool(got[:1] == ref[:1]), "common_prefix": common_prefix(got, ref)})
    return actual, fidelity, loss, continuations
