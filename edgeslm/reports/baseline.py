"""`report --save-baseline FOLDER`: the results of this report stored as the baseline a later gate compares with.

The folder is checked before the report is written or anything is replaced (`baseline_folder`), then saved
(`save_baseline`): written to a temporary sibling and swapped in, so an interrupted save leaves the old
baseline intact. What gets replaced is the real folder (`.`, `..`, trailing slashes and links resolved: a
link to a baseline keeps pointing at the new one), and only when it holds nothing but what edgeslm wrote
there. It is never the current folder or a folder holding it, nor a folder holding --out or an input of
this command: the swap would delete them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from edgeslm.contract import BASELINE_SCHEMA, MANIFEST_SCHEMA
from edgeslm.errors import UserError
from edgeslm.reports.checks import problem_with
from edgeslm.reports.collect import BASELINE_MARKER, check_marker

OPTION = "--save-baseline"
OURS = re.compile(r"(manifest|profile)-[A-Za-z0-9._-]+\.json")  # the files save_baseline writes


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def baseline_folder(folder: Path, reads=(), writes=()) -> Path:
    """The real folder `--save-baseline folder` will replace, or a UserError naming what is wrong (nothing
    is written either way). `reads`: the paths this command reads (results, --baseline); `writes`: files it
    writes (--out)."""
    shown = f"{OPTION} {folder}"
    real = _real(folder)
    alias = "" if str(real) == str(folder) else f" ({real})"
    if real.parent == real:
        raise UserError(f"{shown}: is the root folder; give a folder of its own, e.g. baselines/main")
    try:
        cwd = _real(Path.cwd())
    except OSError:
        cwd = None
    if cwd is not None and _within(cwd, real):
        raise UserError(f"{shown}{alias}: is the current folder or holds it; saving replaces the whole folder: give "
                        "a folder of its own, e.g. baselines/main (nothing was written)")
    for w in writes:
        if w is not None and _within(_real(w), real):
            raise UserError(f"{shown}{alias}: --out {w} is inside it, and saving replaces the whole folder (the "
                            "report would be deleted with the old baseline); write the report elsewhere "
                            "(nothing was written)")
    for r in reads:
        if _within(_real(r), real):
            raise UserError(f"{shown}{alias}: holds {r}, which this command reads, and saving replaces the whole "
                            "folder; give another folder (nothing was written)")
    if os.path.lexists(real) and not real.is_dir():
        raise UserError(f"{shown}{alias}: is a file, not a baseline folder; give a new folder name (nothing was written)")
    if real.is_dir():
        _only_ours(real, shown + alias)
    return real


def _only_ours(real: Path, shown: str) -> None:
    """An existing folder may be replaced only when it is empty or a baseline holding only what edgeslm wrote."""
    try:
        entries = sorted(os.listdir(real))
    except OSError as exc:
        raise UserError(f"{shown}: cannot be read ({exc.strerror or exc})") from None
    if not entries:
        return
    if BASELINE_MARKER not in entries:
        raise UserError(f"{shown}: exists and is not an edgeslm baseline (no {BASELINE_MARKER}); edgeslm only "
                        "replaces baselines it made: give a new folder name (nothing was written)")
    check_marker(real)  # another version's marker, or a damaged one: refused, naming it
    for name in entries:
        p = real / name
        if name == BASELINE_MARKER:
            continue
        if not OURS.fullmatch(name) or p.is_symlink() or not p.is_file():
            raise UserError(f"{shown}: holds {name}, which edgeslm did not write there, and saving replaces the "
                            "whole folder; move it out, or give a new folder name (nothing was written)")


def save_baseline(sources: list[str], folder: Path, reads=(), writes=()) -> Path:
    """Store the given result and manifest files (already read and checked by `collect`) as the new baseline
    in `folder` (checked again with `baseline_folder`). Returns the real folder written."""
    from edgeslm.contract.documents import loads
    from edgeslm.inputs import InputError, read_file

    real = baseline_folder(folder, reads, writes)
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{real.name}.tmp-", dir=real.parent))
    except OSError as exc:
        raise UserError(f"{OPTION} {folder}: cannot write there ({exc.strerror or exc}); give a folder you can "
                        "write to (nothing was written)") from None
    try:
        names = []
        for i, src in enumerate(sources):
            try:
                raw = read_file(Path(src), "result")  # bytes written as read: never a FIFO swapped in meanwhile
            except InputError as exc:
                raise UserError(f"{exc} (it changed while the report ran; run the report again)") from None
            data = loads(raw, max_bytes=None)
            if problem_with(data):
                raise UserError(f"{src}: changed while the report ran ({problem_with(data)}); run the report again")
            if data.get("schema") == MANIFEST_SCHEMA:
                name = f"manifest-{data['cache_key'][:16]}.json"
            else:
                b, d, a = data["build"], data["device"], data["artifact"]
                name = f"profile-{d.get('name')}-{b['recipe']}-{b['target']}-{a['name']}-{i}.json"
            name = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:200]  # names in results are input: a plain file name
            (tmp / name).write_bytes(raw)
            names.append(name)
        (tmp / BASELINE_MARKER).write_text(json.dumps({
            "schema": BASELINE_SCHEMA, "files": len(sources), "names": sorted(set(names)),
            "saved_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}))
        _swap(tmp, real)
    except OSError as exc:
        raise UserError(f"{OPTION} {folder}: cannot write the baseline there ({exc.strerror or exc}); the old "
                        "one (if any) is unchanged") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return real


def _swap(tmp: Path, real: Path) -> None:
    """`tmp` becomes `real`; an old `real` (checked: only edgeslm's files) is moved aside first and deleted
    once the new one is in place, or put back if the swap fails."""
    if not os.path.lexists(real):
        os.replace(tmp, real)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{real.name}.old-", dir=real.parent))
    os.replace(real, old)  # onto the empty folder mkdtemp made
    try:
        os.replace(tmp, real)
    except OSError:
        os.replace(old, real)
        raise
    shutil.rmtree(old, ignore_errors=True)
