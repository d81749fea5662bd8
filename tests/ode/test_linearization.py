"""Reading Jacobians and recurrent weights (:mod:`symtool.ode.linearization`): RK rates and
regions of a planted Jacobian, gate-derived step sizes, per-gate weight diagnostics.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from symtool.ode.analysis import OdeSettings, analyze_state_dict
from symtool.ode.cells import cell_gate, zero_state
from symtool.ode.linearization import StepSize, gate_diagnostics, read_jacobian, step_size
from symtool.stability import stability_function
from tests.ode.factories import F64, MODULES, cells_of
from tests.reference import assert_plain_record, random_orthogonal


def test_ode_reading_of_a_planted_jacobian() -> None:
    theta = 1.5
    rot = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    jac = torch.block_diag(0.95 * rot, torch.tensor([[0.5]])).to(F64)
    dt = 0.5
    r = read_jacobian(jac, StepSize(dt, "override"))
    mus = [complex(*e) for e in r.eigenvalues]
    assert r.spectral_radius == pytest.approx(0.95) and r.discrete_stable
    assert r.delta == pytest.approx(float(torch.linalg.matrix_norm(jac - torch.eye(3), ord=2)))
    by = {s.scheme: s for s in r.schemes}
    for mu, rate in zip(mus, by["euler"].rates, strict=True):
        assert complex(*rate) == pytest.approx((mu - 1) / dt)
    for mu, rate in zip(mus, by["exact"].rates, strict=True):
        assert complex(*rate) == pytest.approx(np.log(mu) / dt)
    for s in (2, 3, 4):
        for mu, rate in zip(mus, by[f"rk{s}"].rates, strict=True):
            assert abs(stability_function(dt * complex(*rate), s) - mu) < 1e-12
    assert by["exact"].spectral_abscissa == pytest.approx(math.log(0.95) / dt)
    assert by["exact"].n_unstable == 0 and by["euler"].n_unstable == 0
    for s in r.schemes:  # RK3/RK4 regions bulge into Re z > 0: their reading may grow
        assert s.n_unstable == sum(rate[0] * dt > 1e-10 for rate in s.rates)
    # exact-flow z = ln 0.95 ± 1.5i: inside RK3 (|Im| < √3) and RK4, outside Euler/RK2
    regions = {g.stages: g for g in r.regions}
    assert [regions[s].in_region for s in (1, 2, 3, 4)] == [False, False, True, True]
    worst = max(abs(stability_function(np.log(m), 4)) for m in mus)
    assert regions[4].margin == pytest.approx(1 - worst)
    lam = np.log(mus[0]) / dt
    assert r.euler_dt_max[0] == pytest.approx(-2 * lam.real / abs(lam) ** 2)
    assert r.euler_dt_limit == pytest.approx(min(r.euler_dt_max))


def test_ode_reading_flags_growth_and_zero_modes() -> None:
    r = read_jacobian(torch.diag(torch.tensor([1.2, 0.0], dtype=F64)), StepSize(1.0, "unit"))
    assert not r.discrete_stable and r.zero_modes == 1
    exact = next(s for s in r.schemes if s.scheme == "exact")
    assert exact.rates[1] is None and exact.n_unstable == 1
    assert exact.spectral_abscissa == pytest.approx(math.log(1.2))
    assert r.euler_dt_limit is None and r.euler_dt_max == (None, 0.0)
    assert all(g.margin is None and not g.in_region for g in r.regions)
    assert_plain_record(r)


def test_gate_step_sizes_at_rest() -> None:
    gru = MODULES["gru_2l_bi"]()
    _, cells = cells_of(gru)
    cell = cells[0]
    z = torch.sigmoid(cell.b_ih[4:8] + cell.b_hh[4:8])  # zero state, zero input
    torch.testing.assert_close(cell_gate(cell, zero_state(cell.spec), torch.zeros(3, dtype=F64)), z)
    st = step_size("gru", z)
    assert st.dt == pytest.approx(float((1 - z).mean())) and st.source == "1 - z"
    f = torch.tensor([0.5, 0.9], dtype=F64)
    st = step_size("lstm", f)
    assert st.dt == pytest.approx(0.3) and st.memory_time == pytest.approx(
        -1 / float(torch.log(f).mean())
    )
    assert step_size("lstm", f, 0.25).dt == 0.25 and step_size("rnn").dt == 1.0
    report = analyze_state_dict(gru.state_dict(), OdeSettings(drive="none"))
    assert report.layers[0].rest.step.dt == pytest.approx(float((1 - z).mean()))


def test_weight_diagnostics_identities() -> None:
    q = random_orthogonal(6, 0)
    d = gate_diagnostics(q, "hh", "tanh")
    assert d.unitarity_defect < 1e-12 and d.departure_from_normality < 1e-6
    assert d.non_decaying == 6 and all(m.note == "non-decaying" for m in d.modes)
    assert d.spectral_radius == pytest.approx(1.0) and d.gamma_sigma_max == pytest.approx(1.0)
    sym = torch.tensor([[0.5, 0.1], [0.1, 0.25]], dtype=F64)
    d = gate_diagnostics(sym, "r", "sigmoid")
    assert d.symmetric_energy == pytest.approx(1.0) and d.skew_energy == pytest.approx(0.0)
    assert d.gamma == 0.25 and d.vanishing_guaranteed
    mus = np.linalg.eigvalsh(sym.numpy())[::-1]
    assert [m.timescale for m in d.modes] == pytest.approx([-1 / math.log(m) for m in mus])
    jordan = torch.tensor([[0.5, 2.0], [0.0, 0.5]], dtype=F64)
    d = gate_diagnostics(jordan, "hh", "tanh")
    assert d.departure_from_normality == pytest.approx(math.sqrt(4.0 / 4.5))
    assert d.symmetric_energy + d.skew_energy == pytest.approx(1.0)
    assert d.max_timescale == pytest.approx(1 / math.log(2))


def test_weight_blocks_per_gate_and_projection() -> None:
    report = analyze_state_dict(
        MODULES["lstm_2l_bi_proj"]().state_dict(), OdeSettings(drive="none")
    )
    layer = report.layers[0]
    assert [g.gate for g in layer.weights] == ["i", "f", "g", "o"]
    assert [g.activation for g in layer.weights] == ["sigmoid", "sigmoid", "tanh", "sigmoid"]
    assert layer.weights[0].matrix == "W_hh[i] @ W_hr" and layer.weights[0].modes_total == 5
    assert (layer.n, layer.t, layer.stack_n, layer.stack_t) == (2, 2, 4, 2)
    assert layer.lyapunov is None and layer.verdict.basis == "log_radius_at_rest"

