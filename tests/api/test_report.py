"""``Report``: the CLI's document, with its CSV, pandas, plot, navigation and display."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import symtool
from symtool.cli.app import app
from symtool.errors import UsageError
from tests.api.helpers import runner
from tests.conftest import FIXTURES


@pytest.fixture(scope="module")
def report() -> symtool.Report:
    return symtool.align(FIXTURES / "mlp_wd", steps="100,200", null_samples=2, bootstrap=4)


def test_to_json_writes_the_document_atomically(report: symtool.Report, tmp_path: Path) -> None:
    out = tmp_path / "deep" / "r.json"
    text = report.to_json(out)
    assert out.read_text() == text
    assert json.loads(text) == report.to_dict()
    assert list(out.parent.iterdir()) == [out]  # no temporary file left behind
    again = symtool.load_report(out)
    assert again.to_dict() == report.to_dict()


def test_to_csv_equals_the_cli_csv(report: symtool.Report, tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    report.to_json(path)
    res = runner.invoke(app, ["check", str(path), "--require", "f-RGA.alpha >= -1"])
    assert res.exit_code == 0, res.output
    # the CLI renders a saved report's rows through the same sink
    from symtool.report.sink import Sink

    assert report.to_csv() == Sink("csv", None).render(report.to_dict())
    header, *rows = report.to_csv().splitlines()
    assert header.startswith("step,checkpoint,layer")
    assert {r.split(",")[0] for r in rows} == {"100", "200"}
    assert {r.split(",")[2] for r in rows} == {"0", "2", "4", "6"}


def test_to_pandas_has_the_csv_rows(report: symtool.Report) -> None:
    pd = pytest.importorskip("pandas")
    df = report.to_pandas()
    assert isinstance(df, pd.DataFrame)
    assert len(df) == len(report.to_csv().splitlines()) - 1
    assert list(df.columns) == report.to_csv().splitlines()[0].split(",")


def test_to_pandas_without_pandas_names_the_extra(
    report: symtool.Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(UsageError, match=r"symtool\[pandas\]"):
        report.to_pandas()


def test_plot_writes_a_figure(report: symtool.Report, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = report.plot(tmp_path / "r.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_navigation(report: symtool.Report) -> None:
    assert report.kind == "align"
    assert report.steps == [100, 200]
    assert list(report.layers) == ["0", "2", "4", "6"]
    assert all(len(v) == 2 for v in report.layers.values())
    assert report.layer("2", step=100) is report.checkpoints[0]["layers"][1]
    assert report.layer("2") is report.checkpoints[1]["layers"][1]
    with pytest.raises(KeyError, match="layers: 0, 2, 4, 6"):
        report.layer("nope")
    assert report["schema"] == "symtool/align"
    with pytest.raises(TypeError):
        report["schema"] = "x"  # type: ignore[index]


def test_display(report: symtool.Report) -> None:
    assert repr(report) == "<Report symtool align report: 2 checkpoints, steps 100–200, 4 layers>"
    md = report._repr_markdown_()
    assert md.startswith("**symtool align report")
    assert "| step | checkpoint | layer |" in md
    assert "more rows" in md


def test_check_from_python_equals_check_from_the_cli(
    report: symtool.Report, tmp_path: Path
) -> None:
    path = tmp_path / "r.json"
    report.to_json(path)
    req = ["f-RGA.alpha >= 0.99", "f-RGA.alpha >= -1"]
    result = symtool.check(report, req, step="all")
    assert not result.passed
    assert [o.held for o in result.outcomes] == [False, True]
    flags = [x for r in req for x in ("--require", r)]
    res = runner.invoke(app, ["check", str(path), "--step", "all", *flags])
    assert res.exit_code == 1
    assert symtool.check(path, req[1]).passed
