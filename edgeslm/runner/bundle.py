"""The runner as the device gets it: one zip file (a Python zipapp) holding `edgeslm.runner` and
`edgeslm.contract`, run as `python3 edgeslm-runner-<sha>.pyz COMMAND ...`.

One file keeps the device protocol simple (one upload, one sha256 to check each session) while the
code is split into modules that the build host imports too. The zip is byte-for-byte reproducible
(sorted entries, fixed timestamps, stored uncompressed), so its sha256 names the code in it. This
module runs on the host only and is left out of the zip.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # .../edgeslm
MAIN = b"import sys\nfrom edgeslm.runner.main import main\nsys.exit(main())\n"
LEFT_OUT = {"bundle.py"}


def sources() -> list[tuple[str, bytes]]:
    """(name in the zip, content) of every file the device needs, in a fixed order."""
    out = [("__main__.py", MAIN), ("edgeslm/__init__.py", (PACKAGE / "__init__.py").read_bytes())]
    for sub in ("contract", "runner"):
        for p in sorted((PACKAGE / sub).glob("*.py")):
            if p.name not in LEFT_OUT:
                out.append((f"edgeslm/{sub}/{p.name}", p.read_bytes()))
    return out


def build_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in sources():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, data)
    return buf.getvalue()


def runner_path() -> Path:
    """The bundle for this checkout's code, written once into the cache (content-named)."""
    from edgeslm.hashing import cache_home

    data = build_bytes()
    digest = hashlib.sha256(data).hexdigest()
    path = cache_home() / "runner" / f"edgeslm-runner-{digest[:16]}.pyz"
    if not (path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path
