"""Tests of the ODE analysis: cells rebuilt from state dicts, Jacobians, RK readings, Lyapunov.

References are PyTorch's own ``nn.RNN/GRU/LSTM`` modules (autograd through the module),
central finite differences, closed forms and planted spectra, all in float64.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from symtool.errors import ProbeError, UsageError
from symtool.ode.analysis import (
    OdeSettings,
    analyze_state_dict,
    analyze_step,
    prepare_sequences,
    verdict,
)
from symtool.ode.cells import (
    cell_gate,
    cell_jacobian,
    cell_step,
    discover_cells,
    load_cell,
    operational_order,
    run_stack,
    split_state,
    stacks,
    step_map,
    zero_state,
)
from symtool.ode.linearization import StepSize, gate_diagnostics, read_jacobian, step_size
from symtool.ode.lyapunov import (
    kaplan_yorke,
    participation_ratio,
    state_participation_ratio,
    trajectory_pass,
)
from symtool.stability import (
    imaginary_axis_extent,
    in_stability_region,
    real_axis_extent,
    rk_rate,
    stability_function,
)

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: thread hand-offs cost more than the arithmetic on a busy 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------ factories


def _module(kind: str, **kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[kind]
    return cls(**kw).to(F64)


MODULES = {
    "rnn_tanh_2l_bi": lambda: _module(
        "rnn", input_size=3, hidden_size=5, num_layers=2, bidirectional=True
    ),
    "rnn_relu": lambda: _module("rnn", input_size=3, hidden_size=4, nonlinearity="relu"),
    "gru_2l_bi": lambda: _module(
        "gru", input_size=3, hidden_size=4, num_layers=2, bidirectional=True
    ),
    "lstm_2l_bi_proj": lambda: _module(
        "lstm", input_size=3, hidden_size=5, num_layers=2, bidirectional=True, proj_size=2
    ),
    "lstm_nobias": lambda: _module("lstm", input_size=3, hidden_size=4, bias=False),
}


def _nonlinearity(mod: torch.nn.Module) -> str:
    return getattr(mod, "nonlinearity", "tanh")


def _cells_of(mod: torch.nn.Module, prefix: str = "enc.rnn"):
    sd = {f"{prefix}.{k}": v for k, v in mod.state_dict().items()}
    found = discover_cells(sd, _nonlinearity(mod))
    (group,) = stacks(found.cells)
    return sd, [load_cell(c, sd) for c in group]


def _index(mod: torch.nn.Module, spec) -> int:
    """Row of a cell in PyTorch's ``h_n`` (layer-major, then direction)."""
    dirs = 2 if mod.bidirectional else 1
    return spec.layer * dirs + int(spec.reverse)


def _linear_sd(w: torch.Tensor, d_in: int = 2) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    h = w.shape[0]
    return {
        "weight_ih_l0": torch.randn(h, d_in, generator=gen, dtype=F64),
        "weight_hh_l0": w,
        "bias_ih_l0": torch.zeros(h, dtype=F64),
        "bias_hh_l0": torch.zeros(h, dtype=F64),
    }


def _orthogonal(h: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(h, h, generator=gen, dtype=F64))[0]


