"""Neural collapse and NFA records (schema version 5) in every output form: schema, check
aliases, CSV, table, diff and the ``collapse`` figure, on a real ``mlp_wd`` report given
those records with known numbers (:mod:`tests.report.nc_samples`)."""

from __future__ import annotations

import copy
import csv
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from rich.console import Console
from typer.testing import CliRunner

from symtool.cli.app import app
from symtool.errors import ReportError
from symtool.report import check as ck
from symtool.report import schema, tables_align
from symtool.report.diff import Side, diff_reports
from symtool.report.files import SCHEMA_VERSION
from symtool.report.sink import TABLES, Sink
from symtool.report.tables import fmt_num
from tests.report.nc_samples import NFA_FAIL_REASON, NFA_SETTINGS, SKIP_REASON, with_collapse_nfa

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


@pytest.fixture
def rep(align_text: str) -> dict[str, Any]:
    return with_collapse_nfa(json.loads(align_text))


def _last(report: dict[str, Any]) -> dict[str, Any]:
    return [e for e in report["checkpoints"] if e["status"] == "ok"][-1]


def _by_layer(report: dict[str, Any], pick: Callable[[dict[str, Any]], Any],
              entry: dict[str, Any] | None = None) -> dict[str, Any]:
    return {la["name"]: pick(la) for la in (entry or _last(report))["layers"]}


def _jsonschema_errors(report: dict[str, Any]) -> list[str]:
    version = report["schema_version"]
    v = jsonschema.Draft202012Validator(schema.load_schema("align", version))
    return [e.message for e in v.iter_errors(report)]


# ------------------------------------------------------------------------ schema


def test_version_5_report_with_collapse_and_nfa_validates(rep: dict) -> None:
    assert SCHEMA_VERSION == 5 and rep["schema_version"] == 5
    assert schema.validate(rep) == "align" and _jsonschema_errors(rep) == []
    layers = _last(rep)["layers"]
    assert {la["collapse"]["status"] for la in layers} == {"ok", "skipped"}
    assert all(set(la["nfa"]["relations"]) == {"NFA", "NFA_sqrt"} for la in layers)


L = ["checkpoints", -1, "layers", 1]
MALFORMED: dict[str, tuple[list[Any], Any, str]] = {
    "nc1 is text": ([*L, "collapse", "nc1"], "0.1", "collapse.nc1: expected number or null"),
    "unknown collapse key": ([*L, "collapse", "nc5"], 0.1, "unexpected key 'nc5'"),
    "status not in the enum": ([*L, "collapse", "status"], "partial", "collapse.status"),
    "nc4 above 1": ([*L, "collapse", "nc4"], 1.5, "collapse.nc4"),
    "negative equiangularity": ([*L, "collapse", "equiangularity"], -0.1,
                                "collapse.equiangularity"),
    # the classifier layer's record has reason null: skipped needs one
    "skipped without a reason": (["checkpoints", -1, "layers", 3, "collapse", "status"],
                                 "skipped", "collapse.reason"),
    "NFA relation without z": ([*L, "nfa", "relations", "NFA"], {"alpha": 0.9},
                               "missing required key(s)"),
    "agop method unknown": ([*L, "nfa", "agop", "method"], "guess", "agop.method"),
    "ok nfa without relations": ([*L, "nfa", "relations"], None, "nfa.relations"),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_collapse_and_nfa_records_are_rejected(rep: dict, case: str) -> None:
    path, value, needle = MALFORMED[case]
    bad = copy.deepcopy(rep)
    node = bad
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ReportError) as err:
        schema.validate(bad)
    assert needle in str(err.value) and str(err.value).startswith("$.checkpoints[")
    assert _jsonschema_errors(bad)  # the reference validator agrees


def test_v5_settings_are_required_and_v4_reports_still_validate(align_text: str) -> None:
    real = json.loads(align_text)
    missing = copy.deepcopy(real)
    del missing["provenance"]["settings"]["nfa_exact_max"]
    with pytest.raises(ReportError, match=r"settings: missing required key\(s\): nfa_exact_max"):
        schema.validate(missing)
    v4 = copy.deepcopy(real)
    v4["schema_version"] = 4
    for key in NFA_SETTINGS:
        del v4["provenance"]["settings"][key]
    assert schema.validate(v4) == "align" and _jsonschema_errors(v4) == []
    assert schema.load_schema("align", 4)["properties"]["schema_version"] == {"const": 4}
    with_records = with_collapse_nfa(real)
    with_records["schema_version"] = 4  # version 4 has no collapse/nfa records
    for key in NFA_SETTINGS:
        del with_records["provenance"]["settings"][key]
    with pytest.raises(ReportError, match="unexpected key 'collapse'"):
        schema.validate(with_records)
    for kind in schema.available():
        assert schema.load_schema(kind, 4)["$id"].endswith(":4")
        assert schema.load_schema(kind)["$id"].endswith(":5")


