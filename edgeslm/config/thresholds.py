"""Gate thresholds: `latency=+10%,rss=+5%,size=+1%,accuracy=-0.5` (parsed without numpy or torch).

Each limit has a direction: latency, rss and size limits are increases (a leading '-' would read as "may
shrink", which is not a limit, so it is refused rather than silently taken as '+'); accuracy is a drop in
points ('+' is refused likewise). No sign means the metric's own direction. A metric named twice is
refused (which of the two did the user mean?). Every message starts with "--fail-on: ": the recipe's
`[gate] fail_on` reports the same message under its own key (config/recipe.py strips that prefix).
"""

from __future__ import annotations

import math
import re

from edgeslm.errors import UserError

SPEC = re.compile(r"(latency|rss|size|accuracy)=([+-]?)(\d+(?:\.\d+)?)(%?)", re.ASCII)
DEFAULT_FAIL_ON = "latency=+10%,rss=+5%,size=+1%,accuracy=-0.5"
HELP = ("comma-separated METRIC=LIMIT: latency=+10% (median latency may grow 10%), rss=+5% (peak RSS), "
        "size=+1% (file size), accuracy=-0.5 (the task metric, else top-1 or cosine, may drop 0.5 points)")
GROWS = ("latency", "rss", "size")  # limits on an increase, in percent; accuracy: a drop, in points


def parse_fail_on(spec: str) -> dict[str, float]:
    """{metric: limit} (latency/rss/size: the relative increase allowed, e.g. 0.10; accuracy: the points it
    may drop, negative, e.g. -0.5), or a one-line UserError naming the part that is wrong."""
    if not isinstance(spec, str):
        raise UserError(f"--fail-on: expected text, got {type(spec).__name__}; expected {HELP}")
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        m = SPEC.fullmatch(part)
        if not m:
            raise UserError(f"--fail-on: cannot read {_show(part)}; expected {HELP}")
        metric, sign, digits, pct = m.groups()
        value = float(digits)
        if not math.isfinite(value):
            raise UserError(f"--fail-on: {metric}: {_show(digits)} is not a finite number")
        if metric in out:
            raise UserError(f"--fail-on: {metric} is given twice; give each metric once")
        if metric == "accuracy":
            if pct:
                raise UserError("--fail-on: accuracy is in points (e.g. accuracy=-0.5), not percent")
            if sign == "+":
                raise UserError(f"--fail-on: {part}: accuracy limits a drop, so it takes '-' or no sign "
                                f"(accuracy=-{digits}: may drop {digits} points)")
            out[metric] = -value
        else:
            if not pct:
                raise UserError(f"--fail-on: {metric} needs a percentage (e.g. {metric}=+5%)")
            if sign == "-":
                raise UserError(f"--fail-on: {part}: {metric} limits an increase, so it takes '+' or no sign "
                                f"({metric}=+{digits}%: may grow {digits}%)")
            out[metric] = value / 100.0
    if not out:
        raise UserError(f"--fail-on: empty; expected {HELP}")
    return out


def _show(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
