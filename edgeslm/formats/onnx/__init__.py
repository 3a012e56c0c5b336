"""ONNX (onnxruntime): encoders through torch.onnx and onnxruntime's graph optimizer and int8 quantization
(encoder.py, quant.py, graph.py); decoders through onnxruntime-genai's model builder with GGUF grids carried
as MatMulNBits or edgeslm's GgufLinear op (decoder.py, gguf.py). The device runs them in plain onnxruntime."""

from __future__ import annotations

from edgeslm.formats.unit import FormatUnit


class OnnxFormat(FormatUnit):
    name = "onnx"
    any_batch = True

    def exporter(self):
        from edgeslm.formats.onnx.encoder import OnnxExporter

        return OnnxExporter()

    def decoder_problem(self, config) -> str | None:
        # onnxruntime's GroupQueryAttention rotates inside the kernel from cos/sin caches of half the rotary
        # dimension, which it refuses at run time unless that half is a multiple of 8 (and the builder's
        # separate rotation node does not build for a partial rotation over packed projections)
        cfg = config.get_text_config()
        head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        factor = getattr(cfg, "partial_rotary_factor", None) or 1.0
        rotary = int(head * factor)
        if (rotary // 2) % 8:
            return (f"onnxruntime's GroupQueryAttention needs half the rotary dimension to be a multiple of 8; this "
                    f"model rotates {rotary} of {head} dimensions per head (partial_rotary_factor {factor}): build "
                    "formats = [\"executorch\"] for it")
        return None

    def export_decoder(self, *args, **kwargs):
        from edgeslm.formats.onnx.decoder import export_decoder

        return export_decoder(*args, **kwargs)


UNIT = OnnxFormat()
