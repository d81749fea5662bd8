"""The ``symtool`` command line: thin Typer commands over the library.

No math here and no analysis logic: each command parses options into settings, calls
a runner, and hands the report to the one output sink. Errors become one line on
stderr and an exit code (0 ok, 1 a check or an input failed while others were
analysed, 2 bad usage or input, 3 internal error, 130 interrupted).
"""

from __future__ import annotations

import sys
import warnings
from typing import Annotated, Any

import typer

from symtool._version import __version__
from symtool.cli import analyses, reports
from symtool.cli.common import DEBUG, quiet_stdout, say
from symtool.errors import EXIT_INTERRUPTED

app = typer.Typer(
    name="symtool",
    help=(
        "What happened inside your network during training, read from its checkpoints: "
        "CRH alignment and PAH exponents (align), broken and restored parameter symmetries "
        "(symmetry), recurrent cells as ODE integrators (ode)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"symtool {__version__}")
        raise typer.Exit(0)


def _showwarning(
    message: Any, category: Any, filename: str, lineno: int, *a: Any, **k: Any
) -> None:
    say(f"warning: {message}")


@app.callback()
def _main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """symtool: CRH/PAH alignment, parameter symmetries and ODE stability from checkpoints."""
    ctx.obj = {"debug": debug}
    DEBUG[0] = debug
    warnings.showwarning = _showwarning


# Every command, registered here and nowhere else.
app.command("inspect")(analyses.inspect)
app.command("align")(analyses.align)
app.command("ode")(analyses.ode)
app.command("symmetry")(analyses.symmetry)
app.command("check")(reports.check_command)
app.command("schema")(reports.schema_command)
app.command("plot")(reports.plot_command)
app.command("diff")(reports.diff_command)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # raised outside a command (e.g. during import)
        say("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        quiet_stdout()
        sys.exit(0)
