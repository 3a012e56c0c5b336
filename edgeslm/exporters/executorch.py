"""ExecuTorch exporter: torch.export (dynamic sequence) -> [PT2E int8] -> XNNPACK lowering -> .pte."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from edgeslm.exporters import ExportContext, ExportResult, Inputs, precision_of

FILE = "model.pte"


def _ensure_flatc() -> None:
    if os.environ.get("FLATC_EXECUTABLE"):
        return
    import importlib.util

    spec = importlib.util.find_spec("executorch")
    if spec is None or not spec.submodule_search_locations:
        return
    candidate = Path(list(spec.submodule_search_locations)[0]) / "data" / "bin" / "flatc"
    if candidate.exists():
        os.environ["FLATC_EXECUTABLE"] = str(candidate)


class ExecuTorchExporter:
    format = "executorch"
    suffix = ".pte"

    def export(self, ctx: ExportContext) -> ExportResult:
        import torch

        _ensure_flatc()
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        shapes = ctx.recipe.inputs
        dynamic = ctx.recipe.export.executorch.dynamic_seq
        names = list(ctx.loaded.input_names)
        seq_len = shapes.max_seq_len if not dynamic else min(16, shapes.max_seq_len)
        example = {k: torch.from_numpy(v) for k, v in ctx.example_inputs(seq_len).items()}
        dyn = None
        if dynamic:
            seq = torch.export.Dim("sequence", min=shapes.min_seq_len, max=shapes.max_seq_len)
            dyn = {n: {1: seq} for n in names}
        module = ctx.loaded.module
        quant_facts = None
        with ctx.step("executorch: torch.export"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exported = torch.export.export(module, args=(), kwargs=example, dynamic_shapes=dyn, strict=False)
        if ctx.quant is not None:
            from edgeslm.exporters.executorch_quant import quantize_pt2e

            with ctx.step(f"executorch: quantize ({ctx.quant.method})"):
                exported, quant_facts = quantize_pt2e(exported, example, dyn, ctx)
        with ctx.step("executorch: lower to XNNPACK"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
            delegation = delegation_stats(edge)
            program = edge.to_executorch()
        (ctx.workdir / FILE).write_bytes(program.buffer)
        facts = {"backend": "xnnpack", "dynamic_seq": dynamic,
                 "seq_len": [shapes.min_seq_len, shapes.max_seq_len] if dynamic else [shapes.max_seq_len] * 2,
                 "batch_size": shapes.batch_size, "delegation": delegation}
        return ExportResult(file=FILE, runtime="executorch/xnnpack", precision=precision_of(ctx.quant),
                            quantization=quant_facts, export=facts)

    def runner(self, path: Path, threads: int):
        from executorch.runtime import Runtime

        import torch

        method = Runtime.get().load_program(str(path)).load_method("forward")

        def run(inputs: Inputs) -> np.ndarray:
            out = method.execute([torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()])
            return out[0].numpy().copy()

        return run


def delegation_stats(edge) -> dict:
    """How many operators XNNPACK took, and which stayed on the portable CPU kernels."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(edge.exported_program().graph_module)
    non = {}
    for op, row in info.delegation_by_operator.items():
        if row.non_delegated > 0:
            non[op] = row.non_delegated
    return {"delegated_ops": info.num_delegated_nodes, "non_delegated_ops": info.num_non_delegated_nodes,
            "delegate_calls": info.num_delegated_subgraphs, "non_delegated_by_op": non}
