"""ExecuTorch exporter: torch.export (dynamic sequence) -> [PT2E int8] -> XNNPACK lowering -> .pte.

What makes XNNPACK take (almost) the whole encoder, measured on MiniLM (dynamic sequence):
HF default export 35 delegate calls / 123 non-delegated compute ops, 15.7 ms at seq 128; with the
wrapper's additive 4-D mask, 3-D bmm attention (`edge_bmm`, batch 1) and the view pass below,
17 calls / 28 ops (13 of them LayerNorm, which XNNPACK 1.5 does not take), 8.1 ms.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np

from edgeslm.formats.base import ExportContext, ExportResult, precision_of

FILE = "model.pte"
_BOOKKEEPING = ("getitem", "sym_size", "sym_numel", "sym_stride", "_assert", "sym_constrain",
                "executorch_call_delegate")


def _ensure_flatc() -> None:
    """XNNPACK serialization runs `flatc`; the executorch wheel ships one."""
    if os.environ.get("FLATC_EXECUTABLE"):
        return
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
        from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

        shapes = ctx.recipe.inputs
        dynamic = ctx.recipe.export.executorch.dynamic_seq
        names = list(ctx.loaded.input_names)
        seq_len = min(16, shapes.max_seq_len) if dynamic else shapes.max_seq_len
        example = tuple(torch.from_numpy(v) for v in ctx.example_inputs(seq_len).values())
        dyn = None
        if dynamic:
            seq = torch.export.Dim("sequence", min=shapes.min_seq_len, max=shapes.max_seq_len)
            dyn = tuple({1: seq} for _ in names)
        attention = "edge_bmm" if shapes.batch_size == 1 else "eager"
        quant_facts = None
        module = ctx.module()
        with ctx.loaded.attention(attention), torch.no_grad(), _quiet():
            if ctx.quant is not None:
                from edgeslm.formats.executorch.quant import quantize_pt2e, quantize_word_embeddings

                with ctx.step(f"executorch: quantize ({ctx.quant.method})"):
                    emb_facts = {}
                    if ctx.quant.embeddings:  # before PT2E: it exports the module with the int8 lookup op
                        module, emb_facts = quantize_word_embeddings(module, ctx.loaded.hf)
                    module, quant_facts = quantize_pt2e(module, example, dyn, ctx)
                    quant_facts.update(emb_facts)
            with ctx.step("executorch: torch.export"):
                exported = torch.export.export(module, example, dynamic_shapes=dyn, strict=False)
            with ctx.step("executorch: lower to XNNPACK"):
                edge = to_edge_transform_and_lower(
                    exported, transform_passes=_transform_passes(), partitioner=[XnnpackPartitioner()],
                    compile_config=EdgeCompileConfig(_check_ir_validity=False))
                delegation = delegation_stats(edge.exported_program().graph_module)  # before to_executorch
                program = edge.to_executorch()
        (ctx.workdir / FILE).write_bytes(program.buffer)
        facts = {"backend": "xnnpack", "attention": attention, "dynamic_seq": dynamic,
                 "seq_len": [shapes.min_seq_len, shapes.max_seq_len] if dynamic else [shapes.max_seq_len] * 2,
                 "batch_size": shapes.batch_size, "input_order": names, "delegation": delegation}
        return ExportResult(file=FILE, runtime="executorch/xnnpack", precision=precision_of(ctx.quant),
                            quantization=quant_facts, export=facts)

    def runner(self, path: Path, threads: int, quantization: dict | None = None):
        """The device runner's session over ExecuTorch's official runtime (edgeslm.runner.runtimes); a copy
        of each output (the runtime may reuse its buffer on the next call)."""
        from edgeslm.runner.runtimes import ExecuTorchRuntime

        session = ExecuTorchRuntime(from_env=False).encoder(str(path), threads)
        return lambda inputs: np.array(session({k: np.ascontiguousarray(v) for k, v in inputs.items()}))


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _transform_passes():
    from executorch.backends.xnnpack._passes.remove_noop_expand_copy_pass import RemoveNoopExpandCopyPass

    return [RemoveNoopExpandCopyPass(), view_with_one_inferred_axis]


def view_with_one_inferred_axis(gm):
    """XNNPACK refuses view_copy whose target shape holds a symbolic size, which is every reshape of a
    transformer exported with a dynamic sequence axis. Pin every axis that is static in the output and
    write the single dynamic one as -1 (XNNPACK's inferred axis); views with two dynamic axes stay."""
    from executorch.exir.dialects._ops import ops as exir_ops
    from torch.fx.passes.infra.pass_base import PassResult

    changed = False
    for n in gm.graph.nodes:
        if n.op != "call_function" or n.target != exir_ops.edge.aten.view_copy.default:
            continue
        shape, out_shape = list(n.args[1]), list(n.meta["val"].shape)
        new = []
        for d, o in zip(shape, out_shape):
            if isinstance(d, int) and d != -1:
                new.append(d)
            elif isinstance(o, int) or (hasattr(o, "node") and o.node.is_constant()):
                new.append(int(o))
            else:
                new.append(None)
        if sum(d is None for d in new) == 1:
            new = [-1 if d is None else d for d in new]
            if new != shape:
                n.args = (n.args[0], new) + tuple(n.args[2:])
                changed = True
    if changed:
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return PassResult(gm, changed)


def delegation_stats(gm) -> dict:
    """Operators XNNPACK took vs those left to portable kernels (bookkeeping nodes not counted)."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(gm)
    left = collections.Counter()
    for n in gm.graph.nodes:
        if n.op == "call_function":
            name = getattr(n.target, "__name__", str(n.target))
            if not any(b in name for b in _BOOKKEEPING):
                left[_short(n.target)] += 1
    return {"delegate_calls": info.num_delegated_subgraphs, "delegated_ops": info.num_delegated_nodes,
            "non_delegated_ops": sum(left.values()), "non_delegated_by_op": dict(left.most_common())}


def _short(target) -> str:
    name = getattr(target, "_name", None) or getattr(target, "__name__", None) or str(target)
    return str(name).replace("aten::", "")
