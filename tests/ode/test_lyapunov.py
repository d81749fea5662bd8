"""Lyapunov exponents and their summaries (:mod:`symtool.ode.lyapunov`).

References are closed forms (log-moduli of a linear recurrence) and a slow per-step QR
of autograd Jacobians, in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import t as student_t

from symtool.ode.analysis import OdeSettings, analyze_state_dict, verdict
from symtool.ode.cells import cell_step, step_map
from symtool.ode.lyapunov import (
    kaplan_yorke,
    lambda_interval,
    participation_ratio,
    state_participation_ratio,
    trajectory_pass,
)
from tests.ode.factories import (
    F64,
    MODULES,
    assert_interval_verdict,
    cells_of,
    linear_sd,
    sequences,
)


def test_linear_rnn_lyapunov_equals_log_moduli() -> None:
    mus = torch.tensor([0.97, 0.9, -0.8, 0.7, -0.6, 0.5, 0.4, -0.3], dtype=F64)
    v = torch.eye(8, dtype=F64) + 0.3 * torch.randn(
        8, 8, generator=torch.Generator().manual_seed(5), dtype=F64
    )
    w = v @ torch.diag(mus) @ torch.linalg.inv(v)
    settings = OdeSettings(
        nonlinearity="linear", drive_steps=1500, drive_batch=2, warmup=500, jacobian_points=0
    )
    lyap = analyze_state_dict(linear_sd(w), settings).layers[0].lyapunov
    expected = sorted(torch.log(mus.abs()).tolist(), reverse=True)
    assert lyap.k == 8 and lyap.lambda_1 == pytest.approx(expected[0], abs=1e-6)
    assert lyap.exponents == pytest.approx(expected, abs=1e-6)
    assert lyap.kaplan_yorke == 0.0 and lyap.total == pytest.approx(sum(expected), abs=1e-6)


def test_collapsed_exponents_are_null_with_a_reason() -> None:
    """A rank-2 linear recurrence: exponents 3..8 are −∞, so null, and the record says why."""
    w = torch.zeros(8, 8, dtype=F64)
    w[0, 0], w[1, 1] = 0.9, 0.5
    settings = OdeSettings(
        nonlinearity="linear", drive_steps=60, drive_batch=2, warmup=10, jacobian_points=0
    )
    lyap = analyze_state_dict(linear_sd(w), settings).layers[0].lyapunov
    assert lyap.exponents[:2] == pytest.approx([math.log(0.9), math.log(0.5)], abs=1e-6)
    assert lyap.exponents[2:] == (None,) * 6 and lyap.total is None
    assert lyap.reason is not None and "6 of 8 exponents are −∞" in lyap.reason


def test_qr_exponents_match_a_slow_reference() -> None:
    mod = MODULES["gru_2l_bi"]()
    _, cells = cells_of(mod)
    cell = cells[0]
    x = torch.randn(30, 2, 3, generator=torch.Generator().manual_seed(6), dtype=F64)
    stats = trajectory_pass(step_map(cell), x, k=3, warmup=5, seed=7)
    d = cell.spec.state_size
    q0 = torch.linalg.qr(torch.randn(d, 3, generator=torch.Generator().manual_seed(7), dtype=F64))[
        0
    ].numpy()
    for b in range(2):
        s, q, logs = torch.zeros(d, dtype=F64), q0, np.zeros(3)
        for t in range(30):
            xt = x[t, b]
            jac = torch.autograd.functional.jacobian(lambda s1, xt=xt: cell_step(cell, s1, xt), s)
            q, r = np.linalg.qr(jac.numpy() @ q)
            s = cell_step(cell, s, xt)
            if t >= 5:
                logs += np.log(np.abs(np.diag(r)))
        expected = np.sort(logs / 25)[::-1]
        np.testing.assert_allclose(stats.exponents[b].numpy(), expected, atol=1e-10)


def test_participation_ratio_is_scale_free_up_to_float64_range() -> None:
    ev = torch.tensor([1.0, 1.0, 2.0], dtype=F64)
    base, _ = participation_ratio(ev)
    assert base == pytest.approx(16 / 6)
    big, why = participation_ratio(ev * 1e300)  # Σσ² alone would overflow
    assert why is None and big == pytest.approx(base, rel=1e-15)
    assert participation_ratio(torch.zeros(3, dtype=F64)) == (None, "hidden states do not vary")
    assert participation_ratio(torch.tensor([1.0, math.inf], dtype=F64))[1] == (
        "hidden-state moments overflowed")


def test_kaplan_yorke_and_participation_ratio() -> None:
    assert kaplan_yorke((0.5, 0.0, -1.0), 3) == (2.5, None)
    assert kaplan_yorke((0.3, -0.1, -0.4), 3)[0] == pytest.approx(2 + 0.2 / 0.4)
    assert kaplan_yorke((-0.1, -0.2), 2) == (0.0, None)
    assert kaplan_yorke((0.2, 0.1), 2) == (2.0, None)
    assert kaplan_yorke((0.2, 0.1), 5)[0] is None
    assert kaplan_yorke((0.2, None), 2) == (1.0, None)
    eye = torch.eye(5, dtype=F64)[:3]
    assert state_participation_ratio(torch.cat([eye, -eye])) == (pytest.approx(3.0), None)
    assert participation_ratio(torch.zeros(3))[0] is None


# ------------------------------------------------------------ λ_1's interval


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
    x = sequences(steps, batch, d_in, seed=4)
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
    assert_interval_verdict(one)

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
