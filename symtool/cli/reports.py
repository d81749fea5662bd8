"""Commands that read reports: ``check``, ``schema``, ``plot`` and ``diff``.

Registered on the Typer app in :mod:`symtool.cli.app`. Like every command they are thin:
read and validate the report(s), call the library (:mod:`symtool.report.check`,
:mod:`symtool.report.schema`, :mod:`symtool.report.plot`, :mod:`symtool.report.diff`), hand
the result to the sink. Exit codes: 0 ok, 1 a requirement
failed, 2 a malformed report, expression or option.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from symtool.cli.common import ConfigOpt, OutOpt, command, say
from symtool.config import RunConfig, find_config, resolve
from symtool.errors import EXIT_FAILED, EXIT_OK, ReportError, UsageError
from symtool.report import check as ck
from symtool.report import schema as sch
from symtool.report.files import read_report, write_atomic
from symtool.report.sink import Sink
from symtool.report.tables import console, failure_line, failure_table

ReportArg = Annotated[
    str,
    typer.Argument(help="A symtool JSON report, or - to read it from stdin.", show_default=False),
]


LayerOpt = Annotated[
    list[str] | None,
    typer.Option("--layer", help="Only layers whose name matches this glob (repeatable)."),
]


def load_report(source: str) -> dict[str, Any]:
    """Read a report from a file or ``-`` and validate it against its schema.

    Raises:
        ReportError: unreadable, not JSON, not a report, or invalid (with the JSON path).
    """
    report = read_report(source)
    try:
        sch.validate(report)
    except ReportError as exc:
        where = "<stdin>" if source == "-" else source
        raise ReportError(f"invalid report: {exc.message}", where) from None
    return report


def _report_sink(fmt: str | None, out: Path | None, allowed: tuple[str, ...]) -> Sink:
    if fmt is not None and fmt not in allowed:
        raise UsageError(f"--format must be {', '.join(allowed)} (got {fmt!r})")
    return Sink.choose(fmt, out)


@command
def check_command(
    report: ReportArg,
    require: Annotated[
        list[str] | None,
        typer.Option(
            "--require",
            "-r",
            help="METRIC OP VALUE, e.g. 'b-GWA>=0.8', 'kappa(H_a~Z_a)<1.5' (repeatable; "
            "default: [check] require in symtool.toml).",
        ),
    ] = None,
    layer: LayerOpt = None,
    step: Annotated[
        str | None,
        typer.Option("--step", help="last (last checkpoint that succeeded; default) | all | N."),
    ] = None,
    config_path: ConfigOpt = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="text (failures and summary on stderr; default) | table | json | csv.",
        ),
    ] = None,
    out: OutOpt = None,
) -> int:
    """Check requirements on a report's metrics; exit 0 when all hold, 1 when any fails."""
    data = load_report(report)
    config = _check_config(report, config_path)
    cs = resolve(
        ck.CheckSettings, {"require": require or None, "layer": layer or None, "step": step},
        config, "check",
    )
    result = ck.check(data, cs.require, layers=cs.layer, step=cs.step)
    settings = {
        "report": "<stdin>" if report == "-" else report,
        "config": None if config.path is None else str(config.path),
        "require": list(cs.require),
        "layers": list(cs.layer),
        "step": str(cs.step),
    }
    rep = ck.check_report(result, data, settings)
    if fmt in (None, "text") and out is None:
        _print_failures(rep)
    else:
        sink = _report_sink(None if fmt == "text" else fmt, out, ("text", "table", "json", "csv"))
        sink.emit(rep)
        if sink.fmt != "table":
            _print_failures(rep)
    say(rep["summary"])
    return EXIT_OK if result.passed else EXIT_FAILED


def _check_config(report: str, explicit: Path | None) -> RunConfig:
    """``--config``, else ``symtool.toml`` beside the report file (none for stdin)."""
    if explicit is not None or report != "-":
        return find_config([] if report == "-" else [report], explicit)
    return RunConfig()


