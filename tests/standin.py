"""A device whose answers are replaced: a `python` for devices.toml that runs the real interpreter (so the
real runner does the real work over the real sshd) except for the commands it is told to answer itself.

    python = hostile_python(tmp_path, {"verify": "print('{}')"})   # runner verify answers {}
    python = hostile_python(tmp_path, {"code:platform.machine": "print('x86_64 extra')"})

Keys: a runner command (`probe`, `verify`, `profile`, ...) or `code:<text>` for the host's one-line
`python -c` commands whose code contains <text>. Values: Python source run instead of the command, with
`args` (the runner's arguments after the command name, or the `-c` command's) and `out` (sys.stdout) at
hand; it ends with exit status 0 unless it exits itself.
"""

from __future__ import annotations

import sys
from pathlib import Path


def hostile_python(folder: Path, answers: dict[str, str], name: str = "python-standin") -> str:
    script = Path(folder) / name
    script.write_text(f"""#!{sys.executable}
import json, os, sys
REAL = {sys.executable!r}
ANSWERS = {answers!r}
argv = sys.argv[1:]
key, args = None, []
if len(argv) > 1 and argv[0].endswith(".pyz"):
    key, args = argv[1], argv[2:]
elif argv[:1] == ["-c"] and len(argv) > 1:
    key = next((k for k in ANSWERS if k.startswith("code:") and k[5:] in argv[1]), None)
    args = argv[2:]
if key in ANSWERS:
    out = sys.stdout
    exec(ANSWERS[key])
    out.flush()
    sys.exit(0)
os.execv(REAL, [REAL] + argv)
""")
    script.chmod(0o755)
    return str(script)


# a line of `size` bytes written in 1 MiB pieces (never held whole), as the start of a JSON object
def huge_line(size: int) -> str:
    return (f"out.write('{{\"x\": \"')\n"
            f"block = 'x' * (1 << 20)\n"
            f"for _ in range({size} >> 20):\n"
            f"    out.write(block)\n"
            f"out.write('\"}}\\n')\n")
