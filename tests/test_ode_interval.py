"""λ_1's interval and the verdict read from it (docs/ode.md "Verdict").

Planted linear recurrences whose exponent is known exactly, a brute-force numpy QR loop
for the standard error and the frame spread, the single-sequence rule, determinism, the
fixtures across seeds, and the report plumbing (schema, table, CSV, check).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from scipy.stats import t as student_t
from typer.testing import CliRunner

from symtool.cli.app import app
from symtool.errors import UsageError
from symtool.ode.analysis import OdeSettings, analyze_state_dict, verdict
from symtool.ode.lyapunov import lambda_interval
from symtool.report import check as ck
from symtool.report import schema

F64 = torch.float64
LINEAR = OdeSettings(nonlinearity="linear", jacobian_points=0)
NEW_LYAPUNOV = ("lambda_1_se", "frame_lambda_1", "frame_range", "lambda_1_low",
                "lambda_1_high", "interval_rule")
NEW_SETTINGS = ("lyapunov_frames", "confidence", "single_sequence_band")


def _orthogonal(h: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(h, h, generator=gen, dtype=F64))[0]


def _rnn_sd(w_hh: torch.Tensor, d_in: int = 2, bias: float = 0.0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    h = w_hh.shape[0]
    return {
        "weight_ih_l0": torch.randn(h, d_in, generator=gen, dtype=F64),
        "weight_hh_l0": w_hh,
        "bias_ih_l0": bias * torch.randn(h, generator=gen, dtype=F64),
        "bias_hh_l0": torch.zeros(h, dtype=F64),
    }


def _seqs(steps: int, batch: int, d_in: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(steps, batch, d_in, generator=torch.Generator().manual_seed(seed),
                       dtype=F64)


def _consistent(layer) -> None:
    """The label is the interval's position relative to 0, and the band its half-width."""
    ly, v = layer.lyapunov, layer.verdict
    assert v.basis == "lambda_1" and v.value == ly.lambda_1
    low, high = ly.lambda_1_low, ly.lambda_1_high
    assert low <= ly.lambda_1 <= high
    assert v.band == pytest.approx((high - low) / 2, rel=1e-12)
    assert v.label == ("contracting" if high < 0 else "expanding" if low > 0 else "marginal")


# ------------------------------------------------------------ planted exponents


@pytest.mark.parametrize(
    ("name", "w", "exponent", "label"),
    [
        ("0.5·I", 0.5 * torch.eye(8, dtype=F64), math.log(0.5), "contracting"),
        ("orthogonal", _orthogonal(8), 0.0, "marginal"),
        ("1.2·orthogonal", 1.2 * _orthogonal(8, seed=2), math.log(1.2), "expanding"),
    ],
)
def test_planted_linear_recurrences(name: str, w: torch.Tensor, exponent: float,
                                    label: str) -> None:
    """J = W_hh at every step: every sequence and frame has λ_1 = ln ρ exactly, so the
    standard error and the frame range vanish (to rounding) and the interval is the floor
    ``marginal_band`` around the exact exponent."""
    layer = analyze_state_dict(_rnn_sd(w), LINEAR, sequences=_seqs(80, 6)).layers[0]
    ly = layer.lyapunov
    assert ly.lambda_1 == pytest.approx(exponent, abs=1e-12), name
    assert ly.lambda_1_se < 1e-13 and ly.frame_range < 1e-13
    assert len(ly.frame_lambda_1) == 3 and ly.frame_lambda_1[0] == ly.lambda_1
    assert ly.frame_lambda_1 == pytest.approx([exponent] * 3, abs=1e-12)
    assert ly.lambda_1_high - ly.lambda_1 == pytest.approx(LINEAR.marginal_band, rel=1e-9)
    assert layer.verdict.label == label
    assert layer.verdict.evidence.startswith("λ_1 along 6 probe sequences, 3 starting frame")
    _consistent(layer)
    if label != "marginal":  # the whole interval is on one side of 0
        assert (ly.lambda_1_high < 0) if label == "contracting" else (ly.lambda_1_low > 0)
    one = analyze_state_dict(_rnn_sd(w), LINEAR, sequences=_seqs(80, 1)).layers[0]
    assert one.verdict.label == label and one.lyapunov.lambda_1_se is None
    assert one.lyapunov.lambda_1_high - one.lyapunov.lambda_1 == pytest.approx(
        LINEAR.single_sequence_band, rel=1e-9)


