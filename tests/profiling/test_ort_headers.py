"""EDGESLM_ORT_HEADERS names onnxruntime's C API header for edgeslm's op library: a binary, empty, old or
non-regular header is one line naming the variable and the file (exit 2), before any compiler runs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from edgeslm.errors import UserError
from edgeslm.native import ort_headers as ort_ops
from edgeslm.native.ort_headers import API_VERSION, HEADER, HEADERS_ENV, ort_headers

GOOD = "#ifndef ORT\n#define ORT_API_VERSION 21\nstruct OrtApi;\n#endif\n"


def refused(tmp_path, monkeypatch, content=None, fifo=False) -> str:
    folder = tmp_path / "include"
    folder.mkdir(exist_ok=True)
    header = folder / HEADER
    if fifo:
        os.mkfifo(header)
    else:
        (header.write_bytes if isinstance(content, bytes) else header.write_text)(content)
    monkeypatch.setenv(HEADERS_ENV, str(folder))
    with pytest.raises(UserError) as info:
        ort_headers()
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{HEADERS_ENV}: {header} "), msg
    return msg


def test_a_good_header_is_taken(tmp_path, monkeypatch):
    (tmp_path / HEADER).write_text(GOOD)
    monkeypatch.setenv(HEADERS_ENV, str(tmp_path))
    assert ort_headers() == tmp_path


def test_a_binary_header(tmp_path, monkeypatch):
    assert "is not UTF-8 text (undecodable byte at offset 0)" in refused(tmp_path, monkeypatch, b"\xff\xfe\x80" * 100)
    assert "is not a text file (it holds NUL bytes" in refused(tmp_path, monkeypatch, b"\x7fELF\x00\x00")


def test_an_empty_header(tmp_path, monkeypatch):
    assert refused(tmp_path, monkeypatch, "").endswith(f"{HEADER} is empty (give the folder of onnxruntime's C API "
                                                       f"header (onnxruntime >= 1.17, e.g. /usr/include/onnxruntime) "
                                                       f"or unset {HEADERS_ENV} to use the system's (`make system-deps` "
                                                       "installs Debian's libonnxruntime-dev))")
    assert "is empty" in refused(tmp_path, monkeypatch, "\n  \n")


def test_an_old_or_foreign_header(tmp_path, monkeypatch):
    msg = refused(tmp_path, monkeypatch, GOOD.replace("21", "16"))
    assert "is onnxruntime's C API version 16; edgeslm's op library asks for version 17" in msg
    assert "defines no ORT_API_VERSION" in refused(tmp_path, monkeypatch, "int main(void) { return 0; }\n")


@pytest.mark.timeout(60)
def test_a_fifo_or_huge_header(tmp_path, monkeypatch):
    assert "is a FIFO (named pipe), not a regular file" in refused(tmp_path, monkeypatch, fifo=True)
    (tmp_path / "include" / HEADER).unlink()
    assert "larger than the 4 MiB" in refused(tmp_path, monkeypatch, "// x\n" * (1 << 20))


def test_the_required_version_is_the_op_librarys():
    source = Path(ort_ops.__file__).parent / "src" / "ort_gguf.cpp"
    asked = re.search(r"constexpr uint32_t kApiVersion = (\d+);", source.read_text())
    assert asked and int(asked.group(1)) == API_VERSION


def test_a_header_that_does_not_compile_says_why_on_the_first_line(tmp_path):
    """The compiler's first error is the message's first line (which the CLI shows), not 'failed:' and nothing."""
    from edgeslm.native.build import build_ort

    (tmp_path / HEADER).write_text(GOOD + "#error this header is not onnxruntime's\n")
    with pytest.raises(RuntimeError) as info:
        build_ort(tmp_path / "out" / "libedgeslm_ort.so", os.uname().machine, tmp_path)
    first = str(info.value).splitlines()[0]
    assert first.startswith("building libedgeslm_ort.so failed: ") and "this header is not onnxruntime's" in first, first
