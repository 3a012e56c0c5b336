"""ONNX exporter: torch.onnx (dynamo) -> onnxruntime graph optimization -> int8 -> onnxruntime session."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from edgeslm.formats.base import ExportContext, ExportResult, Inputs, precision_of
from edgeslm.formats.onnx import graph as onnx_graph
from edgeslm.formats.onnx.quant import quantize_onnx

FILE = "model.onnx"
# onnxruntime.transformers fusions per architecture (model_type -> optimizer model_type)
FUSION_TYPES = {"bert": "bert", "distilbert": "bert", "albert": "bert", "mobilebert": "bert"}


class OnnxExporter:
    format = "onnx"
    suffix = ".onnx"

    def export(self, ctx: ExportContext) -> ExportResult:
        import torch

        opts = ctx.recipe.export.onnx
        raw = ctx.workdir / "tmp-onnx" / "raw.onnx"
        raw.parent.mkdir(parents=True, exist_ok=True)
        names = list(ctx.loaded.input_names)
        example = {k: torch.from_numpy(v) for k, v in ctx.example_inputs(min(16, ctx.recipe.inputs.max_seq_len)).items()}
        batch = torch.export.Dim("batch", min=1, max=1024)
        seq = torch.export.Dim("sequence", min=ctx.recipe.inputs.min_seq_len,
                               max=ctx.recipe.inputs.max_seq_len)
        dynamic = {n: {0: batch, 1: seq} for n in names}
        with ctx.step("onnx: export"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                ctx.module(), args=(), kwargs=example, dynamo=True, opset_version=opts.opset,
                input_names=names, output_names=[ctx.loaded.output_name], dynamic_shapes=dynamic,
                external_data=False, verbose=False, optimize=True)
            program.save(str(raw), external_data=False)

        facts: dict = {"opset": opts.opset, "exporter": "torch.onnx dynamo",
                       "dynamic_axes": {"batch": [1, None], "sequence": [seq.min, seq.max]}}
        with ctx.step(f"onnx: optimize ({opts.optimize})"):
            optimized, how = optimize(raw, ctx.workdir / "tmp-onnx" / "opt.onnx", opts.optimize,
                                      ctx.loaded.model_type)
        facts["optimization"] = how
        final = ctx.workdir / FILE
        quant_facts = None
        if ctx.quant is not None:
            with ctx.step(f"onnx: quantize ({ctx.quant.method})"):
                quant_facts = quantize_onnx(optimized, final, ctx)
        else:
            os.replace(optimized, final)
        facts["deduplicated_initializers"] = deduplicate(final)
        facts["build_metadata_removed"] = onnx_graph.strip_file(final)  # no host paths: same bytes anywhere
        facts["nodes"] = _op_histogram(final)
        facts["opset"] = _opset(final)
        import shutil

        shutil.rmtree(ctx.workdir / "tmp-onnx", ignore_errors=True)
        return ExportResult(file=FILE, runtime="onnxruntime", precision=precision_of(ctx.quant),
                            quantization=quant_facts, export=facts)

    def runner(self, path: Path, threads: int, quantization: dict | None = None):
        """The device's own onnxruntime session (edgeslm.runner.runtimes), unless this host's int8 kernels
        would not compute the artifact as its target does."""
        from edgeslm.runner.runtimes import OnnxRuntime

        why = host_saturates(quantization)
        if why is not None:
            return exact_integer_runner(path, why)
        return OnnxRuntime().encoder(str(path), threads)


def host_saturates(quantization: dict | None) -> str | None:
    """Why this host's onnxruntime would not compute the artifact's int8 matmuls as its target does, or None.

    On x86 without VNNI, onnxruntime multiplies u8 activations by s8 weights with vpmaddubsw, whose
    int16 sums of two products saturate when the weights use the full 8-bit range (presets arm-s8s8
    and x86-u8s8); ARM kernels and VNNI (vpdpbusd) accumulate in int32 and do not. Verifying an
    ARM-preset artifact with this host's kernels would judge the host, not the device."""
    import platform

    from edgeslm.config.target import PRESETS, VNNI
    from edgeslm.runner.facts import cpu_features

    if not quantization or platform.machine().lower() not in ("x86_64", "amd64", "i686"):
        return None
    preset = PRESETS.get(quantization.get("preset", ""))
    if preset is None or preset["weight"] != "s8" or preset["reduce_range"]:
        return None
    if VNNI & set(cpu_features()):
        return None
    return (f"int8 checked with exact int32 products (onnx reference evaluator): this host's onnxruntime "
            f"(x86 without VNNI) saturates u8 x s8 products of preset {quantization['preset']}; "
            f"the target's kernels do not")


def exact_integer_runner(path: Path, note: str):
    """Run `path` with onnx's reference evaluator, integer matmuls exact (float64 holds any int8 dot
    product of these sizes exactly), floats in numpy: what a non-saturating int8 kernel computes."""
    import onnx
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    class MatMulInteger(OpRun):
        def _run(self, A, B, a_zero_point=None, b_zero_point=None):  # noqa: N803 (ONNX input names)
            a = A.astype(np.float64) - (0.0 if a_zero_point is None else a_zero_point.astype(np.float64))
            b = B.astype(np.float64) - (0.0 if b_zero_point is None else b_zero_point.astype(np.float64))
            return (np.matmul(a, b).astype(np.int32),)

    model = onnx.load(str(path))
    evaluator = ReferenceEvaluator(model, new_ops=[MatMulInteger])
    names = {i.name for i in model.graph.input}

    def run(inputs: Inputs) -> np.ndarray:
        return np.asarray(evaluator.run(None, {k: v for k, v in inputs.items() if k in names})[0], dtype=np.float32)

    run.note = note
    return run


def optimize(src: Path, dst: Path, level: str, model_type: str) -> tuple[Path, dict]:
    """Bake graph optimizations into the file; returns the file to use and what was done."""
    import onnxruntime as ort

    if level == "none":
        return src, {"level": "none (onnxruntime optimizes at load)"}
    if level == "transformer" and model_type in FUSION_TYPES:
        from onnxruntime.transformers.optimizer import optimize_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = optimize_model(str(src), model_type=FUSION_TYPES[model_type], num_heads=0,
                                 hidden_size=0, opt_level=0)
        fused = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
        opt.save_model_to_file(str(dst))
        return dst, {"level": "transformer", "fused": fused}
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(dst)
    so.log_severity_level = 3
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    return dst, {"level": "extended"}


def deduplicate(path: Path) -> dict:
    """Store identical weights once. Layers that share weights (ALBERT's one layer group, tied heads)
    come out of export and quantization as separate copies of the same tensor; exact byte comparison
    after a hash, so nothing that differs is merged."""
    import onnx_ir as ir
    from onnx_ir.passes.common import DeduplicateHashedInitializersPass

    before = path.stat().st_size
    model = ir.load(str(path))
    n = len(model.graph.initializers)
    if not DeduplicateHashedInitializersPass()(model).modified:
        return {"removed": 0, "bytes_saved": 0}
    tmp = path.with_suffix(".dedup.onnx")
    ir.save(model, str(tmp))
    os.replace(tmp, path)
    return {"removed": n - len(model.graph.initializers), "bytes_saved": before - path.stat().st_size}


def _op_histogram(path: Path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    counts: dict[str, int] = {}
    for n in model.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