# ------------------------------------------------------------------------- check


def test_check_aliases_resolve_to_the_collapse_and_nfa_fields(rep: dict) -> None:
    from symtool.report.metric_names import resolve

    expected = {
        "NC1": ("collapse", "nc1"), "NC2": ("collapse", "equiangularity"),
        "NC3": ("collapse", "nc3"), "NC4": ("collapse", "nc4"),
        "NFA": ("nfa", "relations", "NFA", "alpha"),
        "NFA_sqrt": ("nfa", "relations", "NFA_sqrt", "alpha"),
    }  # fmt: skip
    for alias, path in expected.items():
        assert resolve(rep, alias).paths == (path,), alias


def test_nc1_requirement_passes_and_fails_at_the_reported_numbers(rep: dict) -> None:
    nc1 = {k: v for k, v in _by_layer(rep, lambda la: la["collapse"]["nc1"]).items()}
    assert nc1["0"] is None  # skipped
    worst = max(v for v in nc1.values() if v is not None)
    worst_layer = next(k for k, v in nc1.items() if v == worst)
    ok = ck.check(rep, [f"NC1<={worst!r}"], layers=("[!0]",))
    assert ok.passed and ok.pairs == 3
    bad = ck.check(rep, [f"NC1<{worst!r}"], layers=("[!0]",))
    assert [(f.layer, f.metric, f.value) for f in bad.failures] == [
        (worst_layer, "collapse.nc1", worst)
    ]
    # the skipped layer is not a silent pass: it fails with the record's reason
    every = ck.check(rep, [f"NC1<={worst!r}"])
    assert [(f.layer, f.value, f.reason) for f in every.failures] == [
        ("0", None, f"undefined ({SKIP_REASON})")
    ]


def test_nfa_nc2_nc3_nc4_requirements(rep: dict) -> None:
    nfa = _by_layer(rep, lambda la: la["nfa"]["relations"]["NFA"]["alpha"])
    low = min(nfa.values())
    assert ck.check(rep, [f"NFA>={low!r}"]).passed
    fails = ck.check(rep, [f"NFA>{low!r}"]).failures
    assert [(f.metric, f.value) for f in fails] == [("nfa.relations.NFA.alpha", low)]
    sqrt = _by_layer(rep, lambda la: la["nfa"]["relations"]["NFA_sqrt"]["alpha"])
    assert ck.check(rep, [f"NFA_sqrt>={min(sqrt.values())!r}"]).passed
    nc2 = _by_layer(rep, lambda la: la["collapse"]["equiangularity"])
    top = max(v for v in nc2.values() if v is not None)
    assert ck.check(rep, [f"NC2<={top!r}"], layers=("[!0]",)).passed
    assert not ck.check(rep, [f"NC2<={top / 2!r}"], layers=("[!0]",)).passed
    nc3 = _last(rep)["layers"][-1]["collapse"]["nc3"]
    assert ck.check(rep, [f"NC3<={nc3!r}"], layers=("6",)).passed
    off = ck.check(rep, [f"NC3<={nc3!r}"], layers=("2", "4")).failures
    assert {f.reason for f in off} == {
        "undefined (nc3 only on the layer feeding the classifier)"
    }
    nc4 = _by_layer(rep, lambda la: la["collapse"]["nc4"])
    assert ck.check(rep, [f"NC4<={max(v for v in nc4.values() if v is not None)!r}"],
                    layers=("[!0]",)).passed


def test_a_failed_nfa_record_fails_with_its_reason(rep: dict) -> None:
    result = ck.check(rep, ["NFA>=0"], step="all")
    first = next(e for e in rep["checkpoints"] if e["status"] == "ok")["step"]
    assert [(f.step, f.layer, f.value, f.reason) for f in result.failures] == [
        (first, "2", None, f"undefined ({NFA_FAIL_REASON})")
    ]


