"""`edgeslm build`: recipes and targets to verified artifacts."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import click

from edgeslm.cli.app import main
from edgeslm.cli.console import quiet_native_output, stderr_console
from edgeslm.config.catalog import find_recipe, select_targets
from edgeslm.contract import artifact_size

DEFAULT_RECIPE = "minilm-embedding"


@main.command()
@click.argument("recipe", required=False)
@click.option("-t", "--target", "targets", multiple=True, metavar="NAME",
              help="Target to build for (repeatable): a shipped target name, 'all' (every target the recipe "
                   "lists) or a target .toml file. Default: host.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("build"), show_default=True,
              help="Folder that receives <recipe>/<target>/.")
@click.option("--force", is_flag=True, help="Rebuild even when the cache holds this exact build (and replace "
              "the cache entry).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
def build(recipe: str | None, targets: tuple[str, ...], out: Path, force: bool, as_json: bool, quiet: bool) -> None:
    """Build RECIPE (a file or a shipped recipe name; default: the bundled minilm-embedding demo) into
    verified ONNX and ExecuTorch artifacts for each target, with a manifest and reference I/O.

    An unchanged recipe for an unchanged target returns the cached artifacts at once.
    """
    from edgeslm.errors import CheckFailed
    from edgeslm.pipeline import StepLog, build as run_build, plan

    if recipe is None:
        recipe = DEFAULT_RECIPE
        if not quiet:
            click.echo(f"no recipe given: building the bundled demo recipe {DEFAULT_RECIPE} (all-MiniLM-L6-v2 "
                       "sentence embeddings, fp32) for this machine; name a recipe file or one from "
                       "`edgeslm recipes` to build something else", err=True)
    loaded = find_recipe(recipe)
    resolved = plan(loaded, select_targets(loaded, targets, warn=lambda m: click.echo(f"note: {m}", err=True)))
    writable_folder(out, "--out")  # before any slow step
    console = stderr_console(quiet or as_json)
    results = []
    log_dir = out / ".logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    for target in resolved:
        log_path = log_dir / f"{loaded.recipe.name}-{target.name}.log"
        steps = StepLog(on_step=_progress(console, target.name),
                        progress=(lambda m, t=target.name: console.print(f"    [dim]{t}: {m}[/]")) if console else
                        (lambda m: None))
        try:
            with quiet_native_output(log_path):
                result = run_build(loaded, target, out, force=force, log=steps)
        except CheckFailed as exc:  # show every figure, not only the failing one
            failed = getattr(exc, "result", None)
            if failed is not None:
                if as_json:
                    click.echo(json.dumps([_as_dict(r) for r in [*results, failed]], indent=2))
                else:
                    _summary(console, failed)
            raise
        results.append(result)
        if not as_json:
            _summary(console, result)
    if as_json:
        click.echo(json.dumps([_as_dict(r) for r in results], indent=2))


def writable_folder(path: Path, option: str) -> None:
    """`path` is (or can become) a folder we can write in; else a one-line error naming it."""
    import tempfile

    from edgeslm.errors import UserError

    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path}: is a file, not a folder; give a folder (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UserError(f"{option} {path}: cannot write there ({exc.strerror or exc}); give a folder you can "
                        "write to") from None


def _progress(console, target: str):
    @contextlib.contextmanager
    def on_step(name: str):
        t0 = time.perf_counter()
        if console is None:
            yield
            return
        from rich.live import Live
        from rich.spinner import Spinner

        # not console.status(): its Live redirects sys.stdout/stderr into the terminal above the spinner, so under
        # a terminal what libraries print would land there instead of in the build log
        with Live(Spinner("dots", f"[bold]{target}[/]: {name}..."), console=console, transient=True,
                  redirect_stdout=False, redirect_stderr=False):
            yield
        console.print(f"  [green]✓[/] {target}: {name} [dim]{time.perf_counter() - t0:.1f}s[/]")
    return on_step


def _as_dict(r) -> dict:
    m = r.manifest
    return {"folder": str(r.folder), "cached": r.cached, "seconds": round(r.seconds, 3),
            "recipe": m.recipe.name, "target": m.target["name"], "status": m.status,
            "artifacts": [{"name": a.name, "file": str(r.folder / a.file), "precision": a.precision,
                           "size": artifact_size(m.files, a.file),
                           "verification": a.verification.model_dump(mode="json") if a.verification else None}
                          for a in m.artifacts],
            "manifest": str(r.folder / "manifest.json")}


def _summary(console, r) -> None:
    from rich.table import Table

    from edgeslm.cli.console import stdout_console
    from edgeslm.tasks import task_unit

    out = stdout_console()
    m = r.manifest
    how = (f"taken from the cache in {r.seconds:.1f} s (built earlier in {m.build['seconds']:.1f} s)" if r.cached
           else f"built in {m.build['seconds']:.1f} s")
    if m.status != "ok":
        how = f"VERIFICATION FAILED after {m.build['seconds']:.1f} s"
    if r.note:
        out.print(f"[yellow]note:[/] {r.note}")
    generates = task_unit(m.task).generates
    int8 = any(a.precision.startswith("int8") for a in m.artifacts)
    what = m.task if generates or not int8 else f"{m.task}, int8 preset {m.target['quantization']['preset']}"
    out.print(f"[bold]{m.recipe.name}[/] for [bold]{m.target['name']}[/] ({m.target['arch']}, {what}): {how}")
    if generates:
        _generation_table(out, r)
        return
    table = Table(show_edge=False, pad_edge=False)
    for col in ("artifact", "precision", "size", "cosine min / p5", "max abs err", "KL max", "centred cos",
                "top-1 (clear)", "verified", "notes"):  # names and figures never cut; the notes wrap
        table.add_column(col, no_wrap=col != "notes", overflow="fold", ratio=1 if col == "notes" else None)
    for a in m.artifacts:
        v = {x.name: x for x in a.verification.metrics}

        def cell(name: str, fmt: str) -> str:
            x = v.get(name)
            if x is None:
                return "-"
            text = format(x.value, fmt)
            return f"[red]{text}[/]" if x.passed is False else text

        top1 = cell("top1_agreement", ".3f")
        if "top1_clear_rows" in v:
            top1 += f" ({int(v['top1_clear_rows'].value)})"
        note = ""
        if a.format == "executorch":
            d = a.export.get("delegation", {})
            note = f"XNNPACK: {d.get('delegated_ops')} ops delegated, {d.get('non_delegated_ops')} not"
        elif a.format == "onnx":
            level = a.export.get("optimization", {}).get("level", "").split(" ")[0]
            note = f"opset {a.export.get('opset')}, graph optimization: {level}"
        if a.verification.how:
            note += "; run with exact int32 products (this host's kernels saturate, the target's do not)"
        batch = next((x for x in a.verification.metrics if x.name.startswith("batch")), None)
        if batch is not None:
            note += f"; batched vs alone cos {batch.value:.4f}"
        table.add_row(a.file, a.precision, _mb(artifact_size(m.files, a.file)), f"{cell('cosine_min', '.5f')} / {cell('cosine_p5', '.5f')}",
                      cell("max_abs_error", ".2e"), cell("kl_max", ".2e"), cell("centered_cosine", ".4f"), top1,
                      "[green]pass[/]" if a.verification.passed else "[red]FAIL[/]", note)
    out.print(table)
    other = sum(f.size for f in m.files if f.role != "model")
    out.print(f"  folder: {r.folder}  (+ tokenizer and reference I/O: {_mb(other)})")
    out.print(f"  manifest: {r.folder / 'manifest.json'}")
    seqs = m.artifacts[0].verification.seq_lens if m.artifacts else []
    if seqs:
        out.print(f"  verified on {len(seqs)} texts of {min(seqs)}-{max(seqs)} tokens (max_seq_len "
                  f"{m.shapes['max_seq_len']}), batch {m.shapes['batch_size']}")
    _training(out, m)
    _task_scores(out, m)
    _warnings(out, m)


def _training(out, m) -> None:
    """Which epoch each training step kept, and on what it was picked."""
    for p in m.passes:
        for what, facts in (("finetune", p if p.get("type") == "finetune" else None),
                            ("recovery", p.get("recovery") if isinstance(p.get("recovery"), dict) else None)):
            if facts and "kept_epoch" in facts:
                stop = ", stopped early" if facts.get("stopped_early") else ""
                out.print(f"  {what}: kept epoch {facts['kept_epoch']} of {facts.get('epochs_run')}{stop}, picked on "
                          f"the {facts.get('picked_on', 'eval split')}")


def _task_scores(out, m) -> None:
    """The task metric on the eval split (which picked nothing): before compression and per artifact, and per
    class for the first artifact."""
    e = m.evaluation
    if e is None:
        return
    base = e.original.value
    parts = [f"{fmt} {s.value:.4f} ({(s.value - base) * 100:+.2f} pt)" for fmt, s in e.artifacts.items()]
    out.print(f"  {e.metric} on {e.eval_texts} eval texts: before compression {base:.4f}; " + "; ".join(parts))
    first = next(iter(e.artifacts.items()), None)
    per = (first[1].model_extra or {}).get("per_class") if first else None
    labels = (e.model_extra or {}).get("labels") or m.model.get("labels") or []
    if per:
        names = labels if len(labels) == len(per) else [str(k) for k in range(len(per))]
        f1 = ", ".join(f"{n} {c['f1']:.3f}" if c.get("f1") is not None else f"{n} -" for n, c in zip(names, per))
        out.print(f"  per class F1 ({first[0]}): {f1}")


def _warnings(out, m) -> None:
    for w in m.build.get("warnings", []):
        out.print(f"  [yellow]warning:[/] {w}")


def _generation_table(out, r) -> None:
    """Teacher-forced agreement with eager PyTorch, perplexity before and after, greedy continuations."""
    from rich.table import Table

    m = r.manifest
    table = Table(show_edge=False, pad_edge=False)
    for col in ("artifact", "precision", "size", "KL mean / max", "top-1 (clear)", "top-5", "perplexity",
                "vs original: top-5", "continuations", "verified"):
        table.add_column(col)
    for a in m.artifacts:
        v = {x.name: x for x in a.verification.metrics}
        c = {x.name: x for x in a.compression.metrics}

        def fmt(x, spec: str) -> str:
            if x is None:
                return "-"
            text = format(x.value, spec)
            return f"[red]{text}[/]" if x.passed is False else text

        ppl = (f"{c['perplexity_reference'].value:.3g} -> {c['perplexity'].value:.3g} "
               f"({fmt(c['perplexity_increase'], '+.1%')})")
        cont = a.extras.get("continuations", [])
        agree = sum(x["first_token_agrees"] for x in cont)
        prefix = sum(x["common_prefix"] for x in cont)
        total = sum(len(x["reference"]) for x in cont)
        table.add_row(a.file, a.precision, _mb(artifact_size(m.files, a.file)),
                      f"{fmt(v['kl_mean'], '.2e')} / {v['kl_max'].value:.2e}",
                      f"{fmt(v['top1_agreement'], '.3f')} ({int(v['top1_clear_rows'].value)})",
                      fmt(v["top5_agreement"], ".3f"), ppl, fmt(c["top5_agreement"], ".3f"),
                      f"first token {agree}/{len(cont)}, same {prefix}/{total} tokens",
                      "[green]pass[/]" if a.verification.passed else "[red]FAIL[/]")
    out.print(table)
    kv = m.artifacts[0].export.get("kv_cache", {}) if m.artifacts else {}
    out.print(f"  folder: {r.folder}")
    out.print(f"  manifest: {r.folder / 'manifest.json'}")
    out.print(f"  teacher-forced on {m.reference.get('text_tokens')} tokens of held text ({m.reference.get('prompt_tokens')} "
              f"as the prompt, the rest one at a time); KV cache {m.shapes['max_context']} positions "
              f"({_mb(kv.get('bytes', 0))}), prompt chunk {m.shapes['max_prompt']}")
    _warnings(out, m)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"