def _walk(obj: object, path: str = "report") -> None:
    """Every record field is None, bool, int, finite float, str, tuple or a record."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            _walk(getattr(obj, f.name), f"{path}.{f.name}")
    elif isinstance(obj, tuple | list):
        for i, v in enumerate(obj):
            _walk(v, f"{path}[{i}]")
    elif isinstance(obj, float):
        assert type(obj) is float and math.isfinite(obj), path
    else:
        assert obj is None or type(obj) in (bool, int, str), (path, type(obj))


# ------------------------------------------------------------------ discovery


def test_discovery_finds_layers_directions_cells_and_skips_the_rest() -> None:
    lstm = MODULES["lstm_2l_bi_proj"]()
    sd = {f"encoder.rnn.{k}": v for k, v in lstm.state_dict().items()}
    for name, cell in [
        ("dec.a", torch.nn.RNNCell(2, 3)),
        ("dec.b", torch.nn.GRUCell(2, 3)),
        ("dec.c", torch.nn.LSTMCell(2, 3)),
    ]:
        sd.update({f"{name}.{k}": v for k, v in cell.state_dict().items()})
    sd["fc.weight"] = torch.zeros(2, 2)
    sd["bad.weight_ih"] = torch.zeros(6, 2)
    sd["bad.weight_hh"] = torch.zeros(6, 3)  # 2 gates: no such cell
    found = discover_cells({k: tuple(v.shape) for k, v in sd.items()})  # shapes suffice
    got = {c.name: (c.kind, c.hidden_size, c.proj_size, c.input_size) for c in found.cells}
    assert got == {
        "encoder.rnn.l0": ("lstm", 5, 2, 3),
        "encoder.rnn.l0_reverse": ("lstm", 5, 2, 3),
        "encoder.rnn.l1": ("lstm", 5, 2, 4),
        "encoder.rnn.l1_reverse": ("lstm", 5, 2, 4),
        "dec.a": ("rnn", 3, 0, 2),
        "dec.b": ("gru", 3, 0, 2),
        "dec.c": ("lstm", 3, 0, 2),
    }
    state = {c.name: c.state_size for c in found.cells}
    assert state["encoder.rnn.l0"] == 2 + 5 and state["dec.b"] == 3
    reasons = {s.name: s.reason for s in found.skipped}
    assert reasons["fc.weight"] == "not a recurrent-cell parameter"
    assert "gate count 2" in reasons["bad.weight_hh"] and "bad.weight_ih" in reasons
    groups = stacks(found.cells)
    assert sorted(len(g) for g in groups) == [1, 1, 1, 4]
    assert operational_order("lstm", 2) == (4, 2) and operational_order("gru") == (2, 1)


def test_bare_module_names_and_nonlinearity_validation() -> None:
    found = discover_cells(MODULES["rnn_relu"]().state_dict(), "relu")
    assert [c.name for c in found.cells] == ["l0"] and found.cells[0].nonlinearity == "relu"
    with pytest.raises(Exception, match="nonlinearity"):
        discover_cells({}, "sigmoid")


# ------------------------------------------------------------------ exact steps, Jacobians


@pytest.mark.parametrize("case", sorted(MODULES))
def test_rebuilt_stack_reproduces_module_outputs(case: str) -> None:
    mod = MODULES[case]()
    _, cells = _cells_of(mod)
    x = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    out = mod(x)
    h_n, c_n = out[1] if isinstance(out[1], tuple) else (out[1], None)
    seen = run_stack(cells, x)
    for cell in cells:
        s = zero_state(cell.spec, 2)
        for xt in seen[cell.spec]:
            s = cell_step(cell, s, xt)
        h, c = split_state(cell.spec, s)
        torch.testing.assert_close(h, h_n[_index(mod, cell.spec)], atol=1e-13, rtol=0)
        if c is not None:
            torch.testing.assert_close(c, c_n[_index(mod, cell.spec)], atol=1e-13, rtol=0)


@pytest.mark.parametrize("case", sorted(MODULES))
def test_jacobian_matches_module_autograd_and_finite_differences(case: str) -> None:
    mod = MODULES[case]()
    _, cells = _cells_of(mod)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 1, 3, generator=gen, dtype=F64)
    seen = run_stack(cells, x)  # layer inputs when every other state is zero
    n_rows = mod.num_layers * (2 if mod.bidirectional else 1)
    for cell in cells:
        spec, idx = cell.spec, _index(mod, cell.spec)
        s = 0.5 * torch.randn(spec.state_size, generator=gen, dtype=F64)
        h_dim = spec.out_size

        def module_step(
            state: torch.Tensor, idx: int = idx, h_dim: int = h_dim, hidden: int = spec.hidden_size
        ) -> torch.Tensor:
            h0 = torch.zeros(n_rows, 1, h_dim, dtype=F64).index_copy(
                0, torch.tensor([idx]), state[:h_dim].reshape(1, 1, h_dim)
            )
            if not isinstance(mod, torch.nn.LSTM):
                return mod(x, h0)[1][idx, 0]
            hc = state[h_dim:].reshape(1, 1, -1)
            c0 = torch.zeros(n_rows, 1, hidden, dtype=F64).index_copy(0, torch.tensor([idx]), hc)
            h_n, c_n = mod(x, (h0, c0))[1]
            return torch.cat([h_n[idx, 0], c_n[idx, 0]])

        x_in = seen[spec][0, 0]
        ours = cell_jacobian(cell, s, x_in)
        torch.testing.assert_close(cell_step(cell, s, x_in), module_step(s), atol=1e-13, rtol=0)
        ref = torch.autograd.functional.jacobian(module_step, s)
        torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)
        eps = 1e-6
        fd = torch.stack(
            [
                (cell_step(cell, s + eps * e, x_in) - cell_step(cell, s - eps * e, x_in))
                / (2 * eps)
                for e in torch.eye(spec.state_size, dtype=F64)
            ],
            dim=1,
        )
        torch.testing.assert_close(ours, fd, atol=1e-8, rtol=0)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_cell_variants_and_batched_tangents(kind: str) -> None:
    torch.manual_seed(4)
    mod = {"rnn": torch.nn.RNNCell, "gru": torch.nn.GRUCell, "lstm": torch.nn.LSTMCell}[kind](
        3, 4
    ).to(F64)
    (spec,) = discover_cells({f"cell.{k}": v for k, v in mod.state_dict().items()}).cells
    cell = load_cell(spec, {f"cell.{k}": v for k, v in mod.state_dict().items()})
    s = torch.randn(2, spec.state_size, dtype=F64)
    x = torch.randn(2, 3, dtype=F64)
    ref = mod(x, (s[:, :4], s[:, 4:])) if kind == "lstm" else mod(x, s)
    ref = torch.cat(ref, dim=-1) if kind == "lstm" else ref
    torch.testing.assert_close(cell_step(cell, s, x), ref, atol=1e-14, rtol=0)
    fmap = step_map(cell)
    jac = fmap.jacobian(s, x)
    for b in range(2):
        torch.testing.assert_close(jac[b], cell_jacobian(cell, s[b], x[b]), atol=1e-14, rtol=0)
    v = torch.randn(2, spec.state_size, 3, dtype=F64)
    torch.testing.assert_close(fmap.tangent(s, x, v), jac @ v, atol=1e-12, rtol=0)


# ------------------------------------------------------------------ stability algebra


def test_stability_region_axis_extents() -> None:
    assert imaginary_axis_extent(1) == 0.0 and imaginary_axis_extent(2) == 0.0
    assert abs(imaginary_axis_extent(3) - math.sqrt(3)) < 1e-6
    assert abs(imaginary_axis_extent(4) - 2 * math.sqrt(2)) < 1e-6
    assert in_stability_region(1.73j, 3) and not in_stability_region(1.74j, 3)
    assert in_stability_region(2.82j, 4) and not in_stability_region(2.83j, 4)
    assert not in_stability_region(0.1j, 1) and not in_stability_region(0.1j, 2)
    assert real_axis_extent(1) == pytest.approx(-2.0, abs=1e-9)
    assert real_axis_extent(2) == pytest.approx(-2.0, abs=1e-9)
    assert real_axis_extent(3) == pytest.approx(-2.5127453266, abs=1e-8)
    assert real_axis_extent(4) == pytest.approx(-2.7852935634, abs=1e-8)


@pytest.mark.parametrize("stages", [1, 2, 3, 4])
def test_rk_root_inverts_stability_function(stages: int) -> None:
    rng = np.random.default_rng(stages)
    for mu in [*(rng.normal(size=20) + 1j * rng.normal(size=20)), 0.0, -0.5, 1.0, 1e-9]:
        z = rk_rate(mu, stages)
        assert abs(stability_function(z, stages) - mu) < 1e-12 * max(1.0, abs(mu))
    for z0 in [0.1, -0.3 + 0.2j, 0.05j, -0.5 - 0.4j]:  # small z: R_s invertible near 0
        assert abs(rk_rate(stability_function(z0, stages), stages) - z0) < 1e-12


# ------------------------------------------------------------------ ODE reading


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
    _walk(r)


def test_gate_step_sizes_at_rest() -> None:
    gru = MODULES["gru_2l_bi"]()
    _, cells = _cells_of(gru)
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


# ------------------------------------------------------------------ weights only


def test_weight_diagnostics_identities() -> None:
    q = _orthogonal(6)
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


# ------------------------------------------------------------------ Lyapunov


def test_linear_rnn_lyapunov_equals_log_moduli() -> None:
    mus = torch.tensor([0.97, 0.9, -0.8, 0.7, -0.6, 0.5, 0.4, -0.3], dtype=F64)
    v = torch.eye(8, dtype=F64) + 0.3 * torch.randn(
        8, 8, generator=torch.Generator().manual_seed(5), dtype=F64
    )
    w = v @ torch.diag(mus) @ torch.linalg.inv(v)
    settings = OdeSettings(
        nonlinearity="linear", drive_steps=1500, drive_batch=2, warmup=500, jacobian_points=0
    )
    lyap = analyze_state_dict(_linear_sd(w), settings).layers[0].lyapunov
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
    lyap = analyze_state_dict(_linear_sd(w), settings).layers[0].lyapunov
    assert lyap.exponents[:2] == pytest.approx([math.log(0.9), math.log(0.5)], abs=1e-6)
    assert lyap.exponents[2:] == (None,) * 6 and lyap.total is None
    assert lyap.reason is not None and "6 of 8 exponents are −∞" in lyap.reason


def test_qr_exponents_match_a_slow_reference() -> None:
    mod = MODULES["gru_2l_bi"]()
    _, cells = _cells_of(mod)
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


def test_verdicts_for_damped_and_amplified_recurrence() -> None:
    q = _orthogonal(12)
    x = 0.01 * torch.randn(300, 3, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    damped = analyze_state_dict(_linear_sd(0.5 * q), sequences=x).layers[0]
    assert damped.verdict.label == "contracting" and damped.verdict.basis == "lambda_1"
    assert damped.lyapunov.lambda_1 <= math.log(0.5) + 1e-9  # |J| ≤ 0.5·max φ' ≤ 0.5
    rest = analyze_state_dict(_linear_sd(1.5 * q), OdeSettings(drive="none")).layers[0]
    assert rest.verdict.label == "expanding" and rest.verdict.basis == "log_radius_at_rest"
    assert rest.verdict.value == pytest.approx(math.log(1.5))
    lin = OdeSettings(nonlinearity="linear")
    grow = analyze_state_dict(_linear_sd(1.5 * q), lin, sequences=x[:100]).layers[0]
    assert grow.verdict.label == "expanding"
    assert grow.lyapunov.exponents == pytest.approx([math.log(1.5)] * 12, abs=1e-10)
    assert grow.lyapunov.kaplan_yorke == 12.0
    flat = analyze_state_dict(_linear_sd(q), lin, sequences=x[:100]).layers[0]
    assert flat.verdict.label == "marginal" and abs(flat.lyapunov.lambda_1) < 1e-10
    chaotic = analyze_state_dict(_linear_sd(3.0 * _orthogonal(24)), sequences=x).layers[0]
    assert chaotic.verdict.label == "expanding" and chaotic.lyapunov.lambda_1 > 0.1


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


def test_custom_step_agrees_with_builtin_cell() -> None:
    sd = _module("rnn", input_size=3, hidden_size=4).state_dict()
    x = torch.randn(40, 2, 3, generator=torch.Generator().manual_seed(8), dtype=F64)
    settings = OdeSettings(jacobian_points=4)
    built = analyze_state_dict(sd, settings, sequences=x).layers[0]
    cell = load_cell(discover_cells(sd).cells[0], sd)
    custom = analyze_step(
        lambda s, xt: cell_step(cell, s, xt),
        state_size=4,
        input_size=3,
        settings=settings,
        sequences=x,
    )
    np.testing.assert_allclose(custom.rest.eigenvalues, built.rest.eigenvalues, atol=1e-12)
    np.testing.assert_allclose(custom.lyapunov.exponents, built.lyapunov.exponents, atol=1e-10)
    assert custom.along.spectral_radius == pytest.approx(built.along.spectral_radius, abs=1e-12)
    # the band is now λ_1's interval half-width, computed from the exponents: equal to rounding
    assert (custom.verdict.label, custom.verdict.basis) == (built.verdict.label, "lambda_1")
    assert custom.verdict.value == pytest.approx(built.verdict.value, abs=1e-10)
    assert custom.verdict.band == pytest.approx(built.verdict.band, abs=1e-10)


# ------------------------------------------------------------------ whole reports


def test_full_report_is_deterministic_and_clean() -> None:
    sd = {f"m.{k}": v for k, v in MODULES["lstm_2l_bi_proj"]().state_dict().items()}
    settings = OdeSettings(drive_steps=30, drive_batch=2, jacobian_points=3, seed=1)
    a, b = analyze_state_dict(sd, settings), analyze_state_dict(sd, settings)
    assert a == b and len(a.layers) == 4
    _walk(a)
    layer = a.layers[3]
    assert layer.name == "m.l1_reverse" and layer.direction == "reverse"
    assert layer.lyapunov.drive == "gaussian(scale=1)" and layer.along.samples == 3
    assert layer.rest.step.source == "1 - f" and layer.rest.step.memory_time > 0
    assert a.settings.to_dict()["seed"] == 1


def test_non_finite_weights_fail_the_layer_not_the_run() -> None:
    sd = dict(MODULES["rnn_relu"]().state_dict())
    sd["weight_hh_l0"] = sd["weight_hh_l0"].clone()
    sd["weight_hh_l0"][0, 0] = float("nan")
    sd.update({f"other.{k}": v for k, v in MODULES["lstm_nobias"]().state_dict().items()})
    report = analyze_state_dict(sd, OdeSettings(drive="none"))
    status = {layer.name: (layer.status, layer.reason) for layer in report.layers}
    assert status["l0"][0] == "failed" and "non-finite weights" in status["l0"][1]
    assert status["other.l0"] == ("ok", None)
    _walk(report)


def test_probe_layouts_and_mismatches() -> None:
    sd = MODULES["gru_2l_bi"]().state_dict()
    x = torch.randn(25, 2, 3, generator=torch.Generator().manual_seed(9), dtype=F64)
    a = analyze_state_dict(sd, sequences=x)
    b = analyze_state_dict(sd, OdeSettings(batch_first=True), sequences=x.transpose(0, 1))
    assert a.layers == b.layers and a.layers[0].lyapunov.drive == "data"
    assert prepare_sequences(x[:, 0]).shape == (25, 1, 3)
    with pytest.raises(ProbeError):
        analyze_state_dict(sd, sequences=torch.randn(25, 2, 7))
    mixed = dict(sd) | {f"x.{k}": v for k, v in MODULES["lstm_nobias"]().state_dict().items()}
    assert {k for k in mixed if k.startswith("x.")}
    fits = analyze_state_dict(mixed, sequences=x)
    assert all(layer.lyapunov.drive == "data" for layer in fits.layers)
    small = {k: v[:, :2] if k.startswith("x.weight_ih") else v for k, v in mixed.items()}
    partial = {layer.name: layer for layer in analyze_state_dict(small, sequences=x).layers}
    assert partial["x.l0"].lyapunov is None and partial["x.l0"].notes
    assert partial["x.l0"].verdict.basis == "log_radius_at_rest"
    with pytest.raises(UsageError):
        OdeSettings(drive="noise", dt=-1.0)


def test_verdict_band() -> None:
    assert verdict(1e-3, lambda_1=5e-4).label == "marginal"
    assert verdict(1e-3, lambda_1=-2e-3).label == "contracting"
    assert verdict(1e-3, lambda_1=None).label == "contracting"
    v = verdict(1e-3, rest_radius=1.01, use_lyapunov=False)
    assert v.label == "expanding" and v.value == pytest.approx(math.log(1.01))
    assert verdict(1e-3, rest_radius=0.0, use_lyapunov=False).value is None


def test_rest_point_runs_through_the_stack() -> None:
    mod = MODULES["rnn_tanh_2l_bi"]()
    xbar = torch.tensor([0.3, -0.2, 0.5], dtype=F64)
    layers = {
        layer.name: layer
        for layer in analyze_state_dict(
            mod.state_dict(), OdeSettings(drive="none"), rest_input=xbar
        ).layers
    }
    p = dict(mod.state_dict())
    h0 = torch.cat(
        [
            torch.tanh(p[f"weight_ih_l0{d}"] @ xbar + p[f"bias_ih_l0{d}"] + p[f"bias_hh_l0{d}"])
            for d in ("", "_reverse")
        ]
    )
    a1 = p["weight_ih_l1"] @ h0 + p["bias_ih_l1"] + p["bias_hh_l1"]
    jac = (1 - torch.tanh(a1) ** 2)[:, None] * p["weight_hh_l1"]
    mu = sorted(np.linalg.eigvals(jac.numpy()), key=lambda m: (-abs(m), -m.real, -m.imag))
    got = [complex(*e) for e in layers["l1"].rest.eigenvalues]
    np.testing.assert_allclose(got, mu, atol=1e-12)
    other = dict(p) | {f"x.{k}": v for k, v in MODULES["lstm_nobias"]().state_dict().items()}
    small = {k: v[:, :2] if k.startswith("x.weight_ih") else v for k, v in other.items()}
    mixed = analyze_state_dict(small, OdeSettings(drive="none"), rest_input=xbar)
    assert any("rest input does not fit" in n for n in mixed.layers[-1].notes)
    with pytest.raises(ProbeError):
        analyze_state_dict(small, rest_input=torch.zeros(7))
