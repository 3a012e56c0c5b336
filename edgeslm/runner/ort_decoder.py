"""A decoder ONNX (onnxruntime-genai's model builder layout: input_ids, attention_mask,
past_key_values.<i>.key|value -> logits, present.<i>.key|value, GroupQueryAttention) run by plain
onnxruntime with edgeslm's own loop. Torch-free; used on the device and by the build's verification.

The KV cache is one fixed buffer per layer and kind, [1, kv_heads, max_context, head_dim], bound as both
the past input and the present output (GroupQueryAttention then writes the new positions in place, as
onnxruntime-genai does with past_present_share_buffer): nothing is copied or reallocated per token.
"""

from __future__ import annotations

from edgeslm.runner.errors import RunnerError


class OrtDecoder:
    """step(tokens, start) -> float32 logits of the last token. `start` must be the number of positions
    already in the cache (0 starts over), as the ExecuTorch program's start_pos."""

    def __init__(self, path: str, threads: int, layers: int, kv_heads: int, head_dim: int, max_context: int,
                 ops_library: str | None = None):
        import numpy as np
        import onnxruntime as ort

        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        so.log_severity_level = 3
        if ops_library:  # edgeslm's GgufLinear (native/ort_gguf.cpp)
            try:
                so.register_custom_ops_library(ops_library)
            except Exception as exc:  # noqa: BLE001 - onnxruntime's own error types
                raise RunnerError(f"cannot load {ops_library}: {' '.join(str(exc).split())[:200]}") from None
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        inputs = {i.name for i in self.sess.get_inputs()}
        outputs = {o.name for o in self.sess.get_outputs()}
        names = [(f"past_key_values.{i}.{k}", f"present.{i}.{k}") for i in range(layers) for k in ("key", "value")]
        missing = [n for pair in names for n in pair if n not in inputs | outputs]
        missing += [n for n in ("input_ids", "attention_mask", "logits") if n not in inputs | outputs]
        if missing or len(inputs) != 2 + 2 * layers:
            raise RunnerError(f"{path}: not a decoder with a {layers}-layer KV cache (missing or extra inputs: "
                              f"{', '.join(missing[:4]) or sorted(inputs)[:6]})")
        self.max_context = max_context
        self.cache = [(past, present, ort.OrtValue.ortvalue_from_numpy(
            np.zeros((1, kv_heads, max_context, head_dim), dtype=np.float32))) for past, present in names]
        self.filled = 0
        self._np = np
        # one binding for the session's life: the cache buffers stay bound, each step rebinds its ids, mask and
        # logits (the logits first, so they stay the first output)
        self.binding = self.sess.io_binding()
        self.binding.bind_output("logits")
        for past, present, buf in self.cache:
            self.binding.bind_ortvalue_input(past, buf)
            self.binding.bind_ortvalue_output(present, buf)

    def __call__(self, tokens, start: int):
        np = self._np
        n = len(tokens)
        if start != self.filled and start != 0:
            raise RunnerError(f"decoder cache holds {self.filled} positions; a step cannot start at {start}")
        if start + n > self.max_context:
            raise RunnerError(f"{start + n} positions exceed the KV cache ({self.max_context})")
        b = self.binding
        b.bind_cpu_input("input_ids", np.asarray([tokens], dtype=np.int64))
        b.bind_cpu_input("attention_mask", np.ones((1, start + n), dtype=np.int64))
        b.bind_output("logits")
        self.sess.run_with_iobinding(b)
        self.filled = start + n
        logits = b.get_outputs()[0].numpy()
        return logits.reshape(-1, logits.shape[-1])[-1]
