"""A decoder file run as the device runs it: in a process of its own (edgeslm.runner.step_serve) that does not load
torch, over the runtime folder the device gets. The build verifies its .pte this way, and `edgeslm eval` scores
both formats this way. In the build's own process torch is loaded, and libtorch_cpu then
serves the pthreadpool/cpuinfo symbols ExecuTorch's XNNPACK backend leaves unresolved: the same program computed
other logits there than on the device (SmolLM2-135M: top logit 24.667 -> 24.542, a top token flipped)."""

from __future__ import annotations

import os
from pathlib import Path

from edgeslm.errors import ExportError


class IsolatedStep:
    """step(tokens, start) -> logits of a decoder file (`fmt`: executorch or onnx) run by edgeslm.runner.step_serve
    in a process of its own that does not load torch, over the runtime folder the device gets (built for this
    machine): the numbers the device computes. `export`: the manifest's export facts of the artifact (an ONNX
    decoder's KV cache and ops), `context`: its KV cache positions. The process ends with `close()` (or when this
    object goes)."""

    CALL_TIMEOUT = 600  # seconds for one call (a long prompt of a 2B model on a slow host stays well under)

    def __init__(self, fmt: str, path: Path, folder: Path, threads: int = 0, export: dict | None = None,
                 context: int | None = None):
        import subprocess
        import sys
        import tempfile

        import edgeslm

        self.path = path
        env = dict(os.environ)
        root = str(Path(edgeslm.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.log = tempfile.TemporaryFile()  # the native runtime's chatter ("No temp allocator provided")
        import json

        cmd = [sys.executable, "-m", "edgeslm.runner.step_serve", fmt, str(path), "--et-runtime", str(folder),
               "--threads", str(threads), "--export", json.dumps(export or {})]
        if context:
            cmd += ["--context", str(context)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env)
        header = self._line()
        if "error" in header:
            self.close()
            raise ExportError(f"{path.name} does not load in edgeslm's device runtime: {header['error']}")
        self.runtime, self.torch = header.get("runtime", "?"), bool(header.get("torch"))

    def _read(self, n: int) -> bytes:
        import select

        buf = b""
        fd = self.proc.stdout.fileno()
        while len(buf) < n:
            ready, _, _ = select.select([fd], [], [], self.CALL_TIMEOUT)
            chunk = os.read(fd, n - len(buf)) if ready else b""
            if not chunk:
                self.close()
                raise ExportError(self._why("stopped answering" if ready else
                                            f"took over {self.CALL_TIMEOUT} s for one step"))
            buf += chunk
        return buf

    def _line(self) -> dict:
        import json

        buf = b""
        while not buf.endswith(b"\n"):
            buf += self._read(1)
        return json.loads(buf)

    def _why(self, what: str) -> str:
        self.log.seek(0)
        tail = " ".join(self.log.read().decode(errors="replace").split()[-40:])
        return f"the process running {self.path.name} {what}" + (f" ({tail[-400:]})" if tail else "")

    def __call__(self, tokens, start: int):
        import json
        import struct

        import numpy as np

        from edgeslm.runner.errors import RunnerError

        self.proc.stdin.write(json.dumps({"tokens": [int(t) for t in tokens], "start": int(start)}).encode() + b"\n")
        self.proc.stdin.flush()
        head = self._read(4)
        if head == b"\xff\xff\xff\xff":
            raise RunnerError(self._line()["error"])
        (n,) = struct.unpack("<I", head)
        return np.frombuffer(self._read(4 * n), dtype="<f4").astype(np.float32)

    def peak_rss_kb(self) -> int | None:
        """The process's peak resident memory so far (Linux VmHWM): the file's runtime alone, as on the device."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                return next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), None)
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except Exception:  # noqa: BLE001 - it is ended either way
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def isolated_step(fmt: str, path: Path, export: dict | None = None, context: int | None = None) -> IsolatedStep:
    """A decoder file as the device runs it (IsolatedStep over this machine's runtime folder)."""
    import platform

    from edgeslm.native.runtime_folder import runtime_folder

    return IsolatedStep(fmt, path, runtime_folder(platform.machine()), export=export, context=context)
