"""Option types and bounds shared by the commands that talk to a device (pip's cmdoptions.py, small).

Every argument of `run` and `profile` is checked by click or here before anything touches a device: a
bound that only the device would enforce costs an upload first and then answers with the device's text.
"""

from __future__ import annotations

import math

import click

from edgeslm.errors import UserError

from edgeslm.contract import MAX_ITERS, MAX_SEED, MAX_THREADS, MAX_TOKENS, MAX_TOP_K  # noqa: F401 (the bounds)

MAX_SECONDS = 86_400.0  # --min-seconds: a day; a device's profile_timeout (default 3600) ends a run sooner


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange, without NaN (it passes every range comparison) or infinities."""

    name = "finite float range"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


def threads_option(help_text: str):
    return click.option("--threads", type=click.IntRange(0, MAX_THREADS), default=None,
                        help=f"{help_text} (at most {MAX_THREADS}).")


def check_prompt(prompt: str) -> str:
    """A prompt `run` can tokenize: not empty, and UTF-8 text (the shell passes other bytes through as lone
    surrogates, which a tokenizer cannot take)."""
    if prompt == "":
        raise UserError("PROMPT is empty; give the text the model should continue (or answer, with --chat)")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:
        ch = prompt[exc.start]
        what = f"byte 0x{ord(ch) - 0xDC00:02x}" if 0xDC80 <= ord(ch) <= 0xDCFF else f"character U+{ord(ch):04X}"
        raise UserError(f"PROMPT is not UTF-8 text ({what} at position {exc.start}); give the prompt as UTF-8 "
                        "(check the terminal's encoding, e.g. LANG=C.UTF-8)") from None
    return prompt
