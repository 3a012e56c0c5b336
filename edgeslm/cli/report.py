"""`edgeslm report`: Markdown / HTML / JSON from manifests and profile results, and the baseline gate."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgeslm.cli import main
from edgeslm.errors import EXIT_FAILED, UserError


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["md", "html", "json"]), default="md", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), help="Write the report here (default: stdout).")
@click.option("--baseline", type=click.Path(path_type=Path),
              help="Baseline results (a folder made with --save-baseline, or builds/results) to gate against.")
@click.option("--fail-on", default=None, metavar="SPEC",
              help="Gate thresholds, e.g. 'latency=+10%,rss=+5%,size=+1%,accuracy=-0.5' (the default with "
                   "--baseline). Latency regressions must exceed the limit beyond the measured spread.")
@click.option("--save-baseline", type=click.Path(path_type=Path),
              help="Store these results as the new baseline in this folder: a new folder, or one edgeslm "
                   "saved as a baseline before (which is replaced); anything else is refused.")
def report(paths, fmt, out, baseline, fail_on, save_baseline) -> None:
    """Turn build folders, profile results or folders of them into a report; with --baseline, compare
    and exit 1 when a threshold is crossed (noise within the measured spread does not fail)."""
    from edgeslm.reports import gate
    from edgeslm.reports.collect import collect, rows
    from edgeslm.reports.model import build_report

    if out is not None and out.is_dir():
        raise UserError(f"--out {out}: is a folder; give a file name, e.g. {out / ('report.' + fmt)}")
    current = collect(list(paths))
    comparison = None
    if baseline is not None:
        limits = gate.parse_fail_on(fail_on or _recipe_thresholds(current) or gate.DEFAULT_FAIL_ON)
        comparison = gate.compare(rows(current), rows(collect([baseline])), limits)
    elif fail_on:
        raise click.UsageError("--fail-on needs --baseline")
    data = build_report(current, comparison, keep_samples=fmt != "json")
    if fmt == "json":
        text = json.dumps(data, indent=2)
    elif fmt == "html":
        from edgeslm.reports.html import render

        text = render(data)
    else:
        from edgeslm.reports.markdown import render

        text = render(data)
    if out:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.tmp")
            tmp.write_text(text)
            tmp.replace(out)
        except OSError as exc:
            raise UserError(f"--out {out}: cannot write the report there ({exc.strerror or exc})") from None
        click.echo(f"report written to {out}", err=True)
    else:
        click.echo(text)
    if save_baseline:
        gate.save_baseline(current.sources, save_baseline)
        click.echo(f"baseline saved to {save_baseline} ({len(current.sources)} files)", err=True)
    if comparison is not None:
        bad = [r["key"] for r in comparison.rows if r["status"] == "regressed"]
        shaky = [r["key"] for r in comparison.rows if r["status"] == "inconclusive"]
        if shaky:
            click.echo(f"inconclusive (within noise, not failing): {', '.join(shaky)}", err=True)
        if bad:
            click.echo(f"gate failed: regression in {', '.join(bad)}", err=True)
            raise SystemExit(EXIT_FAILED)
        click.echo("gate passed", err=True)


def _recipe_thresholds(current) -> str | None:
    """`gate.fail_on` of the recipes behind the results, when they set one (and agree)."""
    found = {((m.get("recipe", {}).get("content") or {}).get("gate") or {}).get("fail_on")
             for m in current.manifests.values()} - {None}
    if len(found) > 1:
        raise click.UsageError(f"the recipes set different gate.fail_on ({', '.join(sorted(found))}); "
                               "give --fail-on")
    return found.pop() if found else None
