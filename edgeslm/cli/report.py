"""`edgeslm report`: Markdown / HTML / JSON / CSV / JUnit / GitHub annotations from manifests and profile results, and
the baseline gate."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from edgeslm.cli.app import main
from edgeslm.errors import EXIT_FAILED, UserError


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["md", "html", "json", "csv", "junit", "github"]), default="md",
              show_default=True,
              help="md: Markdown (a GitHub job summary or PR comment); html: one self-contained page with plots; "
                   "json: the report as data (schema edgeslm.report/1, `edgeslm schema report`); csv: one row per "
                   "result (figures, flags, gate status); junit: JUnit XML, a suite per device, a test per parity "
                   "check and per gate check; github: GitHub Actions workflow commands (::error/::warning/::notice "
                   "annotations). The gate's exit code is the same for every format.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Write the report to this file instead of stdout (in the chosen --format: report.md, "
                   "report.html, report.json, report.csv, junit.xml, or a file of workflow commands to print in "
                   "a later step).")
@click.option("--baseline", type=click.Path(path_type=Path),
              help="Baseline results (a folder made with --save-baseline, or builds/results) to gate against.")
@click.option("--fail-on", default=None, metavar="SPEC",
              help="Gate thresholds, e.g. 'latency=+10%,rss=+5%,size=+1%,accuracy=-0.5' (the default with "
                   "--baseline). latency/rss/size limit an increase ('+' or no sign), accuracy a drop in points "
                   "('-' or no sign); each metric once. Latency regressions must exceed the limit beyond the "
                   "measured spread.")
@click.option("--save-baseline", type=click.Path(path_type=Path),
              help="Store these results as the new baseline in this folder: a new folder, or one edgeslm "
                   "saved as a baseline before and holding only its files (it is replaced; through a link, the "
                   "folder the link points to). Refused: any other folder, the current folder or one holding it, "
                   "and a folder holding --out or an input of this command.")
def report(paths, fmt, out, baseline, fail_on, save_baseline) -> None:
    """Turn build folders, profile results or folders of them into a report; with --baseline, compare
    and exit 1 when a threshold is crossed (noise within the measured spread does not fail).

    A result file found in a folder that cannot be read is skipped, named on stderr and listed in the
    report; a file named here that cannot be read is an error. Skipped files do not fail the gate: it
    decides on the results it could read, names each skipped file and says it stands on partial data."""
    from edgeslm.reports import gate
    from edgeslm.reports.collect import collect, rows
    from edgeslm.reports.model import build_report

    # every option is checked before anything is read or written
    if out is not None and out.is_dir():
        ext = {"junit": "xml", "github": "txt"}.get(fmt, fmt)
        raise UserError(f"--out {out}: is a folder; give a file name, e.g. {out / ('report.' + ext)}")
    if fail_on is not None and baseline is None:
        raise click.UsageError("--fail-on needs --baseline")
    limits = gate.parse_fail_on(fail_on) if fail_on is not None else None
    reads = [*paths, *([baseline] if baseline is not None else [])]
    if save_baseline is not None:
        from edgeslm.reports.baseline import baseline_folder

        baseline_folder(save_baseline, reads, [out])
    current = collect(list(paths))
    _warn_skipped(current.skipped)
    if out is not None and os.path.realpath(out) in {os.path.realpath(f) for f in current.sources}:
        raise UserError(f"--out {out}: is one of the results this report reads; write the report elsewhere")
    comparison = None
    if baseline is not None:
        if limits is None:
            limits = _recipe_limits(current) or gate.parse_fail_on(gate.DEFAULT_FAIL_ON)
        base = collect([baseline])
        _warn_skipped(base.skipped, "baseline ")
        comparison = gate.compare(rows(current), rows(base), limits,
                                  skipped={"current": current.skipped, "baseline": base.skipped})
    data = build_report(current, comparison, keep_samples=fmt in ("md", "html"))
    if fmt == "json":
        text = json.dumps(data, indent=2)
    elif fmt in ("csv", "junit", "github"):
        from edgeslm.reports.export import RENDERERS

        text = RENDERERS[fmt](data)
    elif fmt == "html":
        from edgeslm.reports.html import render

        text = render(data)
    else:
        from edgeslm.reports.markdown import render

        text = render(data)
    if out:
        _write(out, text)
        click.echo(f"report written to {out}", err=True)
    else:
        click.echo(text)
    if save_baseline is not None:
        from edgeslm.reports.baseline import save_baseline as save

        real = save(current.sources, save_baseline, reads, [out])
        where = save_baseline if str(real) == str(save_baseline) else f"{save_baseline} ({real})"
        click.echo(f"baseline saved to {where} ({len(current.sources)} files)", err=True)
    if comparison is not None:
        bad = [r["key"] for r in comparison.rows if r["status"] == "regressed"]
        shaky = [r["key"] for r in comparison.rows if r["status"] == "inconclusive"]
        partial = ""
        if comparison.partial:
            n = {side: len(files) for side, files in comparison.skipped.items()}
            partial = " on partial data (" + ", ".join(f"{k} {side} result file(s) skipped" for side, k in n.items()) + ")"
        if shaky:
            click.echo(f"inconclusive (within noise, not failing): {', '.join(shaky)}", err=True)
        if bad:
            click.echo(f"gate failed{partial}: regression in {', '.join(bad)}", err=True)
            raise SystemExit(EXIT_FAILED)
        click.echo(f"gate passed{partial}", err=True)


def _warn_skipped(skipped: list[dict], side: str = "") -> None:
    for s in skipped:
        click.echo(f"warning: skipped {side}{s['file']}: {s['why']}", err=True)


def _write(out: Path, text: str) -> None:
    """The report to `out` through a temporary sibling (an interrupted write leaves the old report)."""
    import tempfile

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, out)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write the report there ({exc.strerror or exc})") from None


def _recipe_limits(current) -> dict | None:
    """The limits of `gate.fail_on` in the recipes behind the results, when they set one (and agree); a value
    that cannot be read (a manifest from another edgeslm) is named with its manifest."""
    from edgeslm.reports import gate

    found = {}
    for m in current.manifests.values():
        spec = (m.recipe.content.get("gate") or {}).get("fail_on")
        if spec is not None:
            found.setdefault(spec, m)
    if len(found) > 1:
        raise click.UsageError(f"the recipes set different gate.fail_on ({', '.join(sorted(found))}); "
                               "give --fail-on")
    if not found:
        return None
    spec, m = found.popitem()
    try:
        return gate.parse_fail_on(spec)
    except UserError as exc:
        raise UserError(f"recipe {m.recipe.name} (build {m.cache_key[:16]}): gate.fail_on "
                        f"{str(exc).replace('--fail-on: ', '', 1)}; give --fail-on") from None
