"""`edgeslm build`: recipes and targets to verified artifacts."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import click

from edgeslm.cli import main
from edgeslm.cli.console import quiet_native_output, stderr_console
from edgeslm.config.catalog import find_recipe, select_targets

DEFAULT_RECIPE = "minilm-embedding"


@main.command()
@click.argument("recipe", required=False, default=DEFAULT_RECIPE)
@click.option("-t", "--target", "targets", multiple=True, metavar="NAME",
              help="Target to build for (repeatable); 'all' = every target the recipe lists. "
                   "Default: host.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("build"), show_default=True,
              help="Folder that receives <recipe>/<target>/.")
@click.option("--force", is_flag=True, help="Rebuild even when the cache holds this exact build.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
def build(recipe: str, targets: tuple[str, ...], out: Path, force: bool, as_json: bool, quiet: bool) -> None:
    """Build RECIPE (a file or a shipped recipe name; default: minilm-embedding) into verified ONNX
    and ExecuTorch artifacts for each target, with a manifest and reference I/O.

    An unchanged recipe for an unchanged target returns the cached artifacts at once.
    """
    from edgeslm.pipeline import StepLog, build as run_build, plan

    loaded = find_recipe(recipe)
    resolved = plan(loaded, select_targets(loaded, targets))  # whole plan checked before any work
    console = stderr_console(quiet or as_json)
    results = []
    log_dir = out / ".logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    for target in resolved:
        log_path = log_dir / f"{loaded.recipe.name}-{target.name}.log"
        steps = StepLog(on_step=_progress(console, target.name))
        with quiet_native_output(log_path):
            result = run_build(loaded, target, out, force=force, log=steps)
        results.append(result)
        if not as_json:
            _summary(console, result)
    if as_json:
        click.echo(json.dumps([_as_dict(r) for r in results], indent=2))


def _progress(console, target: str):
    @contextlib.contextmanager
    def on_step(name: str):
        t0 = time.perf_counter()
        if console is None:
            yield
            return
        with console.status(f"[bold]{target}[/]: {name}..."):
            yield
        console.print(f"  [green]✓[/] {target}: {name} [dim]{time.perf_counter() - t0:.1f}s[/]")
    return on_step


def _as_dict(r) -> dict:
    m = r.manifest
    return {"folder": str(r.folder), "cached": r.cached, "seconds": round(r.seconds, 3),
            "recipe": m.recipe["name"], "target": m.target["name"], "status": m.status,
            "artifacts": [{"name": a.name, "file": str(r.folder / a.file), "precision": a.precision,
                           "size": next(f.size for f in m.files if f.path == a.file),
                           "verification": a.verification.model_dump(mode="json") if a.verification else None}
                          for a in m.artifacts],
            "manifest": str(r.folder / "manifest.json")}


def _summary(console, r) -> None:
    from rich.table import Table

    from edgeslm.cli.console import stdout_console

    out = stdout_console()
    m = r.manifest
    how = "cached, nothing to do" if r.cached else f"built in {m.build['seconds']:.1f}s"
    out.print(f"[bold]{m.recipe['name']}[/] for [bold]{m.target['name']}[/] ({m.target['arch']}, "
              f"int8 preset {m.target['quantization']['preset']}): {how} ({r.seconds:.2f}s now)")
    table = Table(show_edge=False, pad_edge=False)
    for col in ("artifact", "precision", "size", "cosine min", "max abs err", "top-1", "verified", "notes"):
        table.add_column(col)
    sizes = {f.path: f.size for f in m.files}
    for a in m.artifacts:
        v = {x.name: x for x in a.verification.metrics}
        top1 = f"{v['top1_agreement'].value:.3f}" if "top1_agreement" in v else "-"
        note = ""
        if a.format == "executorch":
            d = a.export.get("delegation", {})
            note = f"XNNPACK: {d.get('delegated_ops')} ops delegated, {d.get('non_delegated_ops')} not"
        elif a.format == "onnx":
            level = a.export.get("optimization", {}).get("level", "").split(" ")[0]
            note = f"opset {a.export.get('opset')}, graph optimization: {level}"
        table.add_row(a.file, a.precision, _mb(sizes[a.file]), f"{v['cosine_min'].value:.6f}",
                      f"{v['max_abs_error'].value:.2e}", top1,
                      "[green]pass[/]" if a.verification.passed else "[red]FAIL[/]", note)
    out.print(table)
    other = sum(f.size for f in m.files if f.role != "model")
    out.print(f"  folder: {r.folder}  (+ tokenizer and reference I/O: {_mb(other)})")
    out.print(f"  manifest: {r.folder / 'manifest.json'}")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"

