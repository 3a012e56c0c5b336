"""`edgeslm eval --device NAME`: the build's files scored on the user's text where they run, on the device.

The host keeps the text, the tokenizer and the source model (the reference); the device runs each file's steps
in the deployed version (the runner's `serve-steps`: one request line, the last token's logits back as one line
of base64 float32), so the figures are the device's own arithmetic, CPU kernels included. A device answer is
input like any other: a line longer than the logits can be, logits of the wrong width or not a number, or an
answer that does not come within the device's profile_timeout end the evaluation with one DeviceError line."""

from __future__ import annotations

import base64
import binascii
import json
import posixpath
from contextlib import contextmanager

import numpy as np

from edgeslm.config.devices import Device
from edgeslm.errors import UserError
from edgeslm.profiling.deploy import device_version, needs_et_runtime, open_device
from edgeslm.transport import DeviceError, printable


class DeviceStep:
    """step(tokens, start) -> the last token's logits, computed on the device by the runner's serve-steps."""

    def __init__(self, chan, device: str, artifact: str, vocab: int):
        self.chan, self.device, self.artifact, self.vocab = chan, device, artifact, vocab
        self.limit = 4 * (4 * vocab + 2) // 3 + 64  # one line of base64 logits, and its newline
        header = self._answer()
        if not isinstance(header, dict) or "error" in header or header.get("vocab") != vocab:
            why = header.get("error") if isinstance(header, dict) else None
            raise DeviceError(f"device {device}: {artifact} did not load for eval"
                              + (f": {printable(why)}" if why else f" (answered {printable(str(header))})"))
        self.runtime = printable(str(header.get("runtime", "?")), 80)

    def _answer(self):
        line = self.chan.readline(self.limit + 1)
        if not line:
            raise DeviceError(f"device {self.device}: {self.artifact}: no answer (the runner ended or the device's "
                              "profile_timeout passed)")
        if len(line) > self.limit or not line.endswith("\n"):
            raise DeviceError(f"device {self.device}: {self.artifact}: an answer longer than {self.vocab} logits")
        if line.startswith("L"):
            try:
                raw = base64.b64decode(line[1:].strip(), validate=True)
            except (binascii.Error, ValueError):
                raise DeviceError(f"device {self.device}: {self.artifact}: logits that are not base64") from None
            if len(raw) != 4 * self.vocab:
                raise DeviceError(f"device {self.device}: {self.artifact}: {len(raw) // 4} logits, not {self.vocab}")
            return np.frombuffer(raw, dtype="<f4").astype(np.float32)
        try:
            return json.loads(line)
        except ValueError:
            raise DeviceError(f"device {self.device}: {self.artifact}: an answer that is neither logits nor JSON "
                              f"({printable(line, 80)})") from None

    def __call__(self, tokens, start: int):
        self.chan.write(json.dumps({"tokens": [int(t) for t in tokens], "start": int(start)}) + "\n")
        got = self._answer()
        if isinstance(got, np.ndarray):
            return got
        why = got.get("error") if isinstance(got, dict) else got
        raise DeviceError(f"device {self.device}: {self.artifact}: {printable(str(why))}")

    def close(self) -> None:
        self.chan.close()


def device_steps(name: str, device: Device, threads: int = 0, accept_new_host_key: bool = False):
    """An `open_steps` for pipeline.text_eval.evaluate: each chosen file of the deployed build, on the device."""

    @contextmanager
    def open_steps(folder, manifest, chosen):
        recipe = manifest.recipe.name
        vocab = int((manifest.model or {}).get("vocab_size") or 0)
        if vocab <= 0:
            raise UserError(f"{folder}: the manifest does not give the vocabulary size; rebuild it")
        with open_device(name, device, accept_new_host_key) as dev:
            with dev.pinned(recipe) as pinned:
                version = device_version(name, pinned)
                if version != manifest.version:
                    raise UserError(f"device {name} runs {recipe} version {version}, not the build's "
                                    f"{manifest.version}; deploy the build first (edgeslm deploy {folder} "
                                    f"--device {name})")
                vdir = posixpath.join(dev.model_dir(recipe), "versions", version)
                steps = {}
                try:
                    for a in chosen:
                        extra = []
                        if needs_et_runtime(manifest, a.name):
                            extra = ["--et-runtime", dev.et_runtime(dev.arch(), log=lambda msg: None)]
                        chan = dev.conn.spawn([dev.python, dev.path, "serve-steps", vdir, "--artifact", a.name,
                                               "--threads", str(threads), *extra], timeout=device.profile_timeout)
                        steps[a.name] = DeviceStep(chan, name, a.name, vocab)
                    yield steps
                finally:
                    for step in steps.values():
                        step.close()

    open_steps.where = name
    return open_steps
