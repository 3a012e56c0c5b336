"""Consoles for the CLI: progress to stderr, results to stdout; native library chatter to a log."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

_saved_stderr: int | None = None


def stderr_console(quiet: bool):
    if quiet:
        return None
    from rich.console import Console

    fd = _saved_stderr if _saved_stderr is not None else sys.stderr.fileno()
    return Console(file=os.fdopen(os.dup(fd), "w", buffering=1), stderr=True)


def stdout_console():
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:  # piped or captured: do not wrap tables at 80 columns
        console = Console(highlight=False, width=160)
    return console


@contextlib.contextmanager
def quiet_native_output(log_path: Path):
    """Send what C++/Python libraries print on stderr (cpuinfo, XNNPACK, warnings) to a log file.

    Our own progress display writes to a duplicate of the original stderr, so it stays visible.
    """
    global _saved_stderr
    import logging
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.stderr.flush()
    saved = os.dup(2)
    _saved_stderr = saved
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            _saved_stderr = None
            logging.disable(logging.NOTSET)
