"""The click group every command hangs on, and the one place that turns errors into messages and exit codes."""

from __future__ import annotations

import logging
import os
import sys

import click

from edgeslm import __version__
from edgeslm.errors import EXIT_INTERNAL, EdgeSLMError


class _Warnings(logging.Handler):
    """Warnings from library code (e.g. a known_hosts line that was skipped) as one stderr line each."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"warning: {record.getMessage()}", err=True)


def _route_warnings() -> None:
    logger = logging.getLogger("edgeslm")
    if not any(isinstance(h, _Warnings) for h in logger.handlers):
        logger.addHandler(_Warnings(logging.WARNING))
        logger.propagate = False


class FullHelpGroup(click.Group):
    """Lists each command with its whole first sentence, wrapped, instead of click's cut at the terminal width
    ("Build RECIPE (a file or a shipped recipe name; default: the...")."""

    def format_commands(self, ctx, formatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit=400)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    group_class = type  # subgroups (devices, cache, ...) are of this class too


class EdgeGroup(FullHelpGroup):
    def invoke(self, ctx):
        _route_warnings()
        try:
            return super().invoke(ctx)
        except EdgeSLMError as exc:
            if os.environ.get("EDGESLM_DEBUG"):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:  # output piped into `head` and friends
            sys.stderr.close()
            ctx.exit(0)
        except ModuleNotFoundError as exc:
            from edgeslm.config.packages import BUILD_MODULES

            root = (exc.name or "").partition(".")[0]
            if root not in BUILD_MODULES or os.environ.get("EDGESLM_DEBUG"):
                raise
            click.echo(f"error: this command needs edgeslm's build tools (the package {root!r} is not installed "
                       "here); install them: pip install 'edgeslm[build]' (a light install deploys, profiles and "
                       "reports only)", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            if os.environ.get("EDGESLM_DEBUG"):
                raise
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:  # noqa: BLE001 - last line of defence: a bug, reported as one line
            if os.environ.get("EDGESLM_DEBUG"):
                raise
            click.echo(f"internal error: {type(exc).__name__}: {exc} (this is a bug in edgeslm; "
                       "rerun with EDGESLM_DEBUG=1 for the traceback and report it)", err=True)
            ctx.exit(EXIT_INTERNAL)


@click.group(cls=EdgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeslm")
def main() -> None:
    """edgeslm: compress small language models, export them to ExecuTorch and ONNX for a CPU target,
    and deploy and measure them on devices you own.

    \b
    Exit codes: 0 ok, 1 a check failed (e.g. verification), 2 bad input, 70 internal error.
    """
