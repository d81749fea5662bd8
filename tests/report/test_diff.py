"""``symtool diff``: rows matched by layer and metric path, B − A, formats and errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from symtool.cli.app import app
from symtool.errors import ReportError
from symtool.report import schema
from symtool.report.diff import Side, diff_reports

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input, env={"COLUMNS": "200"})


def _align(run: str) -> dict[str, Any]:
    result = _invoke(
        "align",
        str(ROOT / "fixtures" / run),
        "--last",
        "2",
        "--null-samples",
        "4",
        "--bootstrap",
        "10",
        "-f",
        "json",
    )
    assert result.exit_code == 0, result.stderr
    return schema.validate_text(result.stdout)


@pytest.fixture(scope="module")
def wd() -> dict[str, Any]:
    return _align("mlp_wd")


@pytest.fixture(scope="module")
def nowd() -> dict[str, Any]:
    return _align("mlp_nowd")


@pytest.fixture
def files(tmp_path: Path, wd: dict, nowd: dict) -> tuple[Path, Path]:
    a, b = tmp_path / "wd.json", tmp_path / "nowd.json"
    a.write_text(json.dumps(wd), encoding="utf-8")
    b.write_text(json.dumps(nowd), encoding="utf-8")
    return a, b


def _layer(report: dict, step_index: int, name: str) -> dict:
    return next(x for x in report["checkpoints"][step_index]["layers"] if x["name"] == name)


def test_delta_is_b_minus_a_for_every_matched_metric(wd: dict, nowd: dict) -> None:
    rep = diff_reports(Side(wd, "wd"), Side(nowd, "nowd"))
    schema.validate(rep)
    rows = {(r["layer"], r["metric"]): r for r in rep["rows"]}
    for name in ("0", "2", "4", "6"):
        a = _layer(wd, -1, name)["relations"]["b-GWA"]["alpha"]
        b = _layer(nowd, -1, name)["relations"]["b-GWA"]["alpha"]
        row = rows[(name, "relations.b-GWA.alpha")]
        assert (row["a"], row["b"], row["only"]) == (a, b, None)
        assert row["delta"] == pytest.approx(b - a, abs=1e-15)
        k = rows[(name, "pah.fits.H_a~Z_a.kappa")]
        assert k["a"] == _layer(wd, -1, name)["pah"]["fits"]["H_a~Z_a"]["kappa"]
    assert rows[(None, "step")]["a"] == rows[(None, "step")]["b"] == 12800
    # booleans are compared but have no difference; volatile and text fields are left out
    assert rows[("0", "relations.b-RWA.holds")]["delta"] is None
    assert not any(m.endswith(("duration_s", "formula", "reason", "path")) for _, m in rows)


def test_a_report_against_itself_has_no_changes(wd: dict) -> None:
    rep = diff_reports(Side(wd, "x"), Side(wd, "x"))
    assert rep["rows"] and all(r["delta"] in (0, None) and r["a"] == r["b"] for r in rep["rows"])
    assert diff_reports(Side(wd, "x"), Side(wd, "x"), changed=True)["rows"] == []


def test_two_checkpoints_of_one_run(wd: dict) -> None:
    rep = diff_reports(Side(wd, "x", 6400), Side(wd, "x", "last"), metrics=["f-GWA.alpha"])
    assert (rep["a"]["step"], rep["b"]["step"]) == (6400, 12800)
    assert len(rep["rows"]) == 4
    for r in rep["rows"]:
        a = _layer(wd, 0, r["layer"])["relations"]["f-GWA"]["alpha"]
        b = _layer(wd, 1, r["layer"])["relations"]["f-GWA"]["alpha"]
        assert r["metric"] == "relations.f-GWA.alpha" and r["delta"] == pytest.approx(b - a)


def test_layer_and_metric_filters(wd: dict, nowd: dict) -> None:
    rep = diff_reports(Side(wd, "a"), Side(nowd, "b"), layers=["[26]"], metrics=["b-*.alpha"])
    assert {r["layer"] for r in rep["rows"]} == {"2", "6"}
    assert {r["metric"] for r in rep["rows"]} == {
        "relations.b-RGA.alpha",
        "relations.b-GWA.alpha",
        "relations.b-RWA.alpha",
        "cross_terms.b-CROSS.alpha",
    }
    with pytest.raises(ReportError, match="matches no layer"):
        diff_reports(Side(wd, "a"), Side(nowd, "b"), layers=["fc*"])


def test_layers_and_metrics_on_one_side_only(wd: dict) -> None:
    b = copy.deepcopy(wd)
    layers = b["checkpoints"][-1]["layers"]
    layers[3]["name"] = "head"
    layers[0]["pah"] = None
    rep = diff_reports(Side(wd, "a"), Side(b, "b"))
    only = [(r["layer"], r["only"]) for r in rep["rows"] if r["metric"] is None]
    assert only == [("6", "a"), ("head", "b")]
    pah_rows = [r for r in rep["rows"] if r["layer"] == "0" and r["metric"].startswith("pah.")]
    assert pah_rows and all(r["only"] == "a" and r["b"] is None for r in pah_rows)


def test_errors(wd: dict) -> None:
    other = {**copy.deepcopy(wd), "schema": "symtool/inspect"}
    with pytest.raises(ReportError, match="A is a align report but B is a inspect report"):
        diff_reports(Side(wd, "a"), Side(other, "b"))
    with pytest.raises(ReportError, match="no checkpoint at step 5"):
        diff_reports(Side(wd, "a", 5), Side(wd, "b"))
    with pytest.raises(ReportError, match="not all"):
        diff_reports(Side(wd, "a", "all"), Side(wd, "b"))
    failed = copy.deepcopy(wd)
    c = failed["checkpoints"][0]
    failed["checkpoints"][0] = {k: c[k] for k in ("step", "path", "sha256")} | {
        "status": "failed",
        "error": "boom",
    }
    with pytest.raises(ReportError, match="failed: boom"):
        diff_reports(Side(failed, "a", 6400), Side(wd, "b"))


# ---------------------------------------------------------------------------- CLI


def test_cli_json_table_and_csv(files: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = files
    js = _invoke("diff", str(a), str(b), "-m", "b-GWA.alpha", "-f", "json")
    assert js.exit_code == 0, js.stderr
    rep = schema.validate_text(js.stdout)
    assert rep["schema"] == "symtool/diff" and rep["kind"] == "align"
    assert [r["layer"] for r in rep["rows"]] == ["0", "2", "4", "6"]
    table = _invoke("diff", str(a), str(b), "-m", "b-GWA.alpha", "-f", "table")
    assert table.exit_code == 0
    assert "B − A" in table.stdout and "relations.b-GWA.alpha" in table.stdout
    d = rep["rows"][0]["delta"]
    assert (f"+{d:.3f}" if d > 0 else f"{d:.3f}") in table.stdout
    out = tmp_path / "d.csv"
    csv = _invoke("diff", str(a), str(b), "-m", "b-GWA.alpha", "-o", str(out))
    assert csv.exit_code == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "layer,metric,a,b,delta,only" and len(lines) == 5


def test_cli_stdin_and_exit_2(files: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = files
    piped = _invoke("diff", "-", str(b), "--changed", "-f", "json", input=a.read_text())
    assert piped.exit_code == 0
    rep = json.loads(piped.stdout)
    assert rep["a"]["source"] == "<stdin>" and all(r["a"] != r["b"] for r in rep["rows"])
    both = _invoke("diff", "-", "-")
    assert both.exit_code == 2 and "only one of A and B" in both.stderr
    missing = _invoke("diff", str(a), str(tmp_path / "none.json"))
    assert missing.exit_code == 2 and "cannot read" in missing.stderr
    step = _invoke("diff", str(a), str(b), "--step-b", "3")
    assert step.exit_code == 2 and "no checkpoint at step 3" in step.stderr


def test_a_layer_that_failed_on_one_side_is_one_row_with_the_reason(wd: dict) -> None:
    b = copy.deepcopy(wd)
    layer = b["checkpoints"][-1]["layers"][1]
    layer.update(status="failed", reason="non-finite weights", relations=None,
                 cross_terms=None, pah=None, rows=None)
    rep = diff_reports(Side(wd, "a"), Side(b, "b"))
    rows = [r for r in rep["rows"] if r["layer"] == layer["name"]]
    assert rows == [{"layer": layer["name"], "metric": "status", "a": "ok",
                     "b": "failed: non-finite weights", "delta": None, "only": None}]
    schema.validate(rep)
