"""Gate thresholds: `latency=+10%,rss=+5%,size=+1%,accuracy=-0.5` (parsed without numpy or torch)."""

from __future__ import annotations

import re

from edgeslm.errors import UserError

SPEC = re.compile(r"^(latency|rss|size|accuracy)=([+-]?\d+(?:\.\d+)?)(%?)$")
DEFAULT_FAIL_ON = "latency=+10%,rss=+5%,size=+1%,accuracy=-0.5"
HELP = ("comma-separated METRIC=LIMIT: latency=+10% (median latency may grow 10%), rss=+5% (peak RSS), "
        "size=+1% (file size), accuracy=-0.5 (the task metric, else top-1 or cosine, may drop 0.5 points)")


def parse_fail_on(spec: str) -> dict[str, float]:
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        m = SPEC.match(part)
        if not m:
            raise UserError(f"--fail-on: cannot read {part!r}; expected {HELP}")
        metric, value, pct = m.group(1), float(m.group(2)), m.group(3)
        if metric == "accuracy":
            if pct:
                raise UserError("--fail-on: accuracy is in points (e.g. accuracy=-0.5), not percent")
            out[metric] = -abs(value)
        else:
            if not pct:
                raise UserError(f"--fail-on: {metric} needs a percentage (e.g. {metric}=+5%)")
            out[metric] = abs(value) / 100.0
    if not out:
        raise UserError(f"--fail-on is empty; expected {HELP}")
    return out
