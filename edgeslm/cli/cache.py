"""`edgeslm cache`: see and prune the build store."""

from __future__ import annotations

import json
import time

import click

from edgeslm.cli.app import main
from edgeslm.cli.options import json_option
from edgeslm.errors import UserError


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _ago(t: float) -> str:
    s = max(0, time.time() - t)
    for unit, scale in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= scale:
            return f"{s / scale:.0f} {unit} ago"
    return "just now"


@main.group()
def cache() -> None:
    """The build store: completed builds and cached pass results ($EDGESLM_CACHE, default ~/.cache/edgeslm)."""


@cache.command("list")
@json_option
def cache_list(as_json) -> None:
    """Every stored build and pass result: what it is, its size and when it was last used."""
    from edgeslm.pipeline.store import scan, stores

    entries, others = scan()
    if as_json:
        click.echo(json.dumps({"stores": {k: str(v) for k, v in stores().items()},
                               "entries": [e.to_dict() for e in entries],
                               "not_edgeslm": [str(p) for p in others]}, indent=2))
        return
    for e in sorted(entries, key=lambda e: -e.last_used):
        click.echo(f"{e.kind:5} {e.key[:12]}  {_mb(e.size):>11}  used {_ago(e.last_used):>12}  {e.what}")
    total = sum(e.size for e in entries)
    click.echo(f"{len(entries)} entries, {_mb(total)} in {', '.join(str(p) for p in stores().values())}")
    for p in others:
        click.echo(f"not edgeslm's, left alone: {p}")


@cache.command("prune")
@click.option("--older-than", "older_than", metavar="AGE",
              help="Remove entries not used for this long: 30d, 12h, 90m, 2w.")
@click.option("--max-size", "max_size", metavar="SIZE",
              help="Then remove the least recently used entries until the rest take at most SIZE (5GB, 500MB, 2GiB).")
@click.option("--all", "everything", is_flag=True, help="Remove every entry.")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
def cache_prune(older_than, max_size, everything, dry_run) -> None:
    """Remove stored builds and pass results by age or total size, least recently used first. Only entries
    edgeslm made are removed (other files are left alone), never one a build is using; build folders you
    built into (build/...) are not touched, and a removed entry is rebuilt when a build needs it again."""
    from edgeslm.pipeline.store import choose, parse_age, parse_size, remove, scan

    if not (older_than or max_size or everything):
        raise UserError("cache prune: say what to remove: --older-than AGE, --max-size SIZE or --all "
                        "(add --dry-run to see it first)")
    try:
        age = parse_age(older_than) if older_than else None
        size = parse_size(max_size) if max_size else None
    except ValueError as exc:
        raise UserError(f"cache prune: {exc}") from None
    entries, _ = scan()
    chosen = choose(entries, age, size, everything)
    freed = 0
    for e in chosen:
        why = None if dry_run else remove(e)
        if why:
            click.echo(f"kept {e.kind} {e.key[:12]} ({e.what}): {why}")
            continue
        freed += e.size
        click.echo(f"{'would remove' if dry_run else 'removed'} {e.kind} {e.key[:12]} ({e.what}, {_mb(e.size)})")
    left = sum(e.size for e in entries) - freed
    click.echo(f"{'would free' if dry_run else 'freed'} {_mb(freed)}; {_mb(left)} left")
