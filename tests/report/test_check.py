"""``symtool check``: requirement grammar, metric resolution, scoping, exit codes, stdin."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from symtool.cli.app import app
from symtool.errors import ReportError
from symtool.report import check as ck
from symtool.report import entries, schema

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input, env={"COLUMNS": "200"})


@pytest.fixture
def report(align_text: str) -> dict[str, Any]:
    return json.loads(align_text)


def _write(tmp_path: Path, report: dict[str, Any], name: str = "report.json") -> Path:
    schema.validate(report)  # every report a test builds is a valid one
    path = tmp_path / name
    path.write_text(json.dumps(report), encoding="utf-8")
    return path


def _alpha(report: dict[str, Any], rid: str, step_index: int = -1) -> dict[str, float]:
    entry = report["checkpoints"][step_index]
    return {layer["name"]: layer["relations"][rid]["alpha"] for layer in entry["layers"]}


# ------------------------------------------------------------------------ grammar


@pytest.mark.parametrize(
    ("text", "metric", "op", "value"),
    [
        ("b-GWA>=0.8", "b-GWA", ">=", 0.8),
        ("  b-GWA.z  >  3 ", "b-GWA.z", ">", 3.0),
        ("kappa(H_a~Z_a) <= 1.5e0", "H_a~Z_a.kappa", "<=", 1.5),
        ("pah.consistency.h_shift != -1", "pah.consistency.h_shift", "!=", -1.0),
        ("holds == true", "holds", "==", True),
        ("pah.phase.name == 'GWA/RWA'", "pah.phase.name", "==", "GWA/RWA"),
        ('kind != "conv2d"', "kind", "!=", "conv2d"),
        ("n_kept<1e-3", "n_kept", "<", 1e-3),
    ],
)
def test_requirement_grammar(text: str, metric: str, op: str, value: Any) -> None:
    r = ck.parse_requirement(text)
    assert (r.metric, r.op, r.value) == (metric, op, value)
    assert r.text == text.strip()


@pytest.mark.parametrize(
    "text", ["b-GWA", ">= 0.8", "b-GWA >= ", "b-GWA => 0.8", "b-GWA >= abc", "name > 'x'", "a>=nan"]
)
def test_malformed_requirements_are_report_errors(text: str) -> None:
    with pytest.raises(ReportError, match="invalid requirement"):
        ck.parse_requirement(text)


@pytest.mark.parametrize(
    ("op", "a", "b", "expected"),
    [
        (">=", 1.0, 1.0, True),
        (">", 1.0, 1.0, False),
        ("<=", 0.5, 1.0, True),
        ("<", 1.0, 0.5, False),
        ("==", 2, 2.0, True),
        ("!=", 2, 2.0, False),
    ],
)
def test_comparisons(op: str, a: float, b: float, expected: bool) -> None:
    assert ck.Requirement("t", "m", op, b).holds(a) == (expected, None)


def test_null_and_type_mismatches_fail_with_a_reason() -> None:
    r = ck.Requirement("x>=0", "x", ">=", 0.0)
    assert r.holds(None) == (False, "undefined")
    assert r.holds(math.nan) == (False, "undefined")
    held, why = r.holds("linear")
    assert not held and "cannot compare" in why
    assert ck.Requirement("x==true", "x", "==", True).holds(True) == (True, None)
    assert ck.Requirement("x==true", "x", "==", True).holds(False) == (False, None)


# --------------------------------------------------------------------- evaluation


@settings(max_examples=40, deadline=None)
@given(t=st.floats(-1.0, 1.0))
def test_failures_are_exactly_the_layers_below_the_threshold(align_text: str, t: float) -> None:
    report = json.loads(align_text)
    alphas = _alpha(report, "b-RWA")
    result = ck.check(report, [f"b-RWA >= {t!r}"])
    assert {f.layer for f in result.failures} == {n for n, a in alphas.items() if a < t}
    assert result.passed == all(a >= t for a in alphas.values())
    assert all(f.value == alphas[f.layer] and f.step == 12800 for f in result.failures)


def test_threshold_at_a_value_splits_ge_from_gt(report: dict[str, Any]) -> None:
    a = _alpha(report, "f-GWA")["2"]
    assert not [f for f in ck.check(report, [f"f-GWA>={a!r}"], layers=["2"]).failures]
    (fail,) = ck.check(report, [f"f-GWA>{a!r}"], layers=["2"]).failures
    assert (fail.layer, fail.metric, fail.value) == ("2", "relations.f-GWA.alpha", a)


def test_summary_counts_requirements_and_pairs(report: dict[str, Any]) -> None:
    result = ck.check(report, ["b-RWA > -2", "b-RWA > 2", "samples >= 1"], step="all")
    n_layers = len(report["checkpoints"][-1]["layers"])
    assert result.pairs == 2 * n_layers + 2  # layer pairs and checkpoint-level pairs
    assert result.summary() == (
        f"2 of 3 requirements held over {result.pairs} (checkpoint, layer) pairs"
    )
    assert [o.held for o in result.outcomes] == [True, False, True]
    assert len(result.outcomes[1].failures) == 2 * n_layers


def test_step_scopes(report: dict[str, Any]) -> None:
    steps = [e["step"] for e in report["checkpoints"]]
    assert steps == [6400, 12800]
    assert {f.step for f in ck.check(report, ["b-RWA>2"], step="all").failures} == set(steps)
    assert {f.step for f in ck.check(report, ["b-RWA>2"], step=6400).failures} == {6400}
    assert {f.step for f in ck.check(report, ["b-RWA>2"], step="6400").failures} == {6400}
    with pytest.raises(ReportError, match="no checkpoint at step 7"):
        ck.check(report, ["b-RWA>2"], step=7)
    with pytest.raises(ReportError, match="--step"):
        ck.check(report, ["b-RWA>2"], step="first")


def test_last_step_skips_failed_checkpoints_and_all_reports_them(report: dict[str, Any]) -> None:
    broken = copy.deepcopy(report)
    last = broken["checkpoints"][-1]
    broken["checkpoints"][-1] = {
        k: last[k] for k in ("step", "path", "sha256", "status", "error")
    } | {"status": "failed", "error": "cannot read (truncated)"}
    schema.validate(broken)
    assert {f.step for f in ck.check(broken, ["b-RWA>2"]).failures} == {6400}
    failures = ck.check(broken, ["b-RWA>-2"], step="all").failures
    assert [(f.step, f.layer, f.reason) for f in failures] == [
        (12800, None, "checkpoint failed: cannot read (truncated)")
    ]


def test_failed_layer_and_null_values_fail_with_their_reason(report: dict[str, Any]) -> None:
    broken = copy.deepcopy(report)
    layers = broken["checkpoints"][-1]["layers"]
    layers[0].update(
        status="failed",
        reason="H_a: matrix has non-finite entries",
        relations=None,
        cross_terms=None,
        pah=None,
        rows=None,
    )
    rel = layers[1]["relations"]["b-GWA"]
    rel.update(alpha=None, z=None, holds=None, reason="G_b is constant")
    schema.validate(broken)
    failures = {f.layer: f for f in ck.check(broken, ["b-GWA >= -1"]).failures}
    assert set(failures) == {"0", "2"}
    assert failures["0"].reason == "layer failed: H_a: matrix has non-finite entries"
    assert failures["2"].reason == "undefined (G_b is constant)" and failures["2"].value is None


def test_layer_glob_scope_and_no_match(report: dict[str, Any]) -> None:
    result = ck.check(report, ["b-RWA > 2"], layers=["[02]"])
    assert {f.layer for f in result.failures} == {"0", "2"} and result.pairs == 2
    with pytest.raises(ReportError, match="matches no layer"):
        ck.check(report, ["b-RWA > 2"], layers=["encoder.*"])


def test_no_requirements_is_an_error(report: dict[str, Any]) -> None:
    with pytest.raises(ReportError, match="nothing to check"):
        ck.check(report, [])


def test_list_items_with_ids_are_named_in_paths() -> None:
    data = {"weights": [{"gate": "i", "s": 1.0}, {"gate": "f", "s": 2.0}], "xs": [3.0, 4.0]}
    assert entries.flatten(data) == {
        ("weights", "i", "gate"): "i",
        ("weights", "i", "s"): 1.0,
        ("weights", "f", "gate"): "f",
        ("weights", "f", "s"): 2.0,
        ("xs", "0"): 3.0,
        ("xs", "1"): 4.0,
    }


# ---------------------------------------------------------------------------- CLI


def test_cli_exit_0_when_all_hold_and_1_when_any_fails(tmp_path: Path, report: dict) -> None:
    path = _write(tmp_path, report)
    ok = _invoke("check", str(path), "--require", "b-RWA>=-1", "-r", "samples==512")
    assert ok.exit_code == 0, ok.stderr
    assert ok.stdout == ""
    assert "2 of 2 requirements held over" in ok.stderr
    bad = _invoke("check", str(path), "-r", "b-RWA>=-1", "-r", "b-RWA > 1.5")
    assert bad.exit_code == 1
    lines = [ln for ln in bad.stderr.splitlines() if ln.startswith("FAIL")]
    assert len(lines) == len(report["checkpoints"][-1]["layers"])
    assert "step 12800 · layer 0 · relations.b-RWA.alpha = " in lines[0]
    assert lines[0].endswith("needs b-RWA > 1.5")
    assert "1 of 2 requirements held" in bad.stderr


def test_cli_reads_stdin_piped_from_align(align_text: str) -> None:
    held = _invoke("check", "-", "--require", "b-RWA>=-1", input=align_text)
    assert held.exit_code == 0 and "1 of 1 requirements held" in held.stderr
    failed = _invoke("check", "-", "--require", "b-RWA>=1.5", "-f", "json", input=align_text)
    assert failed.exit_code == 1
    out = schema.validate_text(failed.stdout)
    assert out["schema"] == "symtool/check" and out["passed"] is False
    assert out["provenance"]["settings"]["report"] == "<stdin>"
    assert {f["layer"] for f in out["failures"]} == {"0", "2", "4", "6"}
    assert all(f["metric"] == "relations.b-RWA.alpha" for f in out["failures"])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-r", "alpha >= 0.8"], "ambiguous"),
        (["-r", "b-GWA => 0.8"], "invalid requirement"),
        (["-r", "nonsense >= 1"], "unknown metric"),
        (["-r", "b-GWA>=0", "--step", "99"], "no checkpoint at step 99"),
        (["-r", "b-GWA>=0", "--layer", "zzz"], "matches no layer"),
        (["-r", "b-GWA>=0", "-f", "xml"], "--format"),
        ([], "nothing to check"),
    ],
)
def test_cli_exit_2_on_bad_expressions(
    tmp_path: Path, report: dict, args: list[str], needle: str
) -> None:
    result = _invoke("check", str(_write(tmp_path, report)), *args)
    assert result.exit_code == 2
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_exit_2_on_malformed_reports(tmp_path: Path, report: dict) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    r = _invoke("check", str(bad), "-r", "b-GWA>=0")
    assert r.exit_code == 2 and "not JSON" in r.stderr
    broken = copy.deepcopy(report)
    broken["checkpoints"][1]["layers"][2]["relations"]["b-GWA"]["alpha"] = "high"
    bad.write_text(json.dumps(broken), encoding="utf-8")
    r = _invoke("check", str(bad), "-r", "b-GWA>=0")
    assert r.exit_code == 2
    assert "$.checkpoints[1].layers[2].relations['b-GWA'].alpha" in r.stderr
    r = _invoke("check", "-", "-r", "b-GWA>=0", input='{"schema": "other"}')
    assert r.exit_code == 2 and "<stdin>" in r.stderr
    r = _invoke("check", str(tmp_path / "missing.json"), "-r", "b-GWA>=0")
    assert r.exit_code == 2 and "cannot read" in r.stderr


def test_cli_requirements_from_symtool_toml_beside_the_report(tmp_path: Path, report: dict) -> None:
    path = _write(tmp_path, report)
    (tmp_path / "symtool.toml").write_text(
        '[check]\nrequire = ["b-RWA >= -1", "f-GWA > 1.5"]\nlayer = "[04]"\nstep = "all"\n',
        encoding="utf-8",
    )
    r = _invoke("check", str(path), "-f", "json")
    assert r.exit_code == 1
    out = json.loads(r.stdout)
    assert [q["requirement"] for q in out["requirements"]] == ["b-RWA >= -1", "f-GWA > 1.5"]
    assert {(f["step"], f["layer"]) for f in out["failures"]} == {
        (s, n) for s in (6400, 12800) for n in ("0", "4")
    }
    assert out["provenance"]["settings"]["config"] == str(tmp_path / "symtool.toml")
    # --require replaces the config's list; --config works for stdin too.
    r = _invoke("check", str(path), "-r", "b-RWA >= -1")
    assert r.exit_code == 0
    cfg = tmp_path / "strict.toml"
    cfg.write_text('[check]\nrequire = "b-RWA > 1.5"\n', encoding="utf-8")
    r = _invoke("check", "-", "--config", str(cfg), input=path.read_text(encoding="utf-8"))
    assert r.exit_code == 1 and "0 of 1 requirements held" in r.stderr
    cfg.write_text('[check]\nrequire = "b-RWA > 1.5"\nbogus = 1\n', encoding="utf-8")
    r = _invoke("check", "-", "--config", str(cfg), input=path.read_text(encoding="utf-8"))
    assert r.exit_code == 2 and "bogus" in r.stderr


def test_cli_table_and_csv_formats(tmp_path: Path, report: dict) -> None:
    path = _write(tmp_path, report)
    table = _invoke("check", str(path), "-r", "b-RWA>1.5", "-r", "samples>0", "-f", "table")
    assert table.exit_code == 1
    assert "Requirements" in table.stdout and "Failed requirements" in table.stdout
    assert "relations.b-RWA.alpha" in table.stdout
    out = tmp_path / "check.csv"
    csv = _invoke("check", str(path), "-r", "b-RWA>1.5", "-r", "samples>0", "-o", str(out))
    assert csv.exit_code == 1
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "requirement,held,step,checkpoint,layer,metric,value,reason"
    assert len(lines) == 1 + 4 + 1  # four failing layers, one requirement that held
    assert lines[-1].startswith("samples>0,True")


# ------------------------------------------------------------- symmetry and ode


@pytest.fixture(scope="module")
def ode_report() -> dict[str, Any]:
    result = _invoke("ode", str(ROOT / "fixtures" / "rnn"), "--last", "1", "-f", "json")
    assert result.exit_code == 0, result.stderr
    return schema.validate_text(result.stdout)


def test_symmetry_requirements_follow_the_report(symmetry_report: dict) -> None:
    last = symmetry_report["checkpoints"][-1]
    tau = symmetry_report["provenance"]["settings"]["rank_tau"]
    ranks = {
        x["name"]: next(r["rank"] for r in x["ranks"] if r["tau"] == tau) for x in last["layers"]
    }
    dead = {
        x["incoming"]: next(d["dead"] for d in x["dead"] if d["tau"] == 0.01) for x in last["units"]
    }
    assert ranks["4"] < 16 and dead["4"] > 0  # the weight-decay run lost rank and units
    result = ck.check(symmetry_report, ["rank >= 16", "dead == 0", "translation < 1"])
    failures = {(f.requirement, f.layer): f.value for f in result.failures}
    assert failures == {
        **{("rank >= 16", n): r for n, r in ranks.items() if r < 16},
        **{("dead == 0", f"units/{n}"): d for n, d in dead.items() if d != 0},
    }
    assert [o.held for o in result.outcomes] == [False, False, True]
    assert result.pairs == len(last["layers"]) + len(last["units"]) + 1


def test_ode_requirements(ode_report: dict) -> None:
    layer = ode_report["checkpoints"][-1]["layers"][0]
    lam = layer["lyapunov"]["lambda_1"]
    assert ck.resolve(ode_report, "lyapunov").paths == (("lyapunov", "lambda_1"),)
    assert ck.resolve(ode_report, "verdict").paths == (("verdict", "value"),)
    assert ck.resolve(ode_report, "rest.schemes.rk4.n_unstable").paths[0][2] == "rk4"
    with pytest.raises(
        ReportError, match=r"ambiguous: along\.spectral_radius, rest\.spectral_radius"
    ):
        ck.resolve(ode_report, "spectral_radius")
    ok = ck.check(
        ode_report, [f"lambda_1 <= {lam!r}", f"verdict.label == '{layer['verdict']['label']}'"]
    )
    assert ok.passed and ok.pairs == 1
    bad = ck.check(ode_report, [f"lambda_1 < {lam!r}"])
    assert [(f.layer, f.metric, f.value) for f in bad.failures] == [
        (layer["name"], "lyapunov.lambda_1", lam)
    ]


def _symmetry_report(tmp_path: Path, sd: dict[str, Any], *args: str) -> dict[str, Any]:
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_file(sd, str(path))
    result = _invoke("symmetry", str(path), "-f", "json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_metrics_of_records_that_all_failed_are_failures_not_unknown(tmp_path: Path) -> None:
    """A NaN weight leaves the only units record without numbers: 'dead==0' must still be a
    requirement that fails (exit 1) with the reason, not an unknown metric (exit 2)."""
    import torch

    w1 = torch.randn(8, 4)
    w1[0, 0] = float("nan")
    rep = _symmetry_report(tmp_path, {"fc1.weight": w1, "fc2.weight": torch.randn(3, 8)})
    (fail,) = ck.check(rep, ["dead == 0"]).failures
    assert fail.layer == "units/fc1" and fail.metric == "units.dead.0.01.dead"
    assert fail.reason == "undefined (non-finite weights)"
    path = _write(tmp_path, rep)
    assert _invoke("check", str(path), "-r", "dead==0").exit_code == 1
    # a group the report has no records of at all is a usage error that says so
    with pytest.raises(ReportError, match="this report has no attention records"):
        ck.check(rep, ["attention.dead == 0"])


def test_units_metric_asked_of_a_report_without_units_says_so(tmp_path: Path) -> None:
    import torch

    rep = _symmetry_report(tmp_path, {"a.q_proj.weight": torch.randn(8, 8),
                                      "a.k_proj.weight": torch.randn(8, 8),
                                      "a.v_proj.weight": torch.randn(8, 8),
                                      "a.o_proj.weight": torch.randn(8, 8)}, "--heads", "2")
    assert list(ck.check(rep, ["dead == 0"]).failures) == []  # the heads' dead count
    with pytest.raises(ReportError, match="has no units records"):
        ck.check(rep, ["units.dead == 0"])
