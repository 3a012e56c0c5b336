"""Install onnxruntime's C API header (what edgeslm's onnxruntime op library compiles against) from Debian's
package registry: `apt-get install libonnxruntime-dev` where the system's suites have it (Debian 13 and later),
else that package downloaded by apt from the oldest Debian suite that has it (a private APT setup, signatures
checked by the system's keyring) with the header taken out into DEST. `make system-deps` runs this; nothing of
edgeslm fetches a file from a fixed address.

    python -m edgeslm.devtools.ort_header [DEST]     # default /usr/local/include/onnxruntime
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE = "libonnxruntime-dev"
SUITE = "trixie"  # the first Debian release with onnxruntime
HEADER = "onnxruntime_c_api.h"
SYSTEM = Path("/usr/include/onnxruntime")


def install(dest: Path) -> Path:
    if (SYSTEM / HEADER).is_file():
        return SYSTEM
    if (dest / HEADER).is_file():
        return dest
    known = subprocess.run(["apt-cache", "show", PACKAGE], capture_output=True, text=True, timeout=60)
    if known.returncode == 0 and known.stdout.strip():
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", PACKAGE], check=True, timeout=900)
        return SYSTEM
    from edgeslm.devtools.emulate.image import private_apt

    with tempfile.TemporaryDirectory(prefix="edgeslm-ort-header-") as tmp:
        work = Path(tmp)
        apt, env = private_apt(work / "apt", "amd64", SUITE)
        subprocess.run(apt + ["update"], env=env, check=True, capture_output=True, timeout=600)
        (work / "dl").mkdir()
        subprocess.run(apt + ["download", f"{PACKAGE}/{SUITE}"], env=env, cwd=work / "dl", check=True,
                       capture_output=True, timeout=600)
        deb = next((work / "dl").glob("*.deb"))
        out = work / "x"
        out.mkdir()
        tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(out), f"./usr/include/onnxruntime/{HEADER}"], stdin=tar.stdout,
                       check=True, timeout=120)
        tar.wait()
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "usr" / "include" / "onnxruntime" / HEADER, dest / HEADER)
        print(f"{dest / HEADER} from {deb.name}")
    return dest


def main() -> None:
    dest = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/usr/local/include/onnxruntime")
    print(install(dest))


if __name__ == "__main__":
    main()
