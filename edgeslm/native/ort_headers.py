"""The header edgeslm's onnxruntime custom op library (libedgeslm_ort.so: GgufLinear, the Q4_1 tile kernels of
the .pte's gguf_linear) is built with; the library goes into the runtime folder (native.runtime_folder) beside
the ExecuTorch shim. It is compiled against onnxruntime's C API header alone (nothing of onnxruntime is linked:
the session hands the library its API table); the library asks onnxruntime for API version 17 (onnxruntime >=
1.17 runs it). An installed edgeslm ships the library built (native/prebuilt) and never needs the header; a
source checkout builds it on first use, with the header of the system's onnxruntime development package
(Debian's libonnxruntime-dev: `make system-deps` installs it, devtools.ort_header) or of a folder the user
names (EDGESLM_ORT_HEADERS). Nothing is fetched from here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from edgeslm.errors import UserError
from edgeslm.inputs import InputError, read_text

HEADER = "onnxruntime_c_api.h"
HEADERS_ENV = "EDGESLM_ORT_HEADERS"
# where a system onnxruntime development package puts the header (Debian's libonnxruntime-dev; make system-deps)
SEARCH = (Path("/usr/include/onnxruntime"), Path("/usr/local/include/onnxruntime"))
# The C API version the op library asks onnxruntime for: kApiVersion in native/src/ort_gguf.cpp (a test
# holds the two equal). A header older than that lacks functions the library calls.
API_VERSION = 17
FIX = (f"give the folder of onnxruntime's C API header (onnxruntime >= 1.{API_VERSION}, e.g. /usr/include/onnxruntime) "
       f"or unset {HEADERS_ENV} to use the system's (`make system-deps` installs Debian's libonnxruntime-dev)")


def ort_headers() -> Path:
    """The folder holding onnxruntime_c_api.h: $EDGESLM_ORT_HEADERS when set, else the system's."""
    own = os.environ.get(HEADERS_ENV)
    if own:
        header = Path(own) / HEADER
        if not os.path.lexists(header):
            raise UserError(f"{HEADERS_ENV}={own}: no {HEADER} there; {FIX}")
        check_header(header)
        return Path(own)
    for folder in SEARCH:
        if (folder / HEADER).is_file():
            check_header(folder / HEADER)
            return folder
    raise UserError(f"onnxruntime's C API header ({HEADER}) is not in {' or '.join(map(str, SEARCH))}: edgeslm's "
                    "onnxruntime op library is built against it in a source checkout; run `make system-deps` "
                    f"(Debian's libonnxruntime-dev), or set {HEADERS_ENV} to a folder holding {HEADER} "
                    f"(onnxruntime >= 1.{API_VERSION})")


def check_header(header: Path) -> int:
    """The ORT_API_VERSION of a header the user names: a regular UTF-8 file (at most LIMITS["header"]) that
    defines it, at least API_VERSION. Else one line naming the variable and the file."""
    fix = FIX
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