def test_standard_error_and_frames_match_a_brute_force_qr_loop() -> None:
    """A tanh RNN: per-sequence exponents by a numpy QR loop (J = diag(1 − tanh²a) W_hh),
    extra frames as single renormalised vectors drawn after Q_0 from the seeded generator;
    the interval is λ_1 ± max(t·SE + R_F, floor)."""
    d, d_in, steps, batch, warmup, seed = 6, 3, 40, 5, 8, 11
    gen = torch.Generator().manual_seed(0)
    sd = {
        "weight_ih_l0": torch.randn(d, d_in, generator=gen, dtype=F64),
        "weight_hh_l0": 1.4 * torch.randn(d, d, generator=gen, dtype=F64) / math.sqrt(d),
        "bias_ih_l0": 0.3 * torch.randn(d, generator=gen, dtype=F64),
        "bias_hh_l0": 0.3 * torch.randn(d, generator=gen, dtype=F64),
    }
    x = _seqs(steps, batch, d_in, seed=4)
    settings = OdeSettings(warmup=warmup, seed=seed, jacobian_points=0)
    ly = analyze_state_dict(sd, settings, sequences=x).layers[0].lyapunov

    frames = torch.Generator().manual_seed(seed)
    q0 = torch.linalg.qr(torch.randn(d, d, generator=frames, dtype=F64))[0].numpy()
    v0 = torch.randn(d, 2, generator=frames, dtype=F64).numpy()
    v0 /= np.linalg.norm(v0, axis=0)
    p = {k: v.numpy() for k, v in sd.items()}
    lam, vec = np.zeros(batch), np.zeros((batch, 2))
    for b in range(batch):
        h, q, v = np.zeros(d), q0, v0
        logs, vlogs = np.zeros(d), np.zeros(2)
        for t in range(steps):
            a = p["weight_ih_l0"] @ x[t, b].numpy() + p["bias_ih_l0"] + p["weight_hh_l0"] @ h
            a += p["bias_hh_l0"]
            jac = (1 - np.tanh(a) ** 2)[:, None] * p["weight_hh_l0"]
            q, r = np.linalg.qr(jac @ q)
            z = jac @ v
            v = z / np.linalg.norm(z, axis=0)
            h = np.tanh(a)
            if t >= warmup:
                logs += np.log(np.abs(np.diag(r)))
                vlogs += np.log(np.linalg.norm(z, axis=0))
        lam[b] = (logs / (steps - warmup)).max()
        vec[b] = vlogs / (steps - warmup)
    se = lam.std(ddof=1) / math.sqrt(batch)
    frame_means = [lam.mean(), *vec.mean(axis=0)]
    r_f = max(frame_means) - min(frame_means)
    half = max(student_t.ppf(0.975, batch - 1) * se + r_f, settings.marginal_band)

    assert ly.lambda_1 == pytest.approx(lam.mean(), abs=1e-10)
    assert ly.lambda_1_se == pytest.approx(se, abs=1e-10) and se > 1e-3
    assert ly.frame_lambda_1 == pytest.approx(frame_means, abs=1e-10)
    assert ly.frame_range == pytest.approx(r_f, abs=1e-10)
    assert ly.lambda_1_low == pytest.approx(lam.mean() - half, abs=1e-10)
    assert ly.lambda_1_high == pytest.approx(lam.mean() + half, abs=1e-10)
    assert "t_0.975,4" in ly.interval_rule and "5 sequences" in ly.interval_rule

    one = analyze_state_dict(sd, settings, sequences=x[:, :1]).layers[0]
    assert one.lyapunov.lambda_1_se is None
    assert one.lyapunov.lambda_1 == pytest.approx(lam[0], abs=1e-10)
    half_one = max(one.lyapunov.frame_range, settings.single_sequence_band)
    assert one.lyapunov.lambda_1_high == pytest.approx(lam[0] + half_one, abs=1e-12)
    assert "one sequence, no standard error" in one.lyapunov.interval_rule
    assert "one probe sequence" in one.verdict.evidence
    _consistent(one)

    single = analyze_state_dict(sd, OdeSettings(warmup=warmup, seed=seed, jacobian_points=0,
                                                lyapunov_frames=1), sequences=x).layers[0]
    assert single.lyapunov.frame_range is None and len(single.lyapunov.frame_lambda_1) == 1
    half_single = max(student_t.ppf(0.975, batch - 1) * se, settings.marginal_band)
    assert single.lyapunov.lambda_1_high == pytest.approx(lam.mean() + half_single, abs=1e-10)


