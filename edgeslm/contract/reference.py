"""The reference file of a build (`reference.npz`): what the build host computed, stored so a device can check
the artifacts it runs against it. One definition of its layout for both writers (the encoder and decoder
builds) and both readers (the runner's encoder and decoder loops). Standard library and numpy only.

Encoders (one forward pass per sample):
    input/<i>/<name>           the tokenized verification sample i (int64 [batch, sequence])
    output/<i>/<output>        eager PyTorch after the passes (what was exported)
    original/<i>/<output>      eager PyTorch before compression
    host/<format>/<i>/<output> the artifact of that format run on the build host
    eval/<i>/<name>            the tokenized eval split, batch i; eval/targets its class ids;
    eval/centroids/<format>    an embedding model's class centroids (the probe) from that artifact

Decoders (teacher-forced on a held text):
    text/ids, text/first       the held text's token ids; the first `first` go in as the prompt
    original/top_ids|top_logits|logsumexp|target_logprob
                               PyTorch before compression, rows predicting text/ids[first:]
    artifact/<name>/top_ids    each artifact on the build host (top TOP_K_STORED ids per row)
    prompt/<i>, prompt/<i>/reference
                               a recipe prompt's ids and PyTorch's greedy continuation
"""

from __future__ import annotations

FILE = "reference.npz"
TOP_K_STORED = 16  # decoders: top ids (and logits) kept per position

# encoders
EVAL_TARGETS = "eval/targets"


def sample_input(i: int, name: str) -> str:
    return f"input/{i}/{name}"


def eager_output(i: int, output: str) -> str:
    return f"output/{i}/{output}"


def original_output(i: int, output: str) -> str:
    return f"original/{i}/{output}"


def host_output(fmt: str, i: int, output: str) -> str:
    return f"host/{fmt}/{i}/{output}"


def eval_input(i: int, name: str) -> str:
    return f"eval/{i}/{name}"


def eval_centroids(fmt: str) -> str:
    return f"eval/centroids/{fmt}"


ENCODER_KEYS = ("input/<i>/<name>, output/<i>/<output> (eager PyTorch after the passes), original/<i>/<output> "
                "(before compression), host/<format>/<i>/<output>; eval/<i>/<name>, eval/targets, "
                "eval/centroids/<format> (tokenized eval split)")

# decoders
TEXT_IDS = "text/ids"
TEXT_FIRST = "text/first"
ORIGINAL_TOP_IDS = "original/top_ids"
ORIGINAL_TOP_LOGITS = "original/top_logits"
ORIGINAL_LOGSUMEXP = "original/logsumexp"
ORIGINAL_TARGET_LOGPROB = "original/target_logprob"


def artifact_top_ids(name: str) -> str:
    return f"artifact/{name}/top_ids"


def prompt(i: int) -> str:
    return f"prompt/{i}"


def prompt_reference(i: int) -> str:
    return f"prompt/{i}/reference"


DECODER_KEYS = ("text/ids (held text), text/first (prompt length), original/top_ids|top_logits|logsumexp "
                "(PyTorch before compression, rows predicting text/ids[first:]), artifact/<name>/top_ids (each "
                "artifact on the build host), prompt/<i> and prompt/<i>/reference (greedy continuation by PyTorch)")


def load(path: str):
    """The arrays of a reference file (numpy's lazy NpzFile; no pickles)."""
    import numpy as np

    return np.load(path, allow_pickle=False)
