"""The one output sink: a report as a rich table, JSON or CSV.

Tables are for people (stdout on a terminal, or stderr beside ``--out``); JSON and CSV
are for machines (stdout when piped, or ``--out`` written atomically). Each report
kind registers a table renderer and a tidy-rows function here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from symtool.errors import UsageError
from symtool.report import csv_text, dumps, write_atomic

TableFn = Callable[[dict[str, Any], Console], None]
RowsFn = Callable[[dict[str, Any]], tuple[list[str], Iterable[dict[str, Any]]]]

TABLES: dict[str, TableFn] = {}
ROWS: dict[str, RowsFn] = {}


def register(schema: str, table: TableFn, rows: RowsFn) -> None:
    """Register how a report kind is shown as a table and flattened to CSV rows."""
    TABLES[schema] = table
    ROWS[schema] = rows


def console(stderr: bool = False, width: int | None = None) -> Console:
    """A rich console; plain (no colour, no width games) when not a terminal."""
    return Console(stderr=stderr, width=width, highlight=False, soft_wrap=False)


@dataclass(frozen=True)
class Sink:
    """Where and how a report goes."""

    fmt: str
    out: Path | None

    @classmethod
    def choose(cls, fmt: str | None, out: Path | None) -> Sink:
        """Pick the format: explicit, else by ``--out`` suffix, else table on a TTY."""
        if fmt is None:
            if out is not None:
                fmt = "csv" if out.suffix.lower() == ".csv" else "json"
            else:
                fmt = "table" if sys.stdout.isatty() else "json"
        if fmt == "table" and out is not None:
            raise UsageError("--format table cannot be written to --out; use json or csv")
        return cls(fmt, out)

    def render(self, report: dict[str, Any]) -> str:
        """The report as JSON or CSV text."""
        if self.fmt == "json":
            return dumps(report)
        columns, rows = ROWS[report["schema"]](report)
        return csv_text(rows, columns)

    def emit(self, report: dict[str, Any]) -> None:
        """Write the report; show a table on stderr too when writing a file from a TTY."""
        if self.fmt == "table":
            TABLES[report["schema"]](report, console())
            return
        text = self.render(report)
        if self.out is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        write_atomic(self.out, text)
        if sys.stderr.isatty():
            TABLES[report["schema"]](report, console(stderr=True))


def fmt_num(v: Any, digits: int = 3) -> str:
    """A number for a table cell; '—' for missing."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != 0 and (abs(v) < 10**-digits or abs(v) >= 10**6):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}f}"
    return str(v)


def human_size(n: int | None) -> str:
    """Bytes as B/KiB/MiB/GiB."""
    if n is None:
        return "—"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


# ------------------------------------------------------------------------- inspect


def _inspect_table(report: dict[str, Any], out: Console) -> None:
    t = Table(title="Checkpoints (in step order)", title_justify="left")
    for col in ("step", "checkpoint", "format", "size", "sha256"):
        t.add_column(col, justify="right" if col in ("step", "size") else "left")
    for c in report["checkpoints"]:
        sha = (c["sha256"] or "")[:12]
        t.add_row(
            fmt_num(c["step"]),
            c["path"],
            c["format"],
            human_size(c["size"]),
            sha if not c["error"] else f"[red]error: {c['error']}[/red]",
        )
    out.print(t)
    listing = report.get("tensors")
    if listing:
        tt = Table(title=f"Tensors of {listing['checkpoint']}", title_justify="left")
        for col in ("tensor", "shape", "dtype", "kind", "analyses"):
            tt.add_column(col)
        for it in listing["items"]:
            tt.add_row(
                it["name"],
                "×".join(map(str, it["shape"])) or "scalar",
                it["dtype"],
                it["kind"],
                ", ".join(it["analyses"]) or "—",
            )
        out.print(tt)


def _inspect_rows(report: dict[str, Any]) -> tuple[list[str], Iterable[dict[str, Any]]]:
    cols = ["step", "path", "format", "size", "sha256", "error"]
    return cols, report["checkpoints"]


register("symtool/inspect", _inspect_table, _inspect_rows)
