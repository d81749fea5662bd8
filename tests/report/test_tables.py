"""Tables and CSV rows (:mod:`symtool.report.tables` and ``tables_<kind>``) of small
hand-made reports: the numbers are there, and so is every failed record's reason."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import pytest
from rich.console import Console

from symtool.report.sink import TABLES, Sink
from symtool.report.tables import failure_line, fmt_num, human_size
from tests.report import samples


def _table(report: dict[str, Any]) -> str:
    out = Console(file=io.StringIO(), width=250, highlight=False, soft_wrap=False,
                  color_system=None)
    TABLES[report["schema"]](report, out)
    return out.file.getvalue()


def _rows(report: dict[str, Any]) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(Sink("csv", None).render(report))))


def _one(rows: list[dict[str, str]], **match: str) -> dict[str, str]:
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


# ------------------------------------------------------------------ cell formats


@pytest.mark.parametrize(
    ("value", "digits", "text"),
    [
        (None, 3, "—"),
        (True, 3, "yes"),
        (False, 3, "no"),
        (0, 3, "0"),
        (-12, 3, "-12"),
        (10**9, 3, "1000000000"),  # ints are never abbreviated
        (0.0, 3, "0.000"),
        (-0.0, 3, "-0.000"),
        (0.8571, 3, "0.857"),
        (1e-3, 3, "0.001"),  # the smallest fixed-point value at 3 digits
        (9.99e-4, 3, "9.99e-04"),
        (-1e-5, 3, "-1.00e-05"),
        (999999.0, 3, "999999.000"),
        (1e6, 3, "1.00e+06"),
        (-2.5e7, 3, "-2.50e+07"),
        (0.05, 2, "0.05"),
        (0.005, 2, "5.0e-03"),
        (math.inf, 3, "inf"),
        (-math.inf, 3, "-inf"),
        (math.nan, 3, "nan"),
        ("GWA/RWA", 3, "GWA/RWA"),
    ],
)
def test_fmt_num(value: Any, digits: int, text: str) -> None:
    assert fmt_num(value, digits) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (None, "—"),
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1024**2 - 1, "1024.0 KiB"),
        (1024**2, "1.0 MiB"),
        (5 * 1024**3, "5.0 GiB"),
        (3 * 1024**4, "3072.0 GiB"),  # GiB is the largest unit
    ],
)
def test_human_size(n: int | None, text: str) -> None:
    assert human_size(n) == text


# ------------------------------------------------------------------ align


def test_align_table_has_alphas_and_every_reason() -> None:
    text = _table(samples.align_report())
    assert "0.857 17.2" in text and "0.987 17.2" in text  # α and its z
    assert f"failed: {samples.FAILED_LAYER_REASON}" in text
    assert f"layer fc1: α(b-GWA) undefined: {samples.UNDEFINED_ALPHA_REASON}" in text
    assert "0.63 [0.79]" in text and "1.02, —" in text and "GWA/RWA (d 0.12)" in text
    assert f"layer fc1: κ(G_a~Z_a), Δκ undefined: {samples.NO_FIT_REASON}" in text
    assert f"skipped big: {samples.SKIPPED_REASON}" in text
    assert f"step 20 · run/step_000020.safetensors: failed: {samples.FAILED_CKPT_ERROR}" in text


def test_align_rows_have_values_and_every_reason() -> None:
    rows = _rows(samples.align_report())
    rga = _one(rows, layer="fc1", metric="alpha", quantity="f-RGA")
    assert (rga["value"], rga["z"], rga["holds"]) == ("0.8571", "17.25", "True")
    assert rga["status"] == "ok" and rga["formula"] == "H_a ~ G_a"
    gwa = _one(rows, layer="fc1", metric="alpha", quantity="b-GWA")
    assert gwa["value"] == "" and gwa["reason"] == samples.UNDEFINED_ALPHA_REASON
    assert _one(rows, layer="fc1", quantity="f-CROSS")["value"] == "0.3669"
    assert _one(rows, layer="fc1", quantity="h_b_error")["value"] == "1.25e-15"
    assert _one(rows, metric="kappa", quantity="H_a~Z_a")["value"] == "0.6279"
    no_fit = _one(rows, metric="kappa", quantity="G_a~Z_a")
    assert no_fit["value"] == "" and no_fit["reason"] == samples.NO_FIT_REASON
    assert _one(rows, metric="phase_distance")["quantity"] == "GWA/RWA"
    failed = _one(rows, layer="fc2")
    assert failed["status"] == "failed" and failed["reason"] == samples.FAILED_LAYER_REASON
    skipped = _one(rows, layer="big")
    assert skipped["status"] == "skipped" and skipped["reason"] == samples.SKIPPED_REASON
    assert (skipped["d_in"], skipped["d_out"]) == ("9000", "9000")
    ckpt = _one(rows, step="20")
    assert ckpt["status"] == "failed" and ckpt["reason"] == samples.FAILED_CKPT_ERROR
    assert ckpt["layer"] == "" and ckpt["checkpoint"] == "run/step_000020.safetensors"


def test_align_trend_over_two_good_checkpoints() -> None:
    report = samples.align_report()
    second = dict(report["checkpoints"][0], step=30, path="run/step_000030.safetensors")
    report["checkpoints"].append(second)
    text = _table(report)
    assert "Over training" in text
    assert "0.857 (1/1)" in text  # mean α of f-RGA over fc1 (fc2 failed), 1 of 1 holds
    assert "0.605 (0/1)" in text and "— (0/1)" in text  # b-GWA: no defined α


# ------------------------------------------------------------------ ode


def test_ode_table_and_rows() -> None:
    report = samples.ode_report()
    text = _table(report)
    for cell in ("(2,2)", "0.951", "0.932", "0.247", "0.314", "-0.054±0.01", "0.00",
                 "contracting"):
        assert cell in text, cell
    assert f"failed: {samples.ODE_FAILED_REASON}" in text
    assert "step 6 · run/step_6.pt: failed: run/step_6.pt: cannot read (truncated)" in text
    rows = _rows(report)
    ok = {r["quantity"]: r["value"] for r in rows if r["layer"] == "rnn.l0"}
    assert ok["weights.i.spectral_radius"] == "0.9512"
    assert ok["weights.f.max_timescale"] == "12.5"
    assert ok["rest.dt"] == "0.3141" and ok["rest.euler.spectral_abscissa"] == "-0.1357"
    assert ok["rest.rk4.in_region"] == "True" and ok["rest.rk4.margin"] == "0.0864"
    assert ok["lyapunov.1"] == "-0.0543" and ok["lyapunov.2"] == "-0.2109"
    assert ok["verdict"] == "contracting" and ok["verdict.value"] == "-0.0543"
    assert not any(q.startswith("along.") for q in ok)  # no along-trajectory reading
    failed = _one(rows, layer="rnn.l0_reverse")
    assert failed["status"] == "failed" and failed["reason"] == samples.ODE_FAILED_REASON
    assert _one(rows, step="6")["reason"] == "run/step_6.pt: cannot read (truncated)"


# ------------------------------------------------------------------ symmetry


def test_symmetry_table_and_rows() -> None:
    report = samples.symmetry_report()
    text = _table(report)
    for cell in ("2.718", "2.88", "1.41", "0/2", "0.432", "no events"):
        assert cell in text, cell
    for reason in (samples.SYM_LAYER_REASON, samples.SYM_UNITS_REASON,
                   samples.SYM_HEADS_REASON, samples.SYM_SOFTMAX_REASON):
        assert reason in text, reason
    assert "step 4 · run/step_4.safetensors: failed:" in text
    rows = _rows(report)
    rank = _one(rows, layer="fc1", quantity="rank", tau="0.01")
    assert rank["value"] == "3" and rank["status"] == "ok"
    assert _one(rows, layer="fc1", quantity="sigma_max")["value"] == "2.7183"
    for quantity in ("sigma_max", "effective_rank", "stable_rank"):
        bad = _one(rows, layer="fc2", quantity=quantity)
        assert (bad["status"], bad["reason"], bad["value"]) == (
            "failed", samples.SYM_LAYER_REASON, "")
    dead = _one(rows, layer="fc1->fc2", quantity="half_dead_out")
    assert (dead["tau"], dead["value"], dead["group"]) == ("0.01", "2", "units")
    assert _one(rows, layer="fc1->fc2", quantity="imbalance_mean_abs")["value"] == "0.4321"
    no_units = _one(rows, layer="fc3->fc4", quantity="units")
    assert no_units["status"] == "failed" and no_units["reason"] == samples.SYM_UNITS_REASON
    heads = _one(rows, layer="attn", quantity="heads")
    assert (heads["value"], heads["reason"]) == ("8", samples.SYM_HEADS_REASON)
    soft = _one(rows, group="softmax")
    assert soft["status"] == "failed" and soft["reason"] == samples.SYM_SOFTMAX_REASON
    assert _one(rows, step="4")["status"] == "failed"


# ------------------------------------------------------------------ inspect, check, diff


def test_inspect_table_and_rows() -> None:
    report = samples.inspect_report()
    text = _table(report)
    assert "1.5 KiB" in text and "0123456789ab" in text and "0123456789ab0" not in text
    assert "error: cannot read (truncated)" in text
    rows = _rows(report)
    assert rows[0]["size"] == "1536" and len(rows[0]["sha256"]) == 64 and rows[0]["error"] == ""
    assert rows[1]["error"] == "cannot read (truncated)" and rows[1]["sha256"] == ""


def test_check_table_rows_and_failure_lines() -> None:
    report = samples.check_report()
    text = _table(report)
    assert "1 of 2 requirements held" in text
    assert "0.857" in text and f"layer failed: {samples.FAILED_LAYER_REASON}" in text
    rows = _rows(report)
    held = _one(rows, requirement="samples >= 1")
    assert held["held"] == "True" and held["layer"] == ""
    fc1 = _one(rows, requirement=samples.CHECK_REQUIREMENT, layer="fc1")
    assert (fc1["held"], fc1["value"], fc1["step"], fc1["reason"]) == ("False", "0.8571", "10", "")
    fc2 = _one(rows, requirement=samples.CHECK_REQUIREMENT, layer="fc2")
    assert fc2["value"] == "" and fc2["reason"] == f"layer failed: {samples.FAILED_LAYER_REASON}"
    lines = [failure_line(f) for f in report["failures"]]
    assert lines == [
        "FAIL step 10 · layer fc1 · relations.f-RGA.alpha = 0.8571 · needs f-RGA >= 0.9",
        "FAIL step 10 · layer fc2 · relations.f-RGA.alpha = null "
        f"[layer failed: {samples.FAILED_LAYER_REASON}] · needs f-RGA >= 0.9",
    ]


def test_diff_table_and_rows() -> None:
    report = samples.diff_report()
    text = _table(report)
    assert "align diff — A: a.json (step 10) · B: b.json (step 10)" in text
    assert "0.857" in text and "0.957" in text and "+0.100" in text
    assert f"failed: {samples.FAILED_LAYER_REASON}" in text
    rows = _rows(report)
    rga = _one(rows, layer="fc1", metric="relations.f-RGA.alpha")
    assert (rga["a"], rga["b"]) == ("0.8571", "0.9571")
    assert float(rga["delta"]) == pytest.approx(0.1)
    status = _one(rows, layer="fc2", metric="status")
    assert status["a"] == status["b"] == f"failed: {samples.FAILED_LAYER_REASON}"
