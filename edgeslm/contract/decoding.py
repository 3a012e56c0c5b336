"""Decoding loops over one model call, shared by the build host and the device runner (numpy only).

`step(tokens, start)` runs tokens (a list of ints) at cache positions start.. and returns the logits
after the last of them (a 1-D array over the vocabulary). A prompt longer than the program's largest
call is fed in chunks of `chunk` tokens.
"""

from __future__ import annotations


def prefill(step, tokens: list, start: int, chunk: int):
    """Feed `tokens` from position `start` in calls of at most `chunk` tokens; the last call's logits."""
    logits = None
    for i in range(0, len(tokens), chunk):
        logits = step(tokens[i:i + chunk], start + i)
    return logits


def teacher_forced(step, ids: list, first: int, chunk: int):
    """Logits predicting ids[first:], one row each: the first `first` tokens as a prompt, then each true
    token fed back one at a time (the prefill and the decode paths both run). Shape [len(ids) - first, V]."""
    import numpy as np

    rows = [np.asarray(prefill(step, ids[:first], 0, chunk), dtype=np.float32).reshape(-1)]
    for pos in range(first, len(ids) - 1):
        rows.append(np.asarray(step([ids[pos]], pos), dtype=np.float32).reshape(-1))
    return np.stack(rows)


def sampler(temperature: float, top_k: int, top_p: float, seed: int):
    """pick(logits) -> token id: softmax at `temperature` over the `top_k` most likely tokens (0 = all),
    cut to the smallest set whose probability reaches `top_p`, drawn with a seeded generator (the same seed
    and logits give the same tokens)."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def pick(logits) -> int:
        z = np.asarray(logits, dtype=np.float64).reshape(-1) / temperature
        order = np.argsort(-z, kind="stable")
        if top_k:
            order = order[:top_k]
        p = np.exp(z[order] - z[order[0]])
        p /= p.sum()
        keep = min(int(np.searchsorted(np.cumsum(p), top_p) + 1), len(p))  # sums rounded below 1.0
        p = p[:keep] / p[:keep].sum()
        return int(order[rng.choice(keep, p=p)])

    return pick


def greedy(step, prompt: list, new_tokens: int, chunk: int, stop_ids=(), context: int | None = None,
           on_token=None, pick=None) -> list:
    """The most likely token (or `pick(logits)`, e.g. a `sampler`), step by step, until `new_tokens`, a
    stop token, or the cache is full."""
    import numpy as np

    logits = prefill(step, prompt, 0, chunk)
    out, pos = [], len(prompt)
    for _ in range(new_tokens):
        tok = int(np.asarray(logits).reshape(-1).argmax()) if pick is None else pick(logits)
        out.append(tok)
        if on_token is not None:
            on_token(tok)
        if tok in stop_ids or (context is not None and pos >= context):
            break
        logits = step([tok], pos)
        pos += 1
    return out


def timed_decode(step, tok: int, pos: int, n: int) -> list:
    """`n` greedy steps from token `tok` at position `pos`, whatever the tokens (no stop): the wall time of
    each step in ms (a model call and its argmax)."""
    import time

    import numpy as np

    steps = []
    for _ in range(n):
        t0 = time.perf_counter()
        tok = int(np.asarray(step([tok], pos)).argmax())
        steps.append((time.perf_counter() - t0) * 1e3)
        pos += 1
    return steps
