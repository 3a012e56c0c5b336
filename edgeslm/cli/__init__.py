"""Command line: thin click commands (one module per command group), registered on the group in app.py.

    edgeslm.cli.main   # the click group (console script `edgeslm`)
"""

from __future__ import annotations

import sys

from edgeslm.cli.app import main
from edgeslm.cli import build, cache, devices, generation, imports, inspect, report  # noqa: E402,F401  (registers the commands)

__all__ = ["main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