def test_a_report_without_the_fields_is_exit_2_naming_the_option(
    align_text: str, rep: dict, tmp_path: Path
) -> None:
    plain = json.loads(align_text)
    for metric, option in (("NC1", "--collapse"), ("NFA", "--nfa"), ("collapse.nc4",
                                                                      "--collapse")):
        with pytest.raises(ReportError, match=f"made without {option}"):
            ck.check(plain, [f"{metric}<=1"])
    src = tmp_path / "plain.json"
    src.write_text(align_text, encoding="utf-8")
    result = _invoke("check", str(src), "--require", "NC1<=0.1")
    assert result.exit_code == 2 and "made without --collapse" in result.stderr
    path = tmp_path / "rep.json"
    path.write_text(json.dumps(rep), encoding="utf-8")
    held = _invoke("check", str(path), "--require", "NC1<=1e9", "--layer", "[!0]")
    assert held.exit_code == 0, held.stderr
    failed = _invoke("check", str(path), "--require", "NC1<=0.1")
    assert failed.exit_code == 1 and SKIP_REASON in failed.stderr


# ---------------------------------------------------------------------- CSV, table


def _csv(report: dict[str, Any]) -> list[dict[str, str]]:
    text = Sink("csv", None).render(report)
    assert text.splitlines()[0] == ",".join(tables_align._ALIGN_COLUMNS)  # header unchanged
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_has_the_exact_numbers(rep: dict) -> None:
    rows = _csv(rep)
    for e in (e for e in rep["checkpoints"] if e["status"] == "ok"):
        for la in e["layers"]:
            mine = [r for r in rows if r["step"] == str(e["step"]) and r["layer"] == la["name"]]
            c = la["collapse"]
            for q in ("nc1", "equiangularity", "equinorm", "nc3", "nc4", "cos_mean", "classes"):
                (row,) = [r for r in mine if r["metric"] == "collapse" and r["quantity"] == q]
                if c[q] is None:
                    assert row["value"] == ""
                else:
                    assert float(row["value"]) == c[q]
            if c["status"] == "skipped":
                assert row["reason"] == f"skipped: {SKIP_REASON}"
            for rid in ("NFA", "NFA_sqrt"):
                (row,) = [r for r in mine if r["metric"] == "alpha" and r["quantity"] == rid]
                rel = (la["nfa"]["relations"] or {}).get(rid)
                if rel is None:
                    assert row["value"] == "" and row["reason"] == f"failed: {NFA_FAIL_REASON}"
                    continue
                assert float(row["value"]) == rel["alpha"] and float(row["z"]) == rel["z"]
                assert row["formula"] == rel["formula"] and row["holds"] == str(rel["holds"])
    (proj,) = [r for r in rows if r["metric"] == "agop" and r["quantity"] == "projections"
               and r["layer"] == "4" and r["step"] == str(_last(rep)["step"])]
    assert proj["value"] == "8" and proj["formula"] == "projection"


def test_csv_of_a_report_without_the_fields_is_unchanged(align_text: str) -> None:
    rows = _csv(json.loads(align_text))
    assert not [r for r in rows if r["metric"] in ("collapse", "agop")]
    assert not [r for r in rows if r["quantity"] in ("NFA", "NFA_sqrt")]


def _table(report: dict[str, Any]) -> str:
    out = Console(file=io.StringIO(), width=250, highlight=False, soft_wrap=False,
                  color_system=None)
    TABLES["symtool/align"](report, out)
    return out.file.getvalue()


def test_table_shows_the_numbers_and_why_some_are_missing(rep: dict, align_text: str) -> None:
    text = _table(rep)
    assert "Neural collapse" in text and "NFA_sqrt" in text
    last = _last(rep)
    lines = text[text.rindex("Neural collapse"):].splitlines()
    for la in last["layers"]:
        (line,) = [ln for ln in lines if ln.startswith(f"│ {la['name']} ")]
        c, n = la["collapse"], la["nfa"]
        if c["status"] == "skipped":
            assert "skipped" in line
        else:
            for q in ("nc1", "equiangularity", "equinorm", "nc4"):
                assert fmt_num(c[q]) in line, (q, line)
        nfa = n["relations"]["NFA"]
        assert f"{fmt_num(nfa['alpha'])} {nfa['z']:.1f}" in line
        assert fmt_num(n["f_gwa_alpha"]) in line
    classifier = next(ln for ln in lines if ln.startswith("│ 6 "))
    assert f"{fmt_num(last['layers'][-1]['collapse']['nc3'])} (6)" in classifier
    assert f"layer 0: collapse skipped: {SKIP_REASON}" in text
    assert f"layer 2: NFA failed: {NFA_FAIL_REASON}" in text
    assert "R=8 ±0.06" in text
    # over training: NC1 of the classifier's input layer and NFA's mean α, per step
    trend = text[text.index("Over training"):].splitlines()
    for e in (e for e in rep["checkpoints"] if e["status"] == "ok"):
        (row,) = [ln for ln in trend if ln.startswith(f"│ {e['step']:>5} ")]
        nc1 = e["layers"][-1]["collapse"]["nc1"]
        alphas = [la["nfa"]["relations"]["NFA"]["alpha"] for la in e["layers"]
                  if la["nfa"]["relations"]]
        holds = sum(la["nfa"]["relations"]["NFA"]["holds"] for la in e["layers"]
                    if la["nfa"]["relations"])
        assert f"{fmt_num(nc1)} (6)" in row
        assert f"{fmt_num(sum(alphas) / len(alphas))} ({holds}/4)" in row
    plain = _table(json.loads(align_text))
    assert "Neural collapse" not in plain and "AGOP" not in plain


