"""Text inputs (verification and calibration texts): bundled ones, and the user's files read strictly.

Torch-free, so that `edgeslm validate` reads the same files the build will, with the same errors."""

from __future__ import annotations

import io
from pathlib import Path

from edgeslm.errors import ConfigError
from edgeslm.inputs import InputError, read_text

DATA = Path(__file__).resolve().parent / "data"


def builtin_texts(name: str) -> list[str]:
    path = DATA / f"{name}.txt"
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _decode(path: Path, file: str, key: str | None, root: Path | None = None) -> str:
    """A UTF-8 text file (a regular file, at most LIMITS["text"], inside `root` when given), or a ConfigError
    at `key` naming it."""
    try:
        return read_text(path, "text", root=root)
    except InputError as exc:
        raise exc.located(file, key) from None


def read_texts(path: Path, limit: int | None = None, file: str | None = None, key: str | None = None) -> list[str]:
    """One text per line of a .txt file, or one text per .txt file in a folder (recursively).

    Binary or non-UTF-8 files, FIFOs and devices, files or folders without any text, and files of a folder
    that lead outside it (a link, '..') are refused, naming the file (and the recipe key that points at it).
    A file the recipe names is read wherever it is: naming it is an explicit choice."""
    file = file or str(path)
    if path.is_dir():
        try:
            files = sorted(p for p in path.rglob("*.txt") if not p.is_dir())
        except RecursionError:
            raise ConfigError(file, key, f"folder {path} is nested too deeply to read",
                              "give a flatter folder of .txt files") from None
        except OSError as exc:
            raise ConfigError(file, key, f"folder {path} cannot be read ({exc.strerror or exc})") from None
        texts = [" ".join(_decode(p, file, key, root=path).split()) for p in files]
        what = f"folder {path} has no non-empty .txt files"
    elif not path.exists() and not path.is_symlink():
        raise ConfigError(file, key, f"file not found: {path}", "fix the path; relative paths start at the "
                          "recipe's folder")
    else:
        # lines end at \n, \r\n or \r only: a U+2028 or form feed inside a text does not split it
        texts = [ln.strip() for ln in io.StringIO(_decode(path, file, key), newline=None)]
        what = f"{path} holds no text"
    texts = [t for t in texts if t]
    if not texts:
        raise ConfigError(file, key, what, "give one text per line (or one text per .txt file)")
    return texts[:limit] if limit else texts


def calibration_texts(loaded, quantize) -> list[str]:
    """The quantize pass's calibration texts: the bundled ones, or its calibration.source, at most samples."""
    spec = quantize.calibration if quantize is not None else None
    n = spec.samples if spec else 64
    if spec is None or spec.source == "builtin":
        return builtin_texts("calibration_texts")[:n]
    return read_texts(loaded.resolve_path(spec.source), n)[:n]
