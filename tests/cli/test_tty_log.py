"""Under a terminal, what libraries print during a build goes to the build log, not into the progress display
(rich's status display used to redirect sys.stderr to the terminal, leaving the log empty)."""

from __future__ import annotations

import os
import pty
import sys
from pathlib import Path

import pytest

from tiny import write_recipe

pytestmark = pytest.mark.slow
EXE = str(Path(sys.executable).parent / "edgeslm")
ROOT = Path(__file__).resolve().parents[2]


def test_library_output_goes_to_the_log_under_a_terminal(tmp_path, tiny_model):
    recipe = write_recipe(tmp_path / "r.toml", tiny_model("bert", "embedding"), "embedding", name="tty")
    pid, fd = pty.fork()
    if pid == 0:  # the child: the build, its stdout and stderr a terminal
        os.environ.update(PYTHONPATH=str(ROOT), EDGESLM_CACHE=str(tmp_path / "cache"))
        os.execv(EXE, [EXE, "build", str(recipe), "-o", str(tmp_path / "out")])
    screen = b""
    while True:
        try:
            block = os.read(fd, 65536)
        except OSError:
            break
        if not block:
            break
        screen += block
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, screen[-2000:]
    log = (tmp_path / "out" / ".logs" / "tty-host.log").read_text()
    assert log.strip(), "the build log is empty"
    for line in log.splitlines()[:5]:  # what went to the log is not on the screen
        if line.strip():
            assert line.strip().encode() not in screen, line
    assert b"verified on 27 texts" in screen  # the summary is
