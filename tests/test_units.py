"""A new task, a new pass and a new format, each registered from this test (no edit to edgeslm/), build through
the one loop (edgeslm.pipeline.loop) like the built-in ones: plan checks, passes in recipe order, export per
format, the task's judge, one manifest, the cache."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pytest

from edgeslm.artifacts.manifest import Artifact, Metric, TensorSpec, Verification
from edgeslm.config.passes import PassConfig
from edgeslm.config.recipe import load_recipe
from edgeslm.config.target import load_target_file
from edgeslm.contract import reference as ref
from edgeslm.contract.formats import FormatRow
from edgeslm.contract.formats import register as register_format_row
from edgeslm.contract.tasks import TaskRow
from edgeslm.errors import CheckFailed, ConfigError
from edgeslm.formats import FormatUnit, format_unit, register_format
from edgeslm.formats.base import Exported, ExportResult
from edgeslm.passes import PassContext, register_pass
from edgeslm.pipeline import build, plan
from edgeslm.tasks import register_task
from edgeslm.tasks.base import ManifestBody, TaskBuild, TaskUnit

TEXTS = ["Edge devices run small models.", "A second, somewhat longer text about deployment to a board."]


# -- a format: TorchScript (.ts), traced on the host and run by torch.jit ----------------------------------
class TorchScriptExporter:
    format, suffix = "torchscript", ".ts"

    def export(self, ectx) -> ExportResult:
        import torch

        sample = {k: torch.from_numpy(v) for k, v in ectx.example_inputs().items()}
        with torch.no_grad():
            traced = torch.jit.trace(ectx.module(), example_kwarg_inputs=sample, strict=False)
        traced.save(str(ectx.workdir / "model.ts"))
        return ExportResult(file="model.ts", runtime="torch.jit", precision="fp32", export={"traced": True})

    def runner(self, path: Path, threads: int, quantization: dict | None = None):
        import torch

        module = torch.jit.load(str(path))

        def run(inputs):
            with torch.no_grad():
                return module(**{k: torch.from_numpy(v) for k, v in inputs.items()}).numpy()
        return run


class TorchScriptFormat(FormatUnit):
    name = "torchscript"

    def exporter(self):
        return TorchScriptExporter()


# -- a pass: scale the token vectors --------------------------------------------------------------------
class ScaleTokensConfig(PassConfig):
    type: Literal["scale-tokens-test"] = "scale-tokens-test"
    factor: float = 2.0
    compresses: ClassVar[bool] = True  # (a stand-in for a compression: judged against the model before it)


# -- a task: the L2 norm of every token's last hidden state -------------------------------------------------
class TokenNorms:
    """The loaded model as the passes and the format see it: `module` (what is exported), `tokenize`."""

    def __init__(self, hf, tokenizer):
        import torch

        class Norms(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner, self.scale = inner, torch.nn.Parameter(torch.ones(()), requires_grad=False)

            def forward(self, input_ids, attention_mask):
                h = self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                return torch.linalg.vector_norm(h * self.scale, dim=-1)

        self.module, self.tokenizer = Norms(hf).eval(), tokenizer
        self.input_names = ("input_ids", "attention_mask")

    def tokenize(self, texts, max_len, min_len=0):
        enc = self.tokenizer(list(texts), padding="max_length" if min_len else "longest", truncation=True,
                             max_length=max_len, return_tensors="np")
        return {k: enc[k].astype(np.int64) for k in self.input_names}


@register_pass(ScaleTokensConfig)
def scale_tokens(ctx, cfg: ScaleTokensConfig) -> dict:
    import torch

    with torch.no_grad():
        ctx.model.module.scale.fill_(cfg.factor)
    return {"factor": cfg.factor}


class TokenNormsBuild(TaskBuild):
    def load(self):
        from transformers import AutoModel, AutoTokenizer

        b = self.b
        with b.log.step("load model"):
            tok = AutoTokenizer.from_pretrained(str(b.source.folder))
            self.model = TokenNorms(AutoModel.from_pretrained(str(b.source.folder)).eval(), tok)
            tok.save_pretrained(str(b.work / "tokenizer"))
        self.sample = self.model.tokenize(TEXTS, b.recipe.inputs.max_seq_len)
        return PassContext(model=self.model, recipe=b.recipe, datasets=lambda name: None, calibration=list,
                           step=b.log.step)

    def eager(self):
        import torch

        with torch.no_grad():
            return self.model.module(**{k: torch.from_numpy(v) for k, v in self.sample.items()}).numpy()

    def before_compression(self, pctx):
        self.before = self.eager()

    def after_passes(self, pctx):
        self.reference = self.eager()

    def export(self, fmt, pctx) -> Exported:
        from edgeslm.formats.base import ExportContext

        b = self.b
        exporter = format_unit(fmt).exporter()
        ectx = ExportContext(loaded=self.model, recipe=b.recipe, target=b.target, workdir=b.work,
                             calibration=list, step=b.log.step, plan=pctx.plan)
        result = exporter.export(ectx)
        return Exported(result=result, session=lambda: exporter.runner(b.work / result.file, threads=1))

    def judge(self, fmt, exported, pctx) -> Artifact:
        out = exported.session()(self.sample)

        def verdict(against, limit):
            err = float(np.abs(out - against).max())
            ok = err <= limit
            return Verification(passed=ok, samples=len(TEXTS), seq_lens=[out.shape[1]], runtime=exported.result.runtime,
                                metrics=[Metric(name="max_abs_error", value=err, threshold=limit, kind="max", passed=ok)])

        r = exported.result
        return Artifact(name=fmt, format=fmt, file=r.file, runtime=r.runtime, precision=r.precision,
                        export=r.export, verification=verdict(self.reference, 1e-4),
                        compression=verdict(self.before, float("inf")))

    def finish(self, artifacts, pctx) -> ManifestBody:
        np.savez_compressed(self.b.work / ref.FILE, **{ref.sample_input(0, k): v for k, v in self.sample.items()},
                            **{ref.eager_output(0, "norms"): self.reference})
        return ManifestBody(model={"model_type": "bert"},
                            inputs=[TensorSpec(name=n, dtype="int64", axes=["batch", "sequence"])
                                    for n in self.model.input_names],
                            outputs=[TensorSpec(name="norms", dtype="float32", axes=["batch", "sequence"])],
                            shapes={"max_seq_len": self.b.recipe.inputs.max_seq_len, "batch_size": len(TEXTS)},
                            reference={"file": ref.FILE, "samples": 1})


class TokenNormsTask(TaskUnit):
    target_independent = True

    def build(self, bctx):
        return TokenNormsBuild(bctx)


@pytest.fixture(scope="module")
def registered():
    register_format_row(FormatRow("torchscript", ".ts", "torch", "python3 -m pip install torch"))
    register_format(TorchScriptFormat())
    register_task(TaskRow("token-norms", "the L2 norm of every token's last hidden state", "norms",
                          ("batch", "sequence"), ("max_abs_error",), frozenset(), "token-norms takes no quantization",
                          frozenset({"bert"})), TokenNormsTask)


def recipe_file(tmp_path: Path, source: Path, passes: str = "", formats: str = '["torchscript"]') -> Path:
    (tmp_path / "ts.toml").write_text(
        'name = "ts"\ndescription = "host, with TorchScript"\narch = "auto"\ndetect = true\nformats = ["torchscript", "onnx"]\nthreads = 0\n'
        '[quantization]\npreset = "auto"\n')
    path = tmp_path / "norms.toml"
    path.write_text(f'name = "norms"\ntargets = ["host"]\n[model]\nsource = "{source}"\ntask = "token-norms"\n'
                    f'[inputs]\nmax_seq_len = 16\n[export]\nformats = {formats}\n{passes}')
    return path


def test_a_task_a_pass_and_a_format_registered_here_build_through_the_loop(tmp_path, tiny_model, registered):
    src = tiny_model("bert", "embedding")
    passes = '[[passes]]\ntype = "scale-tokens-test"\nfactor = 3.0\n'
    loaded = load_recipe(recipe_file(tmp_path, src, passes))
    target = load_target_file(tmp_path / "ts.toml")
    result = build(loaded, plan(loaded, [target])[0], tmp_path / "out")
    m = result.manifest
    assert m.status == "ok" and m.task == "token-norms" and m.passes == [{"type": "scale-tokens-test", "factor": 3.0}]
    art = m.artifact("torchscript")
    assert art.file == "model.ts" and art.verification.passed and (result.folder / "model.ts").is_file()
    # the loop's judge: the file against the model the passes left (3x), and against the model before them
    loss = art.compression.metrics[0].value
    stored = np.load(result.folder / ref.FILE)[ref.eager_output(0, "norms")]
    assert loss == pytest.approx(float(np.abs(stored - stored / 3).max()), rel=1e-4) and loss > 0.1
    assert {f.role for f in m.files} >= {"model", "reference", "tokenizer"}
    # the same build again comes from the cache
    again = build(loaded, plan(loaded, [target])[0], tmp_path / "out")
    assert again.cached


def test_the_loop_fails_a_broken_artifact_of_a_registered_format(tmp_path, tiny_model, registered, monkeypatch):
    src = tiny_model("bert", "embedding")
    loaded = load_recipe(recipe_file(tmp_path, src))
    target = load_target_file(tmp_path / "ts.toml")
    real = TorchScriptExporter.runner

    def broken(self, path, threads, quantization=None):
        run = real(self, path, threads, quantization)
        return lambda inputs: run(inputs) * 1.01
    monkeypatch.setattr(TorchScriptExporter, "runner", broken)
    with pytest.raises(CheckFailed, match="verification failed"):
        build(loaded, plan(loaded, [target])[0], tmp_path / "out")


def test_registered_names_are_checked_like_built_in_ones(tmp_path, tiny_model, registered):
    src = tiny_model("bert", "embedding")
    with pytest.raises(ConfigError, match="token-norm"):  # near miss named
        load_recipe(_with(tmp_path, src, task="token-norm"))
    loaded = load_recipe(recipe_file(tmp_path, src, formats='["torchscript"]'))
    host = load_target_file(Path(__file__).resolve().parents[1] / "targets" / "host.toml")
    with pytest.raises(ConfigError, match="cannot run torchscript"):
        plan(loaded, [host])


def _with(tmp_path: Path, source: Path, task: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(f'name = "bad"\ntargets = ["host"]\n[model]\nsource = "{source}"\ntask = "{task}"\n'
                    '[export]\nformats = ["torchscript"]\n')
    return path
