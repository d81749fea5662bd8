"""The output sink (:mod:`symtool.report.sink`): which format, and every report kind rendered.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from symtool.errors import UsageError
from symtool.report import schema
from symtool.report.files import dumps
from symtool.report.sink import ROWS, TABLES, Sink
from tests.report import samples

VALID = ("symtool/inspect", "symtool/check", "symtool/diff")  # samples that validate


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


# ------------------------------------------------------------------ choosing the format


@pytest.mark.parametrize(
    ("fmt", "out", "tty", "expected"),
    [
        (None, None, True, "table"),  # a person at a terminal
        (None, None, False, "json"),  # piped
        (None, "r.csv", True, "csv"),  # by --out's suffix, terminal or not
        (None, "R.CSV", False, "csv"),
        (None, "r.json", True, "json"),
        (None, "r.txt", False, "json"),
        (None, "report", True, "json"),
        ("csv", None, True, "csv"),  # --format wins over everything
        ("json", None, True, "json"),
        ("table", None, False, "table"),
        ("json", "r.csv", False, "json"),
        ("csv", "r.json", True, "csv"),
    ],
)
def test_choose_by_format_then_out_suffix_then_tty(
    monkeypatch: pytest.MonkeyPatch, fmt: str | None, out: str | None, tty: bool, expected: str
) -> None:
    monkeypatch.setattr(sys, "stdout", _Stream(tty))
    sink = Sink.choose(fmt, None if out is None else Path(out))
    assert sink == Sink(expected, None if out is None else Path(out))


def test_a_table_cannot_be_written_to_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", _Stream(True))
    with pytest.raises(UsageError, match="--format table cannot be written to --out"):
        Sink.choose("table", Path("r.txt"))


# ------------------------------------------------------------------ every report kind


def test_every_report_kind_has_a_table_and_rows() -> None:
    kinds = {f"symtool/{k}" for k in schema.KINDS}
    assert set(TABLES) == set(ROWS) == set(samples.ALL) == kinds


@pytest.mark.parametrize("kind", sorted(samples.ALL))
def test_csv_of_every_report_kind(kind: str) -> None:
    report = samples.ALL[kind]()
    text = Sink("csv", None).render(report)
    rows = list(csv.reader(io.StringIO(text)))
    columns = list(ROWS[kind](report)[0])
    assert rows[0] == columns and len(rows) > 2
    assert all(len(r) == len(columns) for r in rows)


@pytest.mark.parametrize("kind", VALID)
def test_json_is_the_report_as_dumps_writes_it(kind: str) -> None:
    report = samples.ALL[kind]()
    text = Sink("json", None).render(report)
    assert text == dumps(report) and json.loads(text)["schema"] == kind


_NO_CLI = """
import json, sys
from symtool.report.sink import Sink
for name in sys.argv[1:]:
    report = json.loads(open(name, encoding="utf-8").read())
    sys.stdout.write(Sink("csv", None).render(report))
    sys.stdout.write("=" * 8 + "\\n")
    Sink("table", None).emit(report)
    sys.stdout.write("=" * 8 + "\\n")
loaded = sorted(m for m in sys.modules if m.startswith("symtool.cli"))
sys.stdout.write("cli modules: " + ",".join(loaded) + "\\n")
"""


def test_every_kind_renders_without_importing_the_cli(tmp_path: Path) -> None:
    """Check and diff tables were once registered by importing the CLI: rendering a check
    report from library code raised KeyError 'symtool/check'."""
    files = []
    for kind, make in samples.ALL.items():
        path = tmp_path / f"{kind.split('/')[1]}.json"
        path.write_text(dumps(make()), encoding="utf-8")
        files.append(path)
    done = subprocess.run(
        [sys.executable, "-c", _NO_CLI, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    *parts, tail = done.stdout.split("=" * 8 + "\n")
    assert tail == "cli modules: \n"
    for path, csv_text, table in zip(files, parts[0::2], parts[1::2], strict=True):
        report = json.loads(path.read_text(encoding="utf-8"))
        assert csv_text == Sink("csv", None).render(report)
        assert table.strip(), path.name
    assert "f-RGA >= 0.9" in parts[3] and samples.FAILED_LAYER_REASON in parts[3]  # check
    assert "relations.f-RGA.alpha" in parts[5]  # diff


# ------------------------------------------------------------------ emit


def _checked(kind: str) -> dict[str, Any]:
    report = samples.ALL[kind]()
    schema.validate(json.loads(dumps(report)))
    return report


def test_emit_json_and_csv_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    report = _checked("symtool/check")
    Sink("json", None).emit(report)
    assert capsys.readouterr().out == dumps(report)
    Sink("csv", None).emit(report)
    assert capsys.readouterr().out == Sink("csv", None).render(report)


@pytest.mark.parametrize("tty", [False, True])
def test_emit_to_a_file_shows_the_table_on_a_terminals_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tty: bool
) -> None:
    report = _checked("symtool/inspect")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    monkeypatch.setenv("COLUMNS", "200")  # the terminal's width
    out = tmp_path / "deep" / "inspect.csv"
    Sink("csv", out).emit(report)
    assert out.read_text(encoding="utf-8") == Sink("csv", None).render(report)
    assert [p.name for p in out.parent.iterdir()] == ["inspect.csv"]  # no temporary left
    seen = capsys.readouterr()
    assert seen.out == ""
    assert ("Checkpoints (in step order)" in seen.err) == tty
    assert ("run/step_0.safetensors" in seen.err) == tty
    assert ("cannot read (truncated)" in seen.err) == tty


def test_emit_table_prints_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    Sink("table", None).emit(_checked("symtool/diff"))
    seen = capsys.readouterr()
    assert "relations.f-RGA.alpha" in seen.out and seen.err == ""