def _print_failures(rep: dict[str, Any]) -> None:
    """Failures on stderr: a table on a terminal, else one line each."""
    if not rep["failures"]:
        return
    if sys.stderr.isatty():
        console(stderr=True).print(failure_table(rep))
        return
    for f in rep["failures"]:
        sys.stderr.write(failure_line(f) + "\n")
    sys.stderr.flush()


@command
def schema_command(
    kind: Annotated[
        str | None,
        typer.Argument(
            help="align | symmetry | ode | inspect | check | diff (default: list the kinds).",
            show_default=False,
        ),
    ] = None,
    out: OutOpt = None,
) -> int:
    """Print the versioned JSON Schema that reports of one kind validate against."""
    if kind is None:
        for k in sch.available():
            s = sch.load_schema(k)
            version = s["properties"]["schema_version"]["const"]
            sys.stdout.write(f"{k}\tsymtool/{k}\tschema_version {version}\n")
        return 0
    if kind not in sch.available():
        raise UsageError(f"no schema for {kind!r} (known: {', '.join(sch.available())})")
    text = sch.schema_text(kind)
    if out is not None:
        write_atomic(out, text)
    else:
        sys.stdout.write(text)
    return 0


@command
def plot_command(
    report: ReportArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Figure file: .png, .svg or .pdf.")],
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="Figure: align relations|kappa|pah|collapse, symmetry ranks|spectra, ode "
            "stability|lyapunov (first is the default), or all (one page).",
        ),
    ] = None,
    layer: LayerOpt = None,
    step: Annotated[
        str | None,
        typer.Option("--step", help="Checkpoint of one-checkpoint figures: last (default) | N."),
    ] = None,
    matrices: Annotated[
        Path | None,
        typer.Option(
            "--matrices",
            help="Matrices saved by align --save-matrices: eigenvalue points in --kind pah.",
        ),
    ] = None,
) -> int:
    """Draw a report: alignment over training, PAH fits, spectra (needs matplotlib)."""
    from symtool.report import plot

    data = load_report(report)
    options = plot.PlotOptions(
        layers=tuple(layer or ()),
        step=step or "last",
        matrices=matrices,
        title="stdin" if report == "-" else Path(report).name,
    )
    path = plot.plot_report(data, out, kind=kind, options=options)
    say(f"wrote {path}")
    return 0


@command
def diff_command(
    a: Annotated[str, typer.Argument(help="Report A (JSON file, or - for stdin).")],
    b: Annotated[str, typer.Argument(help="Report B (JSON file, or - for stdin).")],
    step_a: Annotated[
        str, typer.Option("--step-a", help="Checkpoint of A: last (default) | N.")
    ] = "last",
    step_b: Annotated[
        str, typer.Option("--step-b", help="Checkpoint of B: last (default) | N.")
    ] = "last",
    layer: LayerOpt = None,
    metric: Annotated[
        list[str] | None,
        typer.Option("--metric", "-m", help="Only metrics matching this glob, e.g. 'b-*.alpha'."),
    ] = None,
    changed: Annotated[
        bool, typer.Option("--changed", help="Only rows whose values differ.")
    ] = False,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="table | json | csv. Default: table on a terminal, json when piped or with --out.",
        ),
    ] = None,
    out: OutOpt = None,
) -> int:
    """Two reports of the same layers side by side, with B − A for every metric."""
    from symtool.report.diff import Side, diff_reports

    if a == "-" and b == "-":
        raise UsageError("only one of A and B can be - (stdin)")
    sink = _report_sink(fmt, out, ("table", "json", "csv"))
    rep = diff_reports(
        Side(load_report(a), "<stdin>" if a == "-" else a, step_a),
        Side(load_report(b), "<stdin>" if b == "-" else b, step_b),
        layers=tuple(layer or ()),
        metrics=tuple(metric or ()),
        changed=changed,
    )
    sink.emit(rep)
    return 0
