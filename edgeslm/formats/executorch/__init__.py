"""ExecuTorch (.pte, XNNPACK): encoders through torch.export, PT2E int8 and the XNNPACK partitioner
(encoder.py, quant.py); decoders as transformers' own code with the llama custom ops and a static KV cache,
torchao 8da4w or the GGUF grid through edgeslm's gguf_linear (decoder.py, delegable.py, gguf_op.py). A
decoder runs on the device in edgeslm's torch-free runtime folder, which deploy uploads."""

from __future__ import annotations

from edgeslm.formats.unit import FormatUnit


class ExecuTorchFormat(FormatUnit):
    name = "executorch"
    rewires_model = True  # attention swapped and weights quantized in place
    own_runtime = frozenset({"decoder"})  # task heads whose programs need edgeslm's runtime folder

    def exporter(self):
        from edgeslm.formats.executorch.encoder import ExecuTorchExporter

        return ExecuTorchExporter()

    def export_decoder(self, *args, **kwargs):
        from edgeslm.formats.executorch.decoder import export_decoder

        return export_decoder(*args, **kwargs)


UNIT = ExecuTorchFormat()
