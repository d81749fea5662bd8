"""A report in Python: the document the CLI writes, with ways to read and save it."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from symtool.errors import UsageError
from symtool.report import entries as en
from symtool.report.files import csv_text, dumps, read_report, write_atomic

_MARKDOWN_ROWS = 20
"""Rows of the tidy table shown in a notebook before it is cut."""


class Report(Mapping[str, Any]):
    """One symtool report (``align``, ``symmetry``, ``ode``, ``check``, ``diff``, ``inspect``).

    It is the same JSON document ``symtool <command> -o report.json`` writes, held as a
    dict: ``report["checkpoints"][0]["layers"]``, ``report.to_dict()``. A report is a
    read-only mapping; :meth:`to_dict` gives a copy to change.

    Attributes:
        kind: ``align``, ``symmetry``, ``ode``, ...
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        if "schema" not in data or "schema_version" not in data:
            raise UsageError("not a symtool report (no schema/schema_version)")
        self._data = dict(data)
        self._data.pop("matrices", None)

    # ----------------------------------------------------------------- mapping
    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    # ----------------------------------------------------------------- navigation
    @property
    def kind(self) -> str:
        """``align`` for a ``symtool/align`` report."""
        return en.report_kind(self._data)

    @property
    def checkpoints(self) -> list[dict[str, Any]]:
        """The per-checkpoint entries, in step order (``step``, ``path``, ``status``, ...)."""
        return en.checkpoint_entries(self._data)

    @property
    def steps(self) -> list[int | None]:
        """The step of every checkpoint entry."""
        return [e.get("step") for e in self.checkpoints]

    @property
    def layers(self) -> dict[str, list[dict[str, Any]]]:
        """Layer label → its entry in each checkpoint that has it, in checkpoint order.

        Labels are as ``check --layer`` matches them (symmetry's units and attention heads
        are ``units/<name>`` and ``attention/<name>``).
        """
        out: dict[str, list[dict[str, Any]]] = {}
        for e in self.checkpoints:
            for group in en.layer_groups(self._data):
                for layer in en.layer_entries(self._data, e, group):
                    out.setdefault(en.layer_label(self._data, group, layer), []).append(layer)
        return out

    def layer(self, name: str, step: int | str = "last") -> dict[str, Any]:
        """One layer's entry at one step (``last``: the last checkpoint that succeeded)."""
        scope = en.select_checkpoints(self._data, step if step != "all" else "last")
        for e in scope:
            for group in en.layer_groups(self._data):
                for layer in en.layer_entries(self._data, e, group):
                    if en.layer_label(self._data, group, layer) == name:
                        return layer
        raise KeyError(f"no layer {name!r} at step {step!r}; layers: {', '.join(self.layers)}")

    # ----------------------------------------------------------------- output
    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the document."""
        return copy.deepcopy(self._data)

    def to_json(self, path: str | Path | None = None) -> str:
        """The JSON text the CLI writes; also written atomically to ``path`` when given."""
        text = dumps(self._data)
        if path is not None:
            write_atomic(Path(path), text)
        return text

    def _rows(self) -> tuple[list[str], list[dict[str, Any]]]:
        from symtool.report.sink import ROWS

        rows = ROWS.get(str(self._data.get("schema")))
        if rows is None:
            raise UsageError(f"no rows for {self._data.get('schema')} reports")
        columns, items = rows(self._data)
        return columns, list(items)

    def to_csv(self, path: str | Path | None = None) -> str:
        """The tidy CSV of ``--format csv``; also written atomically to ``path`` when given."""
        columns, rows = self._rows()
        text = csv_text(rows, columns)
        if path is not None:
            write_atomic(Path(path), text)
        return text

    def to_pandas(self) -> Any:
        """The tidy rows of :meth:`to_csv` as a ``pandas.DataFrame`` (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise UsageError(
                "Report.to_pandas needs pandas: pip install 'symtool[pandas]'"
            ) from None
        columns, rows = self._rows()
        return pd.DataFrame(rows, columns=columns)

    def plot(
        self,
        path: str | Path,
        *,
        kind: str | None = None,
        layers: Sequence[str] = (),
        step: int | str = "last",
        title: str = "",
    ) -> Path:
        """Draw a figure as ``symtool plot`` does (``.png``/``.svg``/``.pdf``; needs
        ``symtool[plot]``); returns the path."""
        from symtool.report.figure_parts import PlotOptions
        from symtool.report.plot import plot_report

        options = PlotOptions(layers=tuple(layers), step=step, title=title)
        return plot_report(self._data, Path(path), kind=kind, options=options)

    def validate(self) -> str:
        """Check the document against its JSON schema; returns the kind (raises on error)."""
        from symtool.report.schema import validate

        return validate(self._data)

    # ----------------------------------------------------------------- display
    def summary(self) -> str:
        """One line: kind, checkpoints (failed ones), steps, layers."""
        n = len(self.checkpoints)
        failed = sum(1 for e in self.checkpoints if e.get("status") == "failed")
        steps = [s for s in self.steps if s is not None]
        span = f", steps {steps[0]}–{steps[-1]}" if len(steps) > 1 else (
            f", step {steps[0]}" if steps else ""
        )
        done = "" if self._data.get("complete", True) else ", incomplete"
        return (
            f"symtool {self.kind} report: {n} checkpoint{'s' if n != 1 else ''}"
            + (f" ({failed} failed)" if failed else "")
            + f"{span}, {len(self.layers)} layers{done}"
        )

    def __repr__(self) -> str:
        return f"<Report {self.summary()}>"

    def _repr_markdown_(self) -> str:
        """A notebook's view: the summary and the first rows of the tidy table."""
        head = f"**{self.summary()}**\n\n"
        try:
            columns, rows = self._rows()
        except UsageError:
            return head
        shown = [[_cell(r.get(c)) for c in columns] for r in rows[:_MARKDOWN_ROWS]]
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(r) + " |" for r in shown]
        more = len(rows) - len(shown)
        tail = f"\n\n… {more} more rows (`report.to_pandas()`)" if more > 0 else ""
        return head + "\n".join(lines) + tail


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")


def load_report(path: str | Path) -> Report:
    """A report written by the CLI, the API or a training callback (validated)."""
    report = Report(read_report(str(path)))
    report.validate()
    return report
