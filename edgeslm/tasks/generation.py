"""text-generation: a decoder with a KV cache, prompt in one call then one token per call. Its part of the build
is tasks/generation_build.py, its device loop edgeslm.runner.generation."""

from __future__ import annotations

from edgeslm.contract import artifact_size
from edgeslm.tasks.base import TaskUnit

RUNTIME_RAM = 48 << 20  # the runner, numpy and the ExecuTorch libraries, measured ~40 MiB on x86_64 and aarch64
RUNTIME_DISK = 20 << 20  # the runtime folder (~14-18 MB)


class GenerationTask(TaskUnit):
    # prompts per length: each is a whole prefill (a 512-token one takes seconds on a Pi, minutes emulated),
    # and decode speed comes from the steps of one generation anyway
    repeats = (5, 1)
    generates = True
    # neither exporter consults the target: the .pte's XNNPACK and onnxruntime's MatMulNBits choose their
    # kernels on the device, so the shipped SmolLM2 recipe lowers its .pte once, not once per target
    target_independent = True

    def build(self, bctx):
        from edgeslm.tasks.generation_build import GenerationBuild

        return GenerationBuild(bctx)

    def profile_args(self, new_tokens: int, prompt_lengths: tuple | None = None) -> list[str]:
        lengths = ["--prompt-lengths", ",".join(map(str, prompt_lengths))] if prompt_lengths else []
        return ["--new-tokens", str(new_tokens), *lengths]

    def fit_problem(self, probe: dict, manifest) -> str | None:
        """Why a decoder build would not fit the device's memory or disk (weights + KV cache at the recipe's
        max context + runtime; files + runtime folder), with the figures; None when it fits."""
        mb = lambda n: f"{n / (1 << 20):.0f} MiB"  # noqa: E731
        for a in manifest.artifacts:
            weights = artifact_size(manifest.files, a.file) or 0
            kv = int((a.export or {}).get("kv_cache", {}).get("bytes", 0))
            # the build measured the runtime's peak while verifying (onnxruntime keeps packed copies of the weights:
            # Llama-3.2-1B-shaped int4 ONNX, 806 MB of weights, peaked at 1382 MB); the sum of the parts when not
            measured = (a.export or {}).get("verify_peak_rss_kb")
            measured = measured * 1024 if isinstance(measured, int) and not isinstance(measured, bool) else 0
            need = max(weights + kv + RUNTIME_RAM, measured)
            avail = probe.get("mem_available_kb")
            if isinstance(avail, int) and need > avail * 1024:
                positions = (a.export or {}).get("kv_cache", {}).get("positions")
                how = (f"measured on the build host: {mb(measured)}; " if measured >= weights + kv + RUNTIME_RAM
                       else "")
                return (f"{a.name} needs ~{mb(need)} of RAM ({how}weights {mb(weights)} + KV cache {mb(kv)} at "
                        f"{positions} positions + runtime ~{mb(RUNTIME_RAM)}), the device has {mb(avail * 1024)} "
                        f"available (of {mb((probe.get('mem_total_kb') or 0) * 1024)}); lower "
                        "generation.max_context or quantize the weights")
        disk = probe.get("disk") or {}
        files = sum(f.size for f in manifest.files) + RUNTIME_DISK
        free = disk.get("free_bytes")
        if isinstance(free, int) and files > free:
            return (f"its files and runtime need ~{mb(files)} of disk, {disk.get('path')} has {mb(free)} free; "
                    "free space there or set another workdir")
        return None

    def report_fields(self, result) -> dict | None:
        """Decoders: time to first token per prompt length, decode tok/s (median, p10-p90), the check."""
        g = result.generation
        if g is None:
            return None
        return {"ttft_ms": {str(t.prompt_tokens): t.ttft_ms.p50 for t in g.ttft},
                "prefill_tok_s": {str(t.prompt_tokens): t.prefill_tok_s for t in g.ttft},
                "decode_tok_s": g.decode.tok_s, "decode_tok_s_p10_p90": g.decode.tok_s_p10_p90,
                "perplexity_increase": result.parity.perplexity_increase,
                "top5_agreement": result.parity.top5_agreement}
