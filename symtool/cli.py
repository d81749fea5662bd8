"""The ``symtool`` command line: thin Typer commands over the library.

No math here and no analysis logic: each command parses options into settings, calls
a runner, and hands the report to the one output sink. Errors become one line on
stderr and an exit code (0 ok, 1 a check or an input failed while others were
analysed, 2 bad usage or input, 3 internal error, 130 interrupted).
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import click
import typer

import symtool
from symtool import checkpoints as ck
from symtool.config import RunConfig, find_config, pick
from symtool.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, SymtoolError, UsageError
from symtool.render import Sink

EXIT_INTERNAL = 3

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

F = TypeVar("F", bound=Callable[..., Any])


def _debug() -> bool:
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx else None
    flag = bool(root and isinstance(root.obj, dict) and root.obj.get("debug"))
    return flag or os.environ.get("SYMTOOL_DEBUG", "") not in ("", "0")


def _say(message: str) -> None:
    sys.stderr.write(f"symtool: {message}\n")
    sys.stderr.flush()


def command(fn: F) -> F:
    """Turn SymtoolError into one line + exit code; other errors into a short line."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = fn(*args, **kwargs)
        except (typer.Exit, click.exceptions.Exit, click.ClickException):
            raise
        except SymtoolError as exc:
            if _debug():
                traceback.print_exc()
            _say(f"error: {exc}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _say("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:
            if _debug():
                traceback.print_exc()
            first = str(exc).splitlines()[0] if str(exc) else ""
            _say(
                f"internal error: {type(exc).__name__}: {first} (rerun with --debug)"
            )
            raise typer.Exit(EXIT_INTERNAL) from None
        raise typer.Exit(code or 0)

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"symtool {symtool.__version__}")
        raise typer.Exit(0)


def _showwarning(
    message: Any, category: Any, filename: str, lineno: int, *a: Any, **k: Any
) -> None:
    _say(f"warning: {message}")


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
    warnings.showwarning = _showwarning


# ------------------------------------------------------------------ shared options

Paths = Annotated[
    list[str],
    typer.Argument(
        help="Checkpoint files, directories or globs (several allowed).", show_default=False
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="symtool.toml to use (default: the one beside the checkpoints)."),
]
StepsOpt = Annotated[
    str | None, typer.Option("--steps", help="Only these steps, e.g. 0,100,500-1000.")
]
EveryOpt = Annotated[
    int | None, typer.Option("--every", help="Every K-th checkpoint (first and last kept).")
]
LastOpt = Annotated[int | None, typer.Option("--last", help="Only the last N checkpoints.")]
TrustOpt = Annotated[
    bool | None,
    typer.Option(
        "--trust-pickle",
        help="Allow full unpickling of .pt files (CAN RUN CODE; only for files you trust).",
    ),
]
FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format",
        "-f",
        help="table | json | csv. Default: table on a terminal, json when piped or with --out.",
    ),
]
OutOpt = Annotated[
    Path | None, typer.Option("--out", "-o", help="Write the report here (atomically).")
]


def _checkpoints(
    paths: list[str],
    config: RunConfig,
    *,
    steps: str | None,
    every: int | None,
    last: int | None,
) -> list[ck.Checkpoint]:
    """Discover and select checkpoints, never mistaking the probe file for one."""
    exclude = [p for p in (config.path_value("data", "path"), config.path) if p is not None]
    found = ck.discover(paths, exclude=exclude)
    chosen = ck.select(
        found,
        steps=pick(steps, config, "checkpoints", "steps", None),
        every=pick(every, config, "checkpoints", "every", None),
        last=pick(last, config, "checkpoints", "last", None),
    )
    if not chosen:
        raise UsageError("no checkpoint left after --steps/--every/--last")
    return chosen


def _sink(fmt: str | None, out: Path | None) -> Sink:
    if fmt is not None and fmt not in ("table", "json", "csv"):
        raise UsageError(f"--format must be table, json or csv (got {fmt!r})")
    return Sink.choose(fmt, out)


# ------------------------------------------------------------------------ commands


@app.command()
@command
def inspect(
    paths: Paths,
    tensors: Annotated[
        bool | None,
        typer.Option(
            "--tensors/--no-tensors",
            help="List every tensor of one checkpoint (default: when only one is found).",
        ),
    ] = None,
    config_path: ConfigOpt = None,
    steps: StepsOpt = None,
    every: EveryOpt = None,
    last: LastOpt = None,
    trust_pickle: TrustOpt = None,
    fmt: FormatOpt = None,
    out: OutOpt = None,
) -> int:
    """List checkpoints in step order and, for one, every tensor and the analyses it gets."""
    from symtool.inspection import inspect_checkpoints

    config = find_config(paths, config_path)
    ckpts = _checkpoints(paths, config, steps=steps, every=every, last=last)
    report = inspect_checkpoints(
        ckpts,
        tensors=len(ckpts) == 1 if tensors is None else tensors,
        trust_pickle=bool(pick(trust_pickle, config, "checkpoints", "trust_pickle", False)),
    )
    _sink(fmt, out).emit(report)
    return report_exit_code(report)


def report_exit_code(report: dict[str, Any]) -> int:
    """2 when every checkpoint failed, 1 when some did, else 0; each failure on stderr."""
    entries = report.get("checkpoints", [])
    for c in entries:
        if c.get("error"):
            _say(f"error: {c['error']}")
    failed = sum(1 for c in entries if c.get("error"))
    if entries and failed == len(entries):
        return EXIT_BAD_INPUT
    return 1 if failed else 0


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # raised outside a command (e.g. during import)
        _say("interrupted")
        sys.exit(EXIT_INTERRUPTED)
