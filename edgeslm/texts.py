"""Text inputs (verification and calibration texts): bundled ones, and the user's files read strictly.

Torch-free, so that `edgeslm validate` reads the same files the build will, with the same errors."""

from __future__ import annotations

from pathlib import Path

from edgeslm.errors import ConfigError

DATA = Path(__file__).resolve().parent / "data"


def builtin_texts(name: str) -> list[str]:
    path = DATA / f"{name}.txt"
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _decode(path: Path, file: str, key: str | None) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(file, key, f"cannot read {path}: {exc.strerror or exc}") from None
    if b"\x00" in raw:
        raise ConfigError(file, key, f"{path} is not a text file (it holds NUL bytes: binary data?)",
                          "give a .txt file with one text per line, or a folder of .txt files")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(file, key, f"{path} is not UTF-8 text (undecodable byte at offset {exc.start})",
                          "save it as UTF-8") from None


def read_texts(path: Path, limit: int | None = None, file: str | None = None, key: str | None = None) -> list[str]:
    """One text per line of a .txt file, or one text per .txt file in a folder (recursively).

    Binary or non-UTF-8 files and files or folders without any text are refused, naming the file (and
    the recipe key that points at it)."""
    file = file or str(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        texts = [" ".join(_decode(p, file, key).split()) for p in files]
        what = f"folder {path} has no non-empty .txt files"
    elif path.is_file():
        texts = [ln.strip() for ln in _decode(path, file, key).splitlines()]
        what = f"{path} holds no text"
    else:
        raise ConfigError(file, key, f"file not found: {path}", "fix the path; relative paths start at the "
                          "recipe's folder")
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
