"""The exception tree.

`UserError` and its children are problems with what the user gave us (files, keys, model names,
devices): the CLI prints them as one line and exits with `EXIT_USER`. `CheckFailed` is a build or
run that worked as designed and found the result wanting (a verification threshold missed): exit
`EXIT_FAILED`. Anything else reaching the CLI is a bug in edgeslm (`EXIT_INTERNAL`).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USER = 2
EXIT_INTERNAL = 70


class EdgeSLMError(Exception):
    exit_code = EXIT_INTERNAL


class UserError(EdgeSLMError):
    """Bad input. The message names the file/key/model/device, what is wrong and how to fix it."""

    exit_code = EXIT_USER


class ConfigError(UserError):
    """A recipe, target or devices file is invalid."""

    def __init__(self, file: str, key: str | None, problem: str, fix: str | None = None):
        self.file, self.key, self.problem, self.fix = file, key, problem, fix
        where = f"{file}: {key}" if key else file
        msg = f"{where}: {problem}"
        if fix:
            msg += f" ({fix})"
        super().__init__(msg)


class ModelSourceError(UserError):
    """The model source cannot be found or loaded."""


class ExportError(UserError):
    """An exporter could not turn this model into a file (an architecture or option it does not handle);
    the message names its log and what to change."""


class MissingDependency(UserError):
    """An optional package is needed for what was asked."""

    def __init__(self, package: str, purpose: str, install: str | None = None):
        install = install or f"pip install {package}"
        super().__init__(f"{purpose} needs the package '{package}': {install}")


class CheckFailed(EdgeSLMError):
    """The work ran, but its result failed a check the user asked for (e.g. verification)."""

    exit_code = EXIT_FAILED


class InternalError(EdgeSLMError):
    """A bug in edgeslm: please report it."""