def test_noise_above_the_old_band_reads_marginal() -> None:
    """The audit's case: λ_1 = 0.002 > 1e-3 with SE ≈ 0.0025 read 'expanding' under the
    fixed band; the interval holds 0, so it is marginal. A clear sign stays clear."""
    rng = np.random.default_rng(0)
    e = rng.standard_normal(16)
    e = 0.002 + 0.01 * (e - e.mean()) / e.std(ddof=1)  # mean 0.002, sd 0.01 exactly
    iv = lambda_interval(e, [0.002, 0.004, 0.001])
    t = student_t.ppf(0.975, 15)
    assert iv.se == pytest.approx(0.0025) and iv.frame_range == pytest.approx(0.003)
    assert iv.half_width == pytest.approx(t * 0.0025 + 0.003)
    assert verdict(1e-3, lambda_1=0.002).label == "expanding"  # the old rule
    v = verdict(iv.half_width, lambda_1=iv.center, interval=(iv.low, iv.high))
    assert v.label == "marginal" and v.band == pytest.approx(iv.half_width)
    clear = lambda_interval(e - 0.05, [-0.048, -0.046, -0.049])
    assert verdict(clear.half_width, lambda_1=clear.center).label == "contracting"
    assert lambda_interval(np.array([0.1, -math.inf]), [None]) is None
    assert lambda_interval(np.array([0.01]), [0.01]).half_width == 0.1  # the default


def test_weights_only_fallback_says_so() -> None:
    sd = _rnn_sd(1.5 * _orthogonal(6))
    for settings, why in ((OdeSettings(drive="none"), "no probe data and no drive"),
                          (OdeSettings(drive_steps=30), "synthetic")):
        layer = analyze_state_dict(sd, settings).layers[0]
        v = layer.verdict
        assert v.basis == "log_radius_at_rest" and v.label == "expanding"
        assert v.band == settings.marginal_band and v.value == pytest.approx(math.log(1.5))
        assert v.evidence.startswith("weights only") and why in v.evidence
    synthetic = analyze_state_dict(sd, OdeSettings(drive_steps=30)).layers[0].lyapunov
    assert synthetic.lambda_1_low is not None  # the interval is reported; the verdict skips it


def test_collapsed_lower_exponents_keep_the_lambda_1_verdict() -> None:
    """A rank-2 recurrence: exponents 3..6 are −∞ (null, with the reason), λ_1 = ln 0.9 is
    finite in every sequence, so the verdict still rests on its interval."""
    w = torch.zeros(6, 6, dtype=F64)
    w[0, 0], w[1, 1] = 0.9, 0.5
    layer = analyze_state_dict(_rnn_sd(w), LINEAR, sequences=_seqs(60, 4)).layers[0]
    assert "4 of 6 exponents are −∞" in layer.lyapunov.reason
    assert layer.lyapunov.lambda_1 == pytest.approx(math.log(0.9), abs=1e-12)
    assert layer.verdict.label == "contracting"
    _consistent(layer)
    grow = analyze_state_dict(_rnn_sd(60 * _orthogonal(6)), LINEAR, sequences=_seqs(300, 2))
    v = grow.layers[0].verdict  # the state overflows: no λ_1, the rest point decides
    assert v.basis == "log_radius_at_rest" and v.label == "expanding"
    assert "no λ_1 interval (state became non-finite at step" in v.evidence


def test_settings_are_validated() -> None:
    for bad in ({"lyapunov_frames": 0}, {"confidence": 1.0}, {"single_sequence_band": -1.0}):
        with pytest.raises(UsageError):
            OdeSettings(**bad)


# ------------------------------------------------------------ determinism and fixtures


def test_same_seed_same_numbers_other_seed_other_frames() -> None:
    gen = torch.Generator().manual_seed(5)
    sd = {k: v for k, v in _rnn_sd(1.3 * _orthogonal(10), d_in=2, bias=0.5).items()}
    sd["weight_hh_l0"] = sd["weight_hh_l0"] + 0.3 * torch.randn(10, 10, generator=gen, dtype=F64)
    x = _seqs(50, 8)
    a = analyze_state_dict(sd, OdeSettings(seed=3), sequences=x)
    b = analyze_state_dict(sd, OdeSettings(seed=3), sequences=x)
    assert a == b
    c = analyze_state_dict(sd, OdeSettings(seed=4), sequences=x)
    assert a.layers[0].lyapunov.frame_lambda_1 != c.layers[0].lyapunov.frame_lambda_1


def _fixture_labels(name: str, step: str, seeds: range) -> dict[str, set[str]]:
    folder = Path(__file__).resolve().parents[1] / "fixtures" / name
    x = load_file(str(folder / "probe.safetensors"))["x"]
    sd = load_file(str(folder / f"step_{step}.safetensors"))
    labels: dict[str, set[str]] = {}
    for seed in seeds:
        settings = OdeSettings(seed=seed, batch_first=True)
        for layer in analyze_state_dict(sd, settings, sequences=x).layers:
            _consistent(layer)
            labels.setdefault(layer.name, set()).add(layer.verdict.label)
    return labels


