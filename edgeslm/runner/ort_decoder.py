"""A decoder ONNX (onnxruntime-genai's model builder layout: input_ids, attention_mask,
past_key_values.<i>.key|value -> logits, present.<i>.key|value, GroupQueryAttention) run by plain
onnxruntime with edgeslm's own loop. Torch-free; used on the device and by the build's verification.

The KV cache is one fixed buffer per layer and kind, [1, kv_heads, max_context, head_dim], bound as both
the past input and the present output (GroupQueryAttention then writes the new positions in place, as
onnxruntime-genai does with past_present_share_buffer): nothing is copied or reallocated per token.
"""

from __future__ import annotations

import os

from edgeslm.runner.errors import RunnerError


def busy_cores(seconds: float = 0.1) -> float | None:
    """How many cores other processes kept busy over `seconds` (this one sleeps meanwhile), from /proc/stat;
    None where it cannot be read."""
    import time

    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + (v[4] if len(v) > 4 else 0)  # total, idle + iowait

    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    cores = os.cpu_count() or 1
    return cores * (1 - (i1 - i0) / (t1 - t0)) if t1 > t0 else 0.0


def spin_policy(threads: int, forced: str | None = None) -> tuple[bool, str]:
    """Whether onnxruntime's idle intra-op threads spin-wait for work (its default) or sleep, and why.

    Measured (benchmarks/ort_spinning.py, SmolLM2-135M Q4_1 ONNX decode, 2 cores, tok/s): quiet, 2 threads:
    193 spinning, 149 not; beside one busy process, 2 threads: 96 spinning, 139 not; 1 thread: equal. Spinning
    threads that share their cores with other work burn the time that work needs and collapse. So they spin
    when the cores they will use are free at load time and sleep when other processes hold them
    ($EDGESLM_ORT_SPINNING = 1 or 0 decides instead)."""
    forced = forced if forced is not None else os.environ.get("EDGESLM_ORT_SPINNING")
    if forced in ("0", "1"):
        return forced == "1", f"spinning {'on' if forced == '1' else 'off'} (EDGESLM_ORT_SPINNING)"
    cores = os.cpu_count() or 1
    busy = busy_cores()
    if busy is None:
        return True, "spinning on (onnxruntime's default)"
    spin = busy + min(threads or cores, cores) <= cores + 0.5
    return spin, f"spinning {'on' if spin else 'off'} ({busy:.1f} of {cores} cores busy at load)"


class OrtDecoder:
    """step(tokens, start) -> float32 logits of the last token. `start` must be the number of positions
    already in the cache (0 starts over), as the ExecuTorch program's start_pos."""

    def __init__(self, path: str, threads: int, layers: int, kv_heads: int, head_dim: int, max_context: int,
                 ops_library: str | None = None, spinning: bool | None = None):
        import numpy as np
        import onnxruntime as ort

        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        if spinning is None:
            spinning, self.spinning = spin_policy(threads)
        else:
            self.spinning = f"spinning {'on' if spinning else 'off'}"
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
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
        self.positions = "position_ids" in inputs  # a rotation outside attention (builder: non-fused RoPE)
        if missing or len(inputs) != 2 + self.positions + 2 * layers:
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
        if self.positions:
            b.bind_cpu_input("position_ids", np.arange(start, start + n, dtype=np.int64)[None])
        b.bind_output("logits")
        self.sess.run_with_iobinding(b)
        self.filled = start + n
        logits = b.get_outputs()[0].numpy()
        return logits.reshape(-1, logits.shape[-1])[-1]
