"""What every command shares: error handling and exit codes, common options, the sink,
progress on stderr and partial reports written to ``--out`` (for ``--resume``).

Exit codes (README, one place): 0 ok, 1 a check or some checkpoint/layer failed while others
were analysed, 2 bad usage or input, 3 internal error, 130 interrupted.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from symtool.config import RunConfig
from symtool.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, SymtoolError, UsageError
from symtool.report.sink import Sink

F = TypeVar("F", bound=Callable[..., Any])


DEBUG = [False]
"""Set by the top-level ``--debug`` on every invocation (see :func:`_main`)."""


CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
"""Click's base exception, found through typer: recent typer vendors its own click, and
symtool does not depend on the ``click`` package."""




def debug_on() -> bool:
    return DEBUG[0] or os.environ.get("SYMTOOL_DEBUG", "") not in ("", "0")


def say(message: str) -> None:
    sys.stderr.write(f"symtool: {message}\n")
    sys.stderr.flush()


def command(fn: F) -> F:
    """Turn SymtoolError into one line + exit code; other errors into a short line."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = fn(*args, **kwargs)
        except (typer.Exit, CLICK_EXCEPTION):
            raise
        except SymtoolError as exc:
            if debug_on():
                traceback.print_exc()
            say(f"error: {exc}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            say("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:  # `symtool ... | head`: the reader left, nothing is wrong
            quiet_stdout()
            raise typer.Exit(0) from None
        except Exception as exc:
            if debug_on():
                traceback.print_exc()
            first = str(exc).splitlines()[0] if str(exc) else ""
            say(f"internal error: {type(exc).__name__}: {first} (rerun with --debug)")
            raise typer.Exit(EXIT_INTERNAL) from None
        raise typer.Exit(code or 0)

    return wrapper  # type: ignore[return-value]


def quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


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


ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue an interrupted run from its --out report.")
]


ModelArgOpt = Annotated[
    list[str] | None, typer.Option("--model-arg", help="Factory keyword argument key=value.")
]


OutOpt = Annotated[
    Path | None, typer.Option("--out", "-o", help="Write the report here (atomically).")
]


def output_sink(fmt: str | None, out: Path | None) -> Sink:
    if fmt is not None and fmt not in ("table", "json", "csv"):
        raise UsageError(f"--format must be table, json or csv (got {fmt!r})")
    return Sink.choose(fmt, out)


def report_exit_code(report: dict[str, Any]) -> int:
    """2 when every checkpoint failed, 1 when some did, else 0; each failure on stderr."""
    entries = report.get("checkpoints", [])
    for c in entries:
        if c.get("error"):
            say(f"error: {c['error']}")
    failed = sum(1 for c in entries if c.get("error"))
    if entries and failed == len(entries):
        return EXIT_BAD_INPUT
    return 1 if failed else 0


def failed_layers(report: dict[str, Any]) -> int:
    """(checkpoint, layer) pairs marked failed, announced on stderr."""
    n = sum(
        1
        for e in report.get("checkpoints", [])
        for layer in e.get("layers") or []
        if layer.get("status") == "failed"
    )
    if n:
        say(f"{n} layer(s) failed; see the report")
    return n


def undefined_values(report: dict[str, Any]) -> int:
    """Values left undefined because a matrix could not be decomposed (reason ``failed: …``),
    each (checkpoint, layer, reason) announced on stderr once; also each layer warning
    (``warnings`` of align layers) once per (layer, message). Returns the number of values."""
    count = 0
    seen: set[tuple[str, str]] = set()
    for e in report.get("checkpoints", []):
        for layer in e.get("layers") or []:
            if layer.get("status") != "ok":
                continue
            for w in layer.get("warnings") or []:
                if (layer["name"], w["message"]) not in seen:
                    seen.add((layer["name"], w["message"]))
                    say(f"warning: layer {layer['name']}: {w['message']}")
            why: dict[str, list[str]] = {}
            for group in ("relations", "cross_terms"):
                for rid, r in (layer.get(group) or {}).items():
                    if r.get("alpha") is None and str(r.get("reason") or "").startswith("failed"):
                        why.setdefault(r["reason"], []).append(f"α({rid})")
            for fid, f in ((layer.get("pah") or {}).get("fits") or {}).items():
                if f.get("kappa") is None and str(f.get("reason") or "").startswith("failed"):
                    why.setdefault(f["reason"], []).append(f"κ({fid})")
            for reason, what in why.items():
                count += len(what)
                say(
                    f"error: step {e.get('step')} layer {layer['name']}: "
                    f"{', '.join(what)} undefined: {reason}"
                )
    return count


def parse_model_args(pairs: list[str] | None, config: RunConfig) -> dict[str, Any]:
    """``--model-arg key=value`` (values parsed as TOML scalars) over ``[model.args]``."""
    from symtool.config import tomllib

    args = dict(config.get("model", "args", {}) or {})
    for item in pairs or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--model-arg expects key=value (got {item!r})")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        args[key.strip()] = value
    return args


def model_arg_flags(pairs: list[str] | None) -> dict[str, Any]:
    """``--model-arg key=value`` alone (the job merges them over ``[model.args]``)."""
    return parse_model_args(pairs, RunConfig())


def local_spec(spec: str | None) -> str | None:
    """A ``file.py:function`` given on the command line, made absolute when the file is in
    the working directory (as a ``--data FILE`` path is); otherwise left to be resolved
    against the config file's folder, as values from the file are."""
    if spec is None or ":" not in spec:
        return spec
    file, _, fn = spec.rpartition(":")
    path = Path(file).expanduser()
    if file.endswith(".py") and not path.is_absolute() and path.is_file():
        return f"{path.resolve()}:{fn}"
    return spec


def progress_bar(enabled: bool):
    """A rich progress bar on stderr when it is a terminal; otherwise nothing."""
    import contextlib

    if not enabled:
        return contextlib.nullcontext(), None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from symtool.report.sink import console

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[name]}"),
        console=console(stderr=True),
        transient=True,
    )
    task = bar.add_task("checkpoints", total=None, name="")

    def update(i: int, total: int, name: str) -> None:
        bar.update(task, completed=i, total=total, name=name)

    return bar, update


def run_with_resume(
    job: Any, sink: Sink, *, resume: bool, **run: Any
) -> dict[str, Any] | None:
    """Run ``job`` (:class:`symtool.api.jobs.Job`) with a progress bar on a terminal and
    partial reports written to ``--out`` after each checkpoint; with ``--resume``, continue
    the report already there. ``run``: more :meth:`Job.run` keywords."""
    from symtool.report.files import write_atomic

    if resume and (sink.out is None or sink.fmt != "json"):
        raise UsageError("--resume needs --out FILE.json (the partial report to continue)")

    def on_partial(partial: dict[str, Any]) -> None:
        if sink.out is not None and sink.fmt == "json":
            write_atomic(sink.out, sink.render(partial))

    bar, update = progress_bar(sys.stderr.isatty())
    with bar:
        return job.run(
            previous=sink.out if resume else None, on_partial=on_partial, progress=update, **run
        )
