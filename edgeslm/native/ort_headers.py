"""The header edgeslm's onnxruntime custom op library (libedgeslm_ort.so: GgufLinear, the Q4_1 tile kernels of
the .pte's gguf_linear) is built with; the library goes into the runtime folder (et_runtime.runtime_folder)
beside the ExecuTorch shim. It is compiled against onnxruntime's C API header alone
(nothing of onnxruntime is linked: the session hands the library its API table). The PyPI wheels of
onnxruntime carry no headers, so the header comes from Debian's libonnxruntime-dev package, fetched once from
the Debian archive and checked by its sha256; the C API is stable across versions, and the library asks
onnxruntime for API version 17 (onnxruntime >= 1.17 runs it). A host that cannot reach the archive names a
folder holding the header instead (EDGESLM_ORT_HEADERS, e.g. /usr/include/onnxruntime of its own
onnxruntime development package, >= 1.17).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tarfile
import urllib.request
from pathlib import Path

from edgeslm.errors import UserError
from edgeslm.hashing import cache_home
from edgeslm.inputs import InputError, read_text

HEADER_DEB = ("https://deb.debian.org/debian/pool/main/o/onnxruntime/libonnxruntime-dev_1.21.0+dfsg-1_amd64.deb",
              "14f7d959d5deacbcf1504830d4189f91fc67382b399ed9ae9d3aa9c4050ced08")
HEADER = "onnxruntime_c_api.h"
HEADERS_ENV = "EDGESLM_ORT_HEADERS"
# The C API version the op library asks onnxruntime for: kApiVersion in runner/native/ort_gguf.cpp (a test
# holds the two equal). A header older than that lacks functions the library calls.
API_VERSION = 17


def ort_headers(timeout: float = 120) -> Path:
    """The folder holding onnxruntime_c_api.h: $EDGESLM_ORT_HEADERS when set, else 1.21's, fetched once."""
    own = os.environ.get(HEADERS_ENV)
    if own:
        header = Path(own) / HEADER
        if not os.path.lexists(header):
            raise UserError(f"{HEADERS_ENV}={own}: no {HEADER} there; give the folder of onnxruntime's C API header "
                            "(onnxruntime >= 1.17, e.g. /usr/include/onnxruntime) or unset it to fetch Debian's")
        check_header(header)
        return Path(own)
    url, sha = HEADER_DEB
    dest = cache_home() / "ort-headers" / sha[:16]
    if (dest / HEADER).is_file():
        return dest
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            data = r.read(8 << 20)
    except OSError as exc:
        raise UserError(f"cannot fetch onnxruntime's C API header from {url} ({exc}); edgeslm's onnxruntime op "
                        f"library is compiled against it: check the network, or set {HEADERS_ENV} to a folder "
                        f"holding {HEADER} (onnxruntime >= 1.17)") from None
    if hashlib.sha256(data).hexdigest() != sha:
        raise UserError(f"{url} is not the package edgeslm expects (sha256 differs); refusing to build with it")
    text = _member(data, f"./usr/include/onnxruntime/{HEADER}")
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / HEADER).write_bytes(text)
    try:
        os.replace(tmp, dest)
    except OSError:  # made meanwhile by another process
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def check_header(header: Path) -> int:
    """The ORT_API_VERSION of a header the user names: a regular UTF-8 file (at most LIMITS["header"]) that
    defines it, at least API_VERSION. Else one line naming the variable and the file."""
    fix = (f"give the folder of onnxruntime's C API header (onnxruntime >= 1.{API_VERSION}, e.g. "
           f"/usr/include/onnxruntime) or unset {HEADERS_ENV} to fetch Debian's")
    try:
        text = read_text(header, "header")
    except InputError as exc:
        raise UserError(f"{HEADERS_ENV}: {header} {exc.problem} ({fix})") from None
    if not text.strip():
        raise UserError(f"{HEADERS_ENV}: {header} is empty ({fix})")
    found = re.search(r"^[ \t]*#[ \t]*define[ \t]+ORT_API_VERSION[ \t]+([0-9]{1,6})\b", text, re.M)
    if found is None:
        raise UserError(f"{HEADERS_ENV}: {header} defines no ORT_API_VERSION: it is not onnxruntime's C API "
                        f"header ({fix})")
    version = int(found.group(1))
    if version < API_VERSION:
        raise UserError(f"{HEADERS_ENV}: {header} is onnxruntime's C API version {version}; edgeslm's op library "
                        f"asks for version {API_VERSION} (onnxruntime >= 1.{API_VERSION}) ({fix})")
    return version


def _member(deb: bytes, name: str) -> bytes:
    """One file of a .deb (an ar archive whose data.tar.* holds the files), read without extracting anything."""
    if not deb.startswith(b"!<arch>\n"):
        raise UserError("the onnxruntime header package is not a Debian archive")
    pos = 8
    while pos + 60 <= len(deb):
        head = deb[pos:pos + 60]
        entry, size = head[:16].decode().strip().rstrip("/"), int(head[48:58].decode().strip())
        body = deb[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)
        if entry.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                f = tar.extractfile(name)
                if f is not None:
                    return f.read()
    raise UserError(f"the onnxruntime header package has no {name}")
