"""The one output sink: a report as a rich table, JSON or CSV.

Tables are for people (stdout on a terminal, or stderr beside ``--out``); JSON and CSV
are for machines (stdout when piped, or ``--out`` written atomically). Each report
kind has a table renderer and a tidy-rows function, mapped in :data:`TABLES` and :data:`ROWS`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from symtool.errors import UsageError
from symtool.report import tables, tables_align, tables_ode, tables_symmetry
from symtool.report.files import csv_text, dumps, write_atomic
from symtool.report.tables import console

TableFn = Callable[[dict[str, Any], Console], None]


RowsFn = Callable[[dict[str, Any]], tuple[list[str], Iterable[dict[str, Any]]]]


TABLES: dict[str, TableFn] = {
    "symtool/inspect": tables.inspect_table,
    "symtool/check": tables.check_table,
    "symtool/diff": tables.diff_table,
    "symtool/align": tables_align.align_table,
    "symtool/ode": tables_ode.ode_table,
    "symtool/symmetry": tables_symmetry.symmetry_table,
}
"""How each report kind is shown as a table."""

ROWS: dict[str, RowsFn] = {
    "symtool/inspect": tables.inspect_rows,
    "symtool/check": tables.check_rows,
    "symtool/diff": tables.diff_rows,
    "symtool/align": tables_align.align_rows,
    "symtool/ode": tables_ode.ode_rows,
    "symtool/symmetry": tables_symmetry.symmetry_rows,
}
"""How each report kind is flattened to CSV rows."""


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
