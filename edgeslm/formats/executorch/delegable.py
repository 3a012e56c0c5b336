"""Two pieces of transformers' decoders written in ops XNNPACK delegates, so a layer is not cut into
several delegate calls with portable ops between them (each cut costs a call into the runtime, a resize
of the delegate's graph for the token count, and a portable kernel; SmolLM2's program had 153 delegate
calls, 63 with these two).

- RMSNorm's mean over the hidden size: XNNPACK runs `mean` only over the last two dims of a 4D tensor,
  and a 3D hidden state cannot be reshaped there (squeeze is not delegated either). Written as a linear
  with a constant [1, hidden] row of 1/hidden it is one fp32 GEMV in the same delegate as the projections.
- RoPE's rotate_half: two slices along the head dimension, which XNNPACK does not delegate when another
  dimension (the token count) is dynamic. Written as a linear with a constant signed permutation matrix
  it is exact (each output is one input times +-1 plus zeros) and delegated.

The eager decoder the build verifies against runs the same modules, and both rewrites equal the original
to float rounding (the mean) or bit for bit (the rotation): the fp32 program still matches transformers.
"""

from __future__ import annotations

import contextlib
import sys


def _norm_type():
    import torch

    class Norm(torch.nn.Module):
        """y = x / sqrt(mean(x^2) + eps) * weight (or * (1 + weight): Gemma's offset), the mean a linear."""

        def __init__(self, weight, eps: float, offset: bool):
            super().__init__()
            self.weight, self.eps, self.offset = weight, eps, offset
            self.register_buffer("inverse_width", torch.full((1, weight.shape[0]), 1.0 / weight.shape[0]),
                                 persistent=False)

        def forward(self, x):
            y = x * torch.rsqrt(torch.nn.functional.linear(x * x, self.inverse_width) + self.eps)
            return y * (1.0 + self.weight) if self.offset else self.weight * y

    return Norm


def swap_norms(model) -> list[str]:
    """Replace the RMSNorm modules transformers' Llama, Qwen2, Phi-3, Mistral and Gemma 2 use (a `weight`
    over the hidden size and an epsilon); others are left alone. Returns the names replaced."""
    norm = _norm_type()
    done = []
    for name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            kind = type(child).__name__
            eps = getattr(child, "variance_epsilon", getattr(child, "eps", None))
            weight = getattr(child, "weight", None)
            if not kind.endswith("RMSNorm") or eps is None or weight is None or weight.dim() != 1:
                continue
            setattr(parent, child_name, norm(weight, float(eps), offset=kind.startswith("Gemma")))
            done.append(f"{name}.{child_name}".lstrip("."))
    return done


def rotation(head_dim: int):
    """R with linear(x, R) == transformers' rotate_half(x) = cat(-x[d/2:], x[:d/2])."""
    import torch

    half = head_dim // 2
    r = torch.zeros(head_dim, head_dim)
    r[:half, half:] = -torch.eye(half)  # output i < d/2 takes -x[i + d/2]
    r[half:, :half] = torch.eye(half)  # output i >= d/2 takes x[i - d/2]
    return r


@contextlib.contextmanager
def rotate_half_as_linear(model, owner):
    """While active, the model family's rotate_half multiplies by `owner.rope_rotation` (a buffer of the
    exported module, so torch.export keeps it as a constant of the program)."""
    import torch

    module = sys.modules.get(type(model).__module__)
    original = getattr(module, "rotate_half", None)
    if original is None:
        yield
        return

    def rotate_half(x):
        r = owner.rope_rotation
        if x.shape[-1] != r.shape[0]:
            return original(x)
        return torch.nn.functional.linear(x, r)

    module.rotate_half = rotate_half
    try:
        yield
    finally:
        module.rotate_half = original
