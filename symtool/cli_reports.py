"""Commands that read reports: ``check``, ``schema``, ``plot`` and ``diff``.

Registered on the one Typer ``app`` of :mod:`symtool.cli` (which imports this module
last). Like every command they are thin: read and validate the report(s), call the
library (:mod:`symtool.check`, :mod:`symtool.schema`, :mod:`symtool.plot`,
:mod:`symtool.diff`), hand the result to the sink. Exit codes: 0 ok, 1 a requirement
failed, 2 a malformed report, expression or option.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from symtool import check as ck
from symtool import schema as sch
from symtool.cli import ConfigOpt, OutOpt, app, command
from symtool.config import RunConfig, find_config, pick
from symtool.errors import EXIT_FAILED, EXIT_OK, ReportError, UsageError
from symtool.render import Sink, console, fmt_num, register
from symtool.report import read_report, write_atomic

ReportArg = Annotated[
    str,
    typer.Argument(help="A symtool JSON report, or - to read it from stdin.", show_default=False),
]
LayerOpt = Annotated[
    list[str] | None,
    typer.Option("--layer", help="Only layers whose name matches this glob (repeatable)."),
]


def _say(message: str) -> None:
    sys.stderr.write(f"symtool: {message}\n")
    sys.stderr.flush()


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


def _sink(fmt: str | None, out: Path | None, allowed: tuple[str, ...]) -> Sink:
    if fmt is not None and fmt not in allowed:
        raise UsageError(f"--format must be {', '.join(allowed)} (got {fmt!r})")
    return Sink.choose(fmt, out)


# -------------------------------------------------------------------------- check


@app.command("check")
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
    requirements = pick(require or None, config, "check", "require", [])
    if isinstance(requirements, str):
        requirements = [requirements]
    globs = pick(layer or None, config, "check", "layer", [])
    globs = [globs] if isinstance(globs, str) else list(globs)
    scope = pick(step, config, "check", "step", "last")
    result = ck.check(data, requirements, layers=globs, step=scope)
    settings = {
        "report": "<stdin>" if report == "-" else report,
        "config": None if config.path is None else str(config.path),
        "require": list(requirements),
        "layers": globs,
        "step": str(scope),
    }
    rep = ck.check_report(result, data, settings)
    if fmt in (None, "text") and out is None:
        _print_failures(rep)
    else:
        sink = _sink(None if fmt == "text" else fmt, out, ("text", "table", "json", "csv"))
        sink.emit(rep)
        if sink.fmt != "table":
            _print_failures(rep)
    _say(rep["summary"])
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
        console(stderr=True).print(_failure_table(rep))
        return
    for f in rep["failures"]:
        sys.stderr.write(failure_line(f) + "\n")
    sys.stderr.flush()


def failure_line(f: dict[str, Any]) -> str:
    """One failure as a line: checkpoint, layer, metric = value [reason], requirement."""
    where = f"step {f['step']}" if f["step"] is not None else str(f["checkpoint"])
    if f["layer"] is not None:
        where += f" · layer {f['layer']}"
    why = f" [{f['reason']}]" if f["reason"] else ""
    value = "null" if f["value"] is None else ck.show(f["value"])
    return f"FAIL {where} · {f['metric']} = {value}{why} · needs {f['requirement']}"


def _failure_table(rep: dict[str, Any]) -> Table:
    t = Table(title="Failed requirements", title_justify="left")
    for col in ("checkpoint", "layer", "metric", "value", "requirement", "reason"):
        t.add_column(col, justify="right" if col == "value" else "left", overflow="fold")
    for f in rep["failures"]:
        where = f"step {f['step']}" if f["step"] is not None else (f["checkpoint"] or "—")
        t.add_row(
            where,
            f["layer"] or "—",
            f["metric"],
            fmt_num(f["value"]),
            f["requirement"],
            f["reason"] or "",
        )
    return t


def _check_table(rep: dict[str, Any], out: Console) -> None:
    t = Table(title="Requirements", title_justify="left", caption=rep["summary"])
    for col in ("requirement", "metric", "level", "evaluated", "held", "failures"):
        t.add_column(col, justify="right" if col in ("evaluated", "failures") else "left")
    for r in rep["requirements"]:
        metrics = ", ".join(r["metrics"][:3]) + (" …" if len(r["metrics"]) > 3 else "")
        held = "[green]yes[/green]" if r["held"] else "[red]no[/red]"
        t.add_row(
            r["requirement"], metrics, r["level"], str(r["evaluated"]), held, str(r["failures"])
        )
    out.print(t)
    if rep["failures"]:
        out.print(_failure_table(rep))


def _check_rows(rep: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    cols = ["requirement", "held", "step", "checkpoint", "layer", "metric", "value", "reason"]
    rows: list[dict[str, Any]] = []
    for r in rep["requirements"]:
        fails = [f for f in rep["failures"] if f["requirement"] == r["requirement"]]
        if not fails:
            rows.append({"requirement": r["requirement"], "held": True})
        rows.extend({**f, "held": False} for f in fails)
    return cols, rows


register("symtool/check", _check_table, _check_rows)


# ------------------------------------------------------------------------- schema


@app.command("schema")
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


# --------------------------------------------------------------------------- plot


@app.command("plot")
@command
def plot_command(
    report: ReportArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Figure file: .png, .svg or .pdf.")],
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="Figure: align relations|kappa|pah, symmetry ranks|spectra, ode "
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
    from symtool import plot

    data = load_report(report)
    options = plot.PlotOptions(
        layers=tuple(layer or ()),
        step=step or "last",
        matrices=matrices,
        title="stdin" if report == "-" else Path(report).name,
    )
    path = plot.plot_report(data, out, kind=kind, options=options)
    _say(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------- diff


@app.command("diff")
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
    from symtool.diff import Side, diff_reports

    if a == "-" and b == "-":
        raise UsageError("only one of A and B can be - (stdin)")
    sink = _sink(fmt, out, ("table", "json", "csv"))
    rep = diff_reports(
        Side(load_report(a), "<stdin>" if a == "-" else a, step_a),
        Side(load_report(b), "<stdin>" if b == "-" else b, step_b),
        layers=tuple(layer or ()),
        metrics=tuple(metric or ()),
        changed=changed,
    )
    sink.emit(rep)
    return 0


def _side(rep: dict[str, Any], key: str) -> str:
    s = rep[key]
    where = f"step {s['step']}" if s["step"] is not None else s["checkpoint"]
    return f"{key.upper()}: {s['source']} ({where})"


def _diff_table(rep: dict[str, Any], out: Console) -> None:
    t = Table(
        title=f"{rep['kind']} diff — {_side(rep, 'a')} · {_side(rep, 'b')}",
        title_justify="left",
    )
    for col, just in (("layer", "left"), ("metric", "left"), ("A", "right"), ("B", "right")):
        t.add_column(col, justify=just)
    t.add_column("B − A", justify="right")
    rows = rep["rows"]
    for i, r in enumerate(rows):
        last = i + 1 == len(rows) or rows[i + 1]["layer"] != r["layer"]
        if r["only"] and r["metric"] is None:
            t.add_row(r["layer"] or "—", f"(layer only in {r['only'].upper()})", "", "", "")
        else:
            t.add_row(
                r["layer"] or "—",
                r["metric"],
                "(absent)" if r["only"] == "b" else fmt_num(r["a"]),
                "(absent)" if r["only"] == "a" else fmt_num(r["b"]),
                _delta(r["delta"]),
                end_section=last,
            )
    out.print(t)


def _delta(v: float | None) -> str:
    if v is None:
        return ""
    text = fmt_num(v)
    return f"+{text}" if v > 0 else text


def _diff_rows(rep: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    return ["layer", "metric", "a", "b", "delta", "only"], rep["rows"]


register("symtool/diff", _diff_table, _diff_rows)
