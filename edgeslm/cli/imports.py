"""`edgeslm import`: an encoder's .onnx or .pte made elsewhere as a build folder deploy, profile and report take."""

from __future__ import annotations

import re
from pathlib import Path

import click

from edgeslm.cli.app import main

TASK_CHOICES = ["embedding", "sequence-classification", "fill-mask"]


@main.command("import")
@click.argument("model_file", type=click.Path(path_type=Path))
@click.option("--task", type=click.Choice(TASK_CHOICES), required=True, help="What the model computes.")
@click.option("--tokenizer", type=click.Path(path_type=Path), required=True,
              help="Folder with the tokenizer the model was trained with (tokenizer.json or vocab.txt, "
                   "tokenizer_config.json).")
@click.option("--name", help="Build name (default: the file's folder or stem, made plain).")
@click.option("--target", "target_name", default="host", show_default=True, help="Target the folder is for.")
@click.option("--min-seq-len", type=click.IntRange(1, 8192), default=4, show_default=True)
@click.option("--max-seq-len", type=click.IntRange(1, 8192), default=128, show_default=True,
              help="Longest input the model takes (texts are truncated to it).")
@click.option("--inputs", help=".pte only: the program's inputs in order (default: input_ids,attention_mask).")
@click.option("--min-cosine", type=click.FloatRange(0, 1), default=0.999, show_default=True,
              help="What a device's outputs must reach against this host's, per text.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("build"), show_default=True,
              help="Where the build folder goes: <out>/<name>/<target>.")
def import_model(model_file, task, tokenizer, name, target_name, min_seq_len, max_seq_len, inputs, min_cosine,
                 out) -> None:
    """Make a build folder from an encoder's MODEL_FILE (.onnx or .pte) made elsewhere, so that `deploy`,
    `profile` and `report` take it like edgeslm's own builds. The file is run here on the bundled texts and its
    outputs become the reference a device is checked against: what cannot be checked without the PyTorch model
    (export fidelity) is said in the manifest and the reports."""
    from edgeslm.config.catalog import load_target
    from edgeslm.pipeline.imported import NOT_CHECKED, import_file

    if name is None:
        stem = model_file.stem if model_file.stem not in ("model", "") else model_file.resolve().parent.name
        name = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._") or "imported"
    target = load_target(target_name).resolved()
    folder = import_file(model_file, task, tokenizer, name, target, out, min_seq_len, max_seq_len,
                         tuple(inputs.split(",")) if inputs else None, min_cosine,
                         log=lambda line: click.echo(f"  {line}", err=True))
    click.echo(f"imported {model_file} as {folder} ({task}, target {target.name})")
    click.echo(f"  note: {NOT_CHECKED}")
    click.echo(f"  next: edgeslm profile {folder} --device local   (or deploy it to a device)")


def not_a_build(path: Path) -> str | None:
    """The hint for a model file or a folder of them given where a build folder is expected, else None."""
    files = [path] if path.is_file() else sorted(path.glob("*.onnx")) + sorted(path.glob("*.pte")) if path.is_dir() else []
    files = [f for f in files if f.suffix in (".onnx", ".pte")]
    if not files:
        return None
    return (f"{path} is not a build folder (no manifest.json); to deploy or profile a model file made elsewhere, "
            f"import it first: edgeslm import {files[0]} --task embedding --tokenizer TOKENIZER_FOLDER")


__all__ = ["import_model", "not_a_build"]