@pytest.mark.parametrize(("name", "step"), [("rnn", "000000"), ("rnn", "000400"),
                                            ("gru", "000100"), ("gru", "000400")])
def test_fixture_verdicts_do_not_depend_on_the_seed(name: str, step: str) -> None:
    """Seeds 0–4 move λ_1 by up to 0.02 (gru step 100) through the starting frame; every
    interval stays below 0 (docs/ode.md lists all fixtures)."""
    labels = _fixture_labels(name, step, range(5))
    assert labels == {"rnn.l0": {"contracting"}}


# ------------------------------------------------------------ report plumbing

runner = CliRunner()


def _invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def ode_json(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("ode")
    gen = torch.Generator().manual_seed(0)
    rnn = {"weight_ih_l0": torch.randn(6, 2, generator=gen),
           "weight_hh_l0": 0.5 * torch.eye(6), "bias_ih_l0": torch.zeros(6),
           "bias_hh_l0": torch.zeros(6)}
    save_file({f"rnn.{k}": v for k, v in rnn.items()}, str(folder / "step_1.safetensors"))
    save_file({"x": torch.randn(4, 30, 2, generator=gen)}, str(folder / "probe.safetensors"))
    res = _invoke("ode", folder / "step_1.safetensors", "--data", folder / "probe.safetensors",
                  "--batch-first", "--nonlinearity", "linear", "-f", "json")
    assert res.exit_code == 0, res.output
    (folder / "ode.json").write_text(res.stdout)
    return folder, json.loads(res.stdout)


def test_report_fields_check_and_older_reports(ode_json: tuple[Path, dict]) -> None:
    folder, rep = ode_json
    layer = rep["checkpoints"][0]["layers"][0]
    ly = layer["lyapunov"]
    assert ly["lambda_1"] == pytest.approx(math.log(0.5), abs=1e-6)
    assert ly["lambda_1_high"] < 0 and layer["verdict"]["label"] == "contracting"
    assert rep["provenance"]["settings"]["lyapunov_frames"] == 3
    assert ck.resolve(rep, "lambda_1_se").paths == (("lyapunov", "lambda_1_se"),)
    assert ck.resolve(rep, "lambda_1_high").paths == (("lyapunov", "lambda_1_high"),)
    assert ck.resolve(rep, "frame_lambda_1.2").paths == (("lyapunov", "frame_lambda_1", "2"),)
    res = _invoke("check", folder / "ode.json", "-r", "lambda_1_se < 1e-6", "-r",
                  "lambda_1_high < 0", "-r", "verdict.band <= 0.001")
    assert res.exit_code == 0, res.output
    old = json.loads(json.dumps(rep))  # a version-3 report made before the interval
    for key in NEW_SETTINGS:
        del old["provenance"]["settings"][key]
    for lay in old["checkpoints"][0]["layers"]:
        for key in NEW_LYAPUNOV:
            del lay["lyapunov"][key]
        del lay["verdict"]["evidence"]
    assert schema.validate(old) == "ode"
    broken = json.loads(json.dumps(rep))
    broken["checkpoints"][0]["layers"][0]["lyapunov"]["lambda_1_se"] = "small"
    with pytest.raises(Exception, match="lambda_1_se"):
        schema.validate(broken)


def test_table_and_csv_show_the_interval(ode_json: tuple[Path, dict]) -> None:
    folder, _ = ode_json
    table = _invoke("ode", folder / "step_1.safetensors", "--nonlinearity", "linear",
                    "-f", "table", "--data", folder / "probe.safetensors", "--batch-first")
    assert table.exit_code == 0, table.output
    assert "interval" in table.output and "[-0.694, -0.692]" in table.output
    rest = _invoke("ode", folder / "step_1.safetensors", "--nonlinearity", "linear",
                   "-f", "table")
    assert "contracting (rest)" in rest.output
    csv = _invoke("ode", folder / "step_1.safetensors", "--nonlinearity", "linear", "-f", "csv",
                  "--data", folder / "probe.safetensors", "--batch-first")
    quantities = {line.split(",")[4] for line in csv.stdout.splitlines()[1:]}
    assert {"lyapunov.lambda_1_se", "lyapunov.lambda_1_low", "lyapunov.lambda_1_high",
            "lyapunov.frame_range", "verdict.band", "verdict.basis"} <= quantities
