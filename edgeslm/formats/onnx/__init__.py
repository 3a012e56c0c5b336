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

    def export_decoder(self, *args, **kwargs):
        from edgeslm.formats.onnx.decoder import export_decoder

        return export_decoder(*args, **kwargs)


UNIT = OnnxFormat()