# -------------------------------------------------------------------------- diff


def test_diff_reports_a_changed_nc1(rep: dict) -> None:
    b = copy.deepcopy(rep)
    layer = _last(b)["layers"][2]
    before = layer["collapse"]["nc1"]
    layer["collapse"]["nc1"] = before + 0.25
    out = diff_reports(Side(rep, "a.json"), Side(b, "b.json"), changed=True)
    assert [(r["layer"], r["metric"], r["a"], r["b"]) for r in out["rows"]] == [
        (layer["name"], "collapse.nc1", before, before + 0.25)
    ]
    assert out["rows"][0]["delta"] == (before + 0.25) - before
    every = diff_reports(Side(rep, "a.json"), Side(b, "b.json"), metrics=["NFA.alpha"])
    assert [r["delta"] for r in every["rows"]] == [0.0] * 4
    schema.validate(out)


# -------------------------------------------------------------------------- plot


def test_collapse_figure_draws_the_reports_numbers(rep: dict, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from symtool.report import figure_parts, figures_collapse, plot

    path = tmp_path / "rep.json"
    path.write_text(json.dumps(rep), encoding="utf-8")
    out = tmp_path / "collapse.png"
    result = _invoke("plot", str(path), "-o", str(out), "--kind", "collapse")
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    fig = Figure(layout="constrained")
    figures_collapse.align_collapse(fig, rep, figure_parts.PlotOptions())
    axes = fig.axes
    names = [la["name"] for la in _last(rep)["layers"]]
    assert len(axes) == 2 * len(names)
    ok = [e for e in rep["checkpoints"] if e["status"] == "ok"]
    for i, name in enumerate(names):
        lines = {ln.get_label(): list(ln.get_ydata()) for ax in axes[2 * i:2 * i + 2]
                 for ln in ax.get_lines()}
        layers = [next(la for la in e["layers"] if la["name"] == name) for e in ok]
        want_nc1 = [la["collapse"]["nc1"] for la in layers]
        if all(v is None for v in want_nc1):
            assert "NC1" not in lines  # skipped: the panel says why instead
        else:
            assert lines["NC1"] == want_nc1
        rels = [la["nfa"]["relations"] for la in layers]
        got = lines["NFA α"]
        want = [r["NFA"]["alpha"] if r else None for r in rels]
        assert [None if math.isnan(g) else g for g in got] == want
        assert lines["f-GWA α"] == [la["relations"]["f-GWA"]["alpha"] for la in layers]
    texts = [t.get_text() for ax in axes for t in ax.texts]
    assert any(SKIP_REASON in t for t in texts)
    caption = fig.legends[0].get_title().get_text()
    assert NFA_FAIL_REASON in caption
    assert "collapse" in plot.figure_kinds("align")


def test_collapse_figure_of_a_report_without_the_fields(align_text: str, tmp_path: Path,
                                                        rep: dict) -> None:
    pytest.importorskip("matplotlib")
    src = tmp_path / "plain.json"
    src.write_text(align_text, encoding="utf-8")
    result = _invoke("plot", str(src), "-o", str(tmp_path / "c.png"), "--kind", "collapse")
    assert result.exit_code == 2
    assert "no neural collapse or NFA fields" in result.stderr
    assert "--collapse" in result.stderr and not (tmp_path / "c.png").exists()
    plain_all, rich_all = tmp_path / "plain_all.png", tmp_path / "rich_all.png"
    assert _invoke("plot", str(src), "-o", str(plain_all), "--kind", "all").exit_code == 0
    full = tmp_path / "rep.json"
    full.write_text(json.dumps(rep), encoding="utf-8")
    assert _invoke("plot", str(full), "-o", str(rich_all), "--kind", "all").exit_code == 0
    from matplotlib.image import imread

    assert imread(str(rich_all)).shape[0] > imread(str(plain_all)).shape[0]
