"""Lyapunov exponents and their summaries (:mod:`symtool.ode.lyapunov`).

References are closed forms (log-moduli of a linear recurrence) and a slow per-step QR
of autograd Jacobians, in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from symtool.ode.analysis import OdeSettings, analyze_state_dict
from symtool.ode.cells import cell_step, step_map
from symtool.ode.lyapunov import (
    kaplan_yorke,
    participation_ratio,
    state_participation_ratio,
    trajectory_pass,
)
from tests.ode.factories import F64, MODULES, cells_of, linear_sd


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

