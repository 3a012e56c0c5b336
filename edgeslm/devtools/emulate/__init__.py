"""An emulated aarch64 "device" reachable over SSH on loopback, for users without a Pi and for CI.

Two steps:

    image = ensure_image(cache_dir)                     # builds once (~1 min), then < 1 s
    with start_device(image, workdir, port, authorized_keys) as dev:
        ...  # ssh -p dev.port USER@127.0.0.1 'uname -m'  ->  aarch64

How it works. `ensure_image` assembles under `cache_dir` an aarch64 root filesystem from Debian
trixie arm64 packages (python3.13, libstdc++, coreutils; fetched with a *private* APT configuration,
the system's APT setup is never touched), aarch64 wheels of numpy / onnxruntime /
executorch-numpy-runtime / psutil installed with `pip --target --platform manylinux..._aarch64`, and
the statically linked `qemu-aarch64` taken out of Debian bookworm-backports' `qemu-user` .deb.

`start_device` runs the host's own `/usr/sbin/sshd` on 127.0.0.1 with a config of its own. Every
SSH session goes through a ForceCommand script that puts wrappers named python3 / uname / nproc /
arch first in PATH; each wrapper runs the aarch64 program under `qemu-aarch64 -L ROOTFS`. The
emulated processes see the host's file system (qemu only redirects paths that exist inside ROOTFS),
so a file pushed over SFTP to /tmp/x is /tmp/x for the emulated python too. SFTP is served by the
host's sftp-server.

Sessions carry `EDGESLM_EMULATED=qemu-aarch64:<cpu>` and the emulated python can also read
`/etc/edgeslm-emulated` (it exists only inside ROOTFS), so the on-device runner labels its timings
as emulated. Emulation is 20-170x slower than the real thing: use it to prove that ARM artifacts
load and give the right answers, never for latency.

Limits: the emulated python's `sys.executable` is the wrapper (a host shell script), so
`subprocess.run([sys.executable, ...])` works, but aarch64 binaries other than the wrapped ones
cannot be exec'd directly (no binfmt_misc is registered; host x86 programs run natively).
Only stdlib is imported here; the build shells out to apt-get, dpkg-deb, pip and ssh-keygen.
"""

from __future__ import annotations

from edgeslm.devtools.emulate.device import EMULATED_TARGET, EmulatedDevice, start_device, start_named, stop_named
from edgeslm.devtools.emulate.image import EmulatorError, Image, ensure_image

__all__ = ["EMULATED_TARGET", "EmulatedDevice", "EmulatorError", "Image", "ensure_image", "start_device",
           "start_named", "stop_named"]
