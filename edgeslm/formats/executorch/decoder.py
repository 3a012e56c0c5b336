"""A transformers causal LM as an ExecuTorch decoder with a KV cache, on ExecuTorch's fast path.

The model stays transformers' own code (so each family's details hold: Phi-3's RoPE scaling, Gemma 2's
soft-capping and scaled embeddings, Qwen2's QKV bias, tied embeddings); only two things are swapped,
as optimum-executorch does with `--use_custom_sdpa --use_custom_kv_cache`:
- attention runs as `llama::custom_sdpa` (causal from the start position, grouped-query heads), or, where
  the family soft-caps attention logits (Gemma 2), as explicit matmuls with the cap;
- the cache is one [1, context, kv_heads, head_dim] buffer pair per layer updated by `llama::update_cache`.

The program: `forward(tokens int64[1, n], start_pos int64[1]) -> logits float32[1, vocab]` (the last
position's logits), 1 <= n, start_pos + n <= context. The device runner and edgeslm's shim run it
without torch; their kernels for the two llama ops are edgeslm's (native/src/edgeslm_et.cpp).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

ATTENTION = "edgeslm_custom_sdpa"
FILE = "model.pte"


def _register() -> None:
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401 - registers torch.ops.llama.*
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTENTION, _attention)
    # the attention builds its own causal structure from the start position: no mask tensors in the graph
    AttentionMaskInterface.register(ATTENTION, lambda *args, **kwargs: None)


def _attention(module, query, key, value, attention_mask, scaling=None, softcap=None, position_ids=None,
               sliding_window=None, **kwargs):
    """query [B, H, n, D]; key/value [B, Hkv, context, D] (the whole cache). Returns [B, n, H, D].

    `llama::custom_sdpa` (causal from the start position) where it computes what the layer does; explicit
    matmuls where the layer soft-caps its logits (Gemma 2) or only sees a sliding window of the context
    shorter than the cache (Gemma 2/3, Mistral, SmolLM3's sliding layers): position i then attends to the
    positions j with i - window < j <= i, as transformers masks them."""
    import torch

    start = position_ids[0][0].item()
    n, context = query.shape[2], key.shape[2]
    windowed = sliding_window is not None and context > sliding_window
    if softcap is None and not windowed:
        q, k, v = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
        out = torch.ops.llama.custom_sdpa(q, k, v, start, None, 0.0, True, scaling)
        return out, None
    groups = query.shape[1] // key.shape[1]
    kk = key.repeat_interleave(groups, dim=1)
    vv = value.repeat_interleave(groups, dim=1)
    scores = torch.matmul(query, kk.transpose(2, 3)) * (scaling if scaling is not None else query.shape[-1] ** -0.5)
    if softcap is not None:  # tanh(s / cap) * cap before the causal softmax
        scores = torch.tanh(scores / softcap) * softcap
    rows = torch.arange(n).unsqueeze(1) + start
    cols = torch.arange(context).unsqueeze(0)
    hidden = cols > rows
    if windowed:
        hidden = hidden | (cols <= rows - sliding_window)
    scores = scores.masked_fill(hidden, float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1), vv)
    return out.transpose(1, 2), None


@dataclass(frozen=True)
class DecoderShape:
    layers: int
    kv_heads: int
    head_dim: int
    vocab: int
    context: int

    @property
    def kv_cache_bytes(self) -> int:
        """fp32 keys and values for every layer at the full context."""
        return 2 * self.layers * self.context * self.kv_heads * self.head_dim * 4


def decoder_shape(config, context: int) -> DecoderShape:
    cfg = config.get_text_config()
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return DecoderShape(layers=cfg.num_hidden_layers, kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
                        head_dim=head_dim, vocab=cfg.vocab_size, context=context)


def make_decoder(model, context: int):
    """Wrap `model` (a transformers *ForCausalLM in fp32, eval mode) for export. Mutates its config's
    attention implementation."""
    import torch
    from executorch.examples.models.llama.source_transformation.custom_kv_cache import CustomKVCache
    from transformers.cache_utils import Cache, StaticLayer

    from edgeslm.formats.executorch.delegable import rotate_half_as_linear, rotation, swap_norms

    _register()
    shape = decoder_shape(model.config, context)
    model.config._attn_implementation = ATTENTION
    text = model.config.get_text_config()
    text._attn_implementation = ATTENTION
    swap_norms(model)  # RMSNorm and RoPE in ops XNNPACK delegates: fewer cuts between delegate calls
    # not RoPE where attention is explicit matmuls (Gemma 2's soft-capping, a sliding window shorter than the
    # cache): there XNNPACK's partitioner formed a partition with a dependency cycle and lowering failed
    window = getattr(text, "sliding_window", None)
    rope = not getattr(text, "attn_logit_softcapping", None) and not (window and context > window)

    class Layer(StaticLayer):
        def __init__(self, store: CustomKVCache, owner):
            super().__init__(context)
            self.store, self.owner, self.is_initialized = store, owner, True

        def update(self, key_states, value_states, *args, **kwargs):
            return self.store.update(input_pos=self.owner.positions, k_val=key_states, v_val=value_states)

        def get_seq_length(self):
            return 0

    class KV(Cache):
        def __init__(self, stores):
            self.positions = None
            super().__init__(layers=[Layer(s, self) for s in stores])

    class Decoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.stores = torch.nn.ModuleList(
                CustomKVCache(1, context, shape.kv_heads, shape.head_dim, dtype=torch.float32)
                for _ in range(shape.layers))
            self.cache = KV(self.stores)
            self.register_buffer("rope_rotation", rotation(shape.head_dim), persistent=False)

        def forward(self, tokens, start_pos):
            n = tokens.shape[1]
            positions = torch.arange(n, dtype=torch.long) + start_pos[0]
            self.cache.positions = positions
            with rotate_half_as_linear(self.model, self) if rope else contextlib.nullcontext():
                out = self.model(input_ids=tokens, position_ids=positions.unsqueeze(0), cache=self.cache,
                                 use_cache=True, logits_to_keep=1)
            return out.logits[:, -1, :]

        def reset(self):
            for s in self.stores:
                s.k_cache.zero_()
                s.v_cache.zero_()

    return Decoder().eval(), shape


def quantize_decoder(decoder, weights: str, group_size: int, embeddings: bool, grids: dict | None = None) -> dict:
    """torchao: '8da4w' (int4 weights in groups, int8 dynamic activations per token), '8da8w', or 'int8-wo'
    (int8 weight-only per channel); embeddings int8 per row. Linear layers whose input size is not a
    multiple of the group stay float. `grids` (8da4w, groups of 32; gguf_grid.module_grids): a GGUF's own
    Q4_0 / Q4_1 / Q8_0 integers and scales replace torchao's rounding where they fit (a Q8_0 embedding table
    too). Returns facts."""
    import torch
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup

    linears = [(n, m) for n, m in decoder.named_modules() if isinstance(m, torch.nn.Linear)]
    facts: dict = {"weights": weights, "linear": len(linears)}
    if weights in ("8da4w", "8da8w"):
        swapped = []
        if grids:  # a GGUF's Q4_1 / Q8_0 blocks (and its head) become gguf_linear first: torchao skips them
            from edgeslm.formats.executorch.carry import swap_gguf_linears

            swapped = swap_gguf_linears(decoder, grids)
            linears = [(n, m) for n, m in decoder.named_modules() if isinstance(m, torch.nn.Linear)]
        gran = PerGroup(group_size) if group_size else PerAxis(0)
        kept = [n for n, m in linears if group_size and m.weight.shape[1] % group_size]
        # the output layer (the vocabulary projection, often tied to the embeddings) keeps 8-bit weights
        # under 8da4w, as llama.cpp's Q4 files keep it in Q8_0: measured on SmolLM2-135M (160 tokens of
        # held text), int4 there costs +60% perplexity against +35% with it in int8
        head = [n for n, m in linears if n.endswith("lm_head")] if weights == "8da4w" else []
        cfg = Int8DynamicActivationIntxWeightConfig(
            weight_dtype=torch.int4 if weights == "8da4w" else torch.int8, weight_granularity=gran)
        quantize_(decoder, cfg, filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and fqn not in kept
                  and fqn not in head)
        if head:
            quantize_(decoder, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8,
                                                                     weight_granularity=PerAxis(0)),
                      filter_fn=lambda m, fqn: fqn in head)
        facts.update(group_size=group_size, kept_float=kept, output_layer_int8=head,
                     activations="int8 dynamic, per token, asymmetric")
        if grids:
            from edgeslm.formats.executorch.carry import carry_into_torchao

            facts["gguf_grid_carried"] = swapped + carry_into_torchao(decoder, grids)
            facts["gguf_linear"] = swapped
    elif weights == "int8-wo":
        quantize_(decoder, IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0)),
                  filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear))
        facts.update(group_size=0, activations="float")
    elif weights != "fp32":
        raise ValueError(f"unknown weight scheme {weights!r}")
    if embeddings:
        # ExecuTorch's own handler: nn.Embedding -> quantized_decomposed::embedding_byte (int8 rows, one
        # scale each), a kernel ExecuTorch ships (torchao's layout would leave dequantize_affine, which
        # has no ExecuTorch kernel)
        from executorch.examples.models.llama.source_transformation.quantize import (
            get_quant_embedding_transform)

        embeds = [n for n, m in decoder.named_modules() if isinstance(m, torch.nn.Embedding)]
        grid = (grids or {}).get("embed_tokens")
        group = 32 if grid is not None and grid["type"] == "Q8_0" else 0
        get_quant_embedding_transform(f"8,{group}", quantize_with_hqq=False)(decoder)
        facts["embeddings"] = {"int8_per_row": embeds, "kernel": "quantized_decomposed::embedding_byte"}
        if group:  # a GGUF's Q8_0 table as it is: int8 with a fp16 scale per block of 32
            from edgeslm.formats.executorch.carry import carry_embedding

            facts["embeddings"] = {"int8_per_block": embeds, "block": group,
                                   "grid": "GGUF Q8_0" if carry_embedding(decoder, grid) else "rounded from the floats",
                                   "kernel": "quantized_decomposed::embedding_byte"}
    return facts


def export_program(decoder, shape: DecoderShape, max_prompt: int, xnnpack: bool = True, progress=None):
    """torch.export with a dynamic token count (1..max_prompt), lowered to XNNPACK. Returns
    (ExecutorchProgramManager, facts). `progress(line)` hears each stage as it ends, with its time (a 1B model
    spends minutes in each)."""
    import time

    import torch
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower
    from executorch.extension.llm.export.export_passes import RemoveRedundantTransposes

    max_prompt = max(2, min(max_prompt, shape.context - 1))
    example = (torch.zeros((1, 3), dtype=torch.long), torch.tensor([0], dtype=torch.long))
    dims = ({1: torch.export.Dim("tokens", min=1, max=max_prompt)}, None)
    t0 = time.perf_counter()

    def done(stage: str) -> None:
        nonlocal t0
        if progress is not None:
            progress(f"{stage}: {time.perf_counter() - t0:.0f} s")
        t0 = time.perf_counter()

    with torch.no_grad():
        ep = torch.export.export(decoder, example, dynamic_shapes=dims, strict=False)
        gm = RemoveRedundantTransposes()(ep.module())[0]
        ep = torch.export.export(gm, example, dynamic_shapes=dims, strict=False)
    done(f"torch.export (1..{max_prompt} tokens)")
    partitioners = []
    if xnnpack:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        partitioners = [XnnpackPartitioner()]
    edge = to_edge_transform_and_lower(ep, partitioner=partitioners,
                                       compile_config=EdgeCompileConfig(_check_ir_validity=False))
    from edgeslm.formats.executorch.encoder import delegation_stats

    delegation = delegation_stats(edge.exported_program().graph_module)
    done(f"XNNPACK partition and lowering ({delegation['delegated_ops']} ops delegated, "
         f"{delegation['non_delegated_ops']} left to edgeslm's and ExecuTorch's kernels)")
    program = edge.to_executorch()
    done("ExecuTorch program (memory planning)")
    return program, {"max_prompt_tokens": max_prompt, "context": shape.context, "delegation": delegation}


def eager_step(decoder):
    import torch

    def step(tokens, start):
        with torch.no_grad():
            out = decoder(torch.tensor([tokens], dtype=torch.long), torch.tensor([start], dtype=torch.long))
        return out[0].float().numpy()

    return step


def pte_step(path: Path, native: bool = False):
    """The .pte on the build host: the device runner's ExecuTorch session over the official runtime with
    executorch's llama kernels and XNNPACK, or (`native`: programs with edgeslm's own operators) over the
    runtime folder the device gets, built for this machine."""
    import platform

    from edgeslm.runner.runtimes import ExecuTorchRuntime

    folder = None
    if native:
        from edgeslm.native.runtime_folder import runtime_folder

        folder = str(runtime_folder(platform.machine()))
    return ExecuTorchRuntime(folder, from_env=False).decoder(str(path), 0)


@contextlib.contextmanager
def quiet_native():
    """ExecuTorch's C++ runtime and its llama kernels log every call on fd 2 ("No temp allocator
    provided") and its embedding quantizer prints on fd 1: keep both off the user's terminal. What they
    wrote is kept and shown when the block raises."""
    import sys
    import tempfile

    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            sink.seek(0)
            tail = sink.read().decode(errors="replace").strip().splitlines()[-20:]
            if tail:
                print("\n".join(tail), file=sys.stderr)
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def export_decoder(work: Path, model, tokenizer, g, quant, log, log_file: Path, probe):
    """model.pte: transformers' model with the llama attention and cache ops, quantized by torchao (from a GGUF
    source under 8da4w, with the file's own Q4_0 / Q4_1 / Q8_0 grid where it fits), lowered to XNNPACK; its
    session is ExecuTorch's own runtime (the device runner's). `quant`: the quantize pass's plan
    (passes.decoder_quant.DecoderQuantPlan) or None; `probe(step)`: the task's probe of the eager decoder after
    quantization (what the file was exported from). Rewires and quantizes `model` in place (build it last).
    Returns tasks.base.Exported."""
    from edgeslm.formats.base import Exported, ExportResult
    from edgeslm.models.gguf_grid import BLOCK, carried_precision, grid_facts, grid_origin, grid_words

    q = quant.config if quant is not None else None
    grids, skipped = (quant.carried if quant is not None else None) or (None, {})
    group = BLOCK if grids else (q.group_size if q is not None else 0)
    with log.step("executorch: wrap with KV cache"):
        decoder, shape = make_decoder(model, g.max_context)
    qfacts, own_ops, carried = None, [], []
    if q is not None:
        with log.step(f"executorch: quantize ({q.method})"):
            scheme = {"8da4w": "8da4w", "8da8w": "8da8w", "int8-weight-only": "int8-wo"}[q.method]
            with quiet_native():
                qfacts = quantize_decoder(decoder, scheme, group, q.embeddings, grids)
        if grids is not None:
            done, own_ops = qfacts.pop("gguf_grid_carried", []), qfacts.pop("gguf_linear", [])
            carried = done
            kinds = "/".join(sorted({grids[m]["type"] for m in own_ops}))
            qfacts["grid"] = (f"{grid_words(grids)} in {len(done)} of {qfacts['linear']} linears"
                              + (f" ({len(own_ops)} as edgeslm::gguf_linear over the file's {kinds} blocks, "
                                 "edgeslm's kernel in the device runtime)" if own_ops else "")
                              + ("; the rest rounded from the floats" if len(done) < qfacts["linear"] else ""))
            linears = {m: g for m, g in grids.items() if m != "embed_tokens"}
            qfacts["gguf_grid" if grid_origin(grids) == "GGUF" else "carried_grid"] = grid_facts(linears, done, {**skipped, **{
                m: f"{grids[m]['type']}: " + ("the output layer keeps int8 weights per channel" if m == "lm_head"
                                              else "not a linear of this model") for m in linears if m not in done}})
    with log.step("eager decoder (after the passes)"), quiet_native():
        decoder.reset()
        eager = probe(eager_step(decoder))
    with log.step("executorch: torch.export + lower to XNNPACK"), quiet_native():
        program, export_facts = export_program(decoder, shape, g.max_prompt, progress=log.progress)
        (work / FILE).write_bytes(program.buffer)
        del program
    result = ExportResult(
        file=FILE, runtime="executorch/xnnpack", quantization=qfacts,
        precision="fp32" if q is None else carried_precision(q.method, grids, carried, qfacts["linear"]),
        export={"backend": "xnnpack", "program": "forward(tokens int64[1, n], start_pos int64[1]) -> logits "
                "float32[1, vocab]", "kv_cache": {"layers": shape.layers, "kv_heads": shape.kv_heads,
                                                  "head_dim": shape.head_dim, "positions": shape.context,
                                                  "bytes": shape.kv_cache_bytes}, **export_facts})
    from edgeslm.formats.isolated import isolated_step

    return Exported(result=result, session=lambda: isolated_step("executorch", work / FILE), eager=eager,
                    against="eager PyTorch after the passes (what was exported), same calls", quiet=quiet_native,
                    facts=qfacts)
