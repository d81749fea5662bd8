"""Tests for symtool.align.pah: planted power laws, deep-linear consistency, scan, phases."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from symtool.align.crh import layer_spectra
from symtool.align.moments import LayerMatrices
from symtool.align.pah import (
    FITS,
    PHASES,
    SCAN_GRID,
    LayerPowers,
    PowerFit,
    fit_power,
    nearest_phase,
    powers,
    scan_alignments,
)
from symtool.align.score import HaarBank, alignment
from symtool.errors import UsageError
from symtool.linalg import spectrum
from tests.reference import (
    float_leaves,
    gen,
    layer_from_activations,
    matrix_power,
    random_orthogonal,
    with_spectrum,
)

F64 = torch.float64


def _fit(res: LayerPowers, target: str, reference: str) -> PowerFit:
    for f in res.fits:
        if f.target == target and f.reference == reference:
            return f
    raise AssertionError(f"no fit {target} ~ {reference}")


# --- planted power laws -----------------------------------------------------------------


@pytest.mark.parametrize("p", [-1.0, -0.5, 0.5, 1.0, 1.5, 2.0])
def test_planted_power_recovered_from_probe_inputs(p: float) -> None:
    # Probe inputs X give H_a; the layer W = R diag(h^{1/(2p)}) Vᵀ has WᵀW = H_a^{1/p},
    # i.e. H_a = Z_a^p exactly. Outputs h_b = W h_a then give H_b = Z_b^{p+1}.
    d_in, d_out, n = 12, 16, 300
    scales = torch.logspace(0, 1, d_in, dtype=F64)
    X = torch.randn(n, d_in, generator=gen(1), dtype=F64) * scales
    H_a = X.T @ X / n
    h, V = torch.linalg.eigh(H_a)
    R = random_orthogonal(d_out, 2)[:, :d_in]
    W = (R * h ** (1.0 / (2.0 * p))) @ V.T
    assert torch.allclose(matrix_power(spectrum(W.T @ W), p), H_a, rtol=1e-8, atol=1e-10)
    Y = torch.randn(n, d_out, generator=gen(3), dtype=F64)
    res = powers(layer_from_activations(W, X, Y), bootstrap=100)
    fa = _fit(res, "H_a", "Z_a")
    assert fa.kappa == pytest.approx(p, abs=0.02)
    assert fa.kappa == pytest.approx(p, abs=1e-8)
    assert fa.r2 > 0.999
    assert fa.ci_low <= p + 1e-8 and fa.ci_high >= p - 1e-8
    assert fa.n_kept == d_in and fa.n_total == d_in
    assert fa.agreement == pytest.approx(1.0, abs=1e-10)
    assert fa.kappa_star == pytest.approx(p) and fa.alpha_star == pytest.approx(1.0)
    fb = _fit(res, "H_b", "Z_b")
    assert fb.kappa == pytest.approx(p + 1.0, abs=1e-7)
    if p == -1.0:  # H_b = Z_b⁰ is a projector: constant quotients, R² undefined
        assert fb.r2 is None and "R²" in fb.reason
    else:
        assert fb.r2 > 0.999
    assert fb.n_kept == d_in and fb.n_total == d_out  # Z_b's zeros dropped


@pytest.mark.parametrize("q", [-1.0, 0.5, 2.0])
def test_planted_gradient_vs_representation_exponent(q: float) -> None:
    H = with_spectrum(torch.logspace(-1, 2, 10, dtype=F64), 4)
    G = 3.7 * matrix_power(spectrum(H), q)
    fit = fit_power(spectrum(G), spectrum(H), target="G_a", reference="H_a", side="a")
    assert fit.kappa == pytest.approx(q, abs=1e-8)
    assert fit.intercept == pytest.approx(math.log(3.7), abs=1e-8)
    assert fit.formula == "G_a ~ H_a^κ" and fit.side == "a"


def test_fit_matches_numpy_least_squares_on_kept_pairs() -> None:
    d = 15
    Z = with_spectrum(torch.logspace(-12, 0, d, dtype=F64), 5)
    M = torch.randn(d, d, generator=gen(6), dtype=F64)
    M = M @ M.T
    sz = spectrum(Z)
    fit = fit_power(spectrum(M), sz, floor=1e-8)
    z, V = sz.values.numpy(), sz.vectors.numpy()  # the fit's eigenbasis, checked elsewhere
    m = np.diag(V.T @ M.numpy() @ V)
    keep = (z > 1e-8 * z.max()) & (m > 1e-8 * m.max())
    slope, icpt = np.polyfit(np.log(z[keep]), np.log(m[keep]), 1)
    pred = slope * np.log(z[keep]) + icpt
    y = np.log(m[keep])
    r2 = 1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert fit.n_kept == int(keep.sum()) < d
    assert fit.kappa == pytest.approx(slope, abs=1e-6)
    assert fit.intercept == pytest.approx(icpt, abs=1e-5)
    assert fit.r2 == pytest.approx(r2, abs=1e-8)
    # Z's numerical null space (z below the floor) counts as one eigenspace
    null = z <= 1e-8 * z.max()
    block = V[:, null].T @ M.numpy() @ V[:, null]
    expected = ((m[~null] ** 2).sum() + (block**2).sum()) / (M.numpy() ** 2).sum()
    assert fit.agreement == pytest.approx(expected, rel=1e-10)


def test_agreement_does_not_depend_on_the_basis_of_a_null_space() -> None:
    d = 12
    Q = random_orthogonal(d, 9)
    z = torch.cat([torch.zeros(4, dtype=F64), torch.linspace(1, 2, d - 4, dtype=F64)])
    M = torch.randn(d, d, generator=gen(10), dtype=F64)
    M = M @ M.T
    agreements = []
    for seed in (1, 2):
        R = torch.eye(d, dtype=F64)
        R[:4, :4] = random_orthogonal(4, seed)  # another basis of the same null space
        Z = Q @ R @ torch.diag(z) @ R.T @ Q.T
        agreements.append(fit_power(spectrum(M), spectrum(Z)).agreement)
    assert agreements[0] == pytest.approx(agreements[1], rel=1e-12)


def test_bootstrap_interval_brackets_noisy_truth_and_is_seeded() -> None:
    d, kappa = 200, 1.3
    z = torch.logspace(-3, 0, d, dtype=F64)
    noise = 0.05 * torch.randn(d, generator=gen(7), dtype=F64)
    Q = random_orthogonal(d, 8)
    Z = (Q * z) @ Q.T
    M = (Q * (z**kappa * torch.exp(noise))) @ Q.T
    sm, sz = spectrum(M), spectrum(Z)
    fit = fit_power(sm, sz, bootstrap=200, seed=3)
    assert fit.ci_low is not None and fit.ci_high is not None and fit.kappa is not None
    # ordinary least squares: SE(κ) = σ / sqrt(Σ (x − x̄)²)
    x = torch.log(z)
    se = 0.05 / float(((x - x.mean()) ** 2).sum().sqrt())
    assert abs(fit.kappa - kappa) < 4 * se
    assert fit.ci_low < fit.kappa < fit.ci_high
    half = (fit.ci_high - fit.ci_low) / 2
    assert 0.6 * 1.96 * se < half < 1.5 * 1.96 * se
    assert fit_power(sm, sz, bootstrap=200, seed=3) == fit
    other = fit_power(sm, sz, bootstrap=200, seed=4)
    assert other.kappa == fit.kappa and other.ci_low != fit.ci_low
    none = fit_power(sm, sz, bootstrap=0)
    assert none.ci_low is None and none.kappa == fit.kappa


# --- deep linear network: consistency ---------------------------------------------------


def test_deep_linear_network_consistency_shifts_are_one() -> None:
    widths = [10, 14, 12, 8]
    n = 400
    Ws = [
        torch.randn(widths[i + 1], widths[i], generator=gen(10 + i), dtype=F64)
        for i in range(len(widths) - 1)
    ]
    X = torch.randn(n, widths[0], generator=gen(20), dtype=F64) * torch.linspace(0.3, 3, 10)
    acts = [X]
    for W in Ws:
        acts.append(acts[-1] @ W.T)
    grads = [torch.randn(n, widths[-1], generator=gen(21), dtype=F64)]  # g_b of last layer
    for W in reversed(Ws):
        grads.insert(0, grads[0] @ W)  # g_a = Wᵀ g_b, the previous layer's g_b
    for i, W in enumerate(Ws):
        m = layer_from_activations(W, acts[i], grads[i + 1])
        assert torch.allclose(m.H_b, acts[i + 1].T @ acts[i + 1] / n)
        res = powers(m, bootstrap=20)
        assert res.consistency.h_shift == pytest.approx(1.0, abs=1e-6)
        assert res.consistency.g_shift == pytest.approx(1.0, abs=1e-6)
        assert res.consistency.reason is None
        assert res.recipe == "raw"


def test_nearest_phase_end_to_end_and_table() -> None:
    # H_a = Z_a and G_b = Z_b with raw identities give H_b = Z_b², G_a = Z_a²: RWA/GWA.
    d = 9
    sigma = torch.logspace(-0.5, 0.5, d, dtype=F64)
    W = (random_orthogonal(d, 30) * sigma) @ random_orthogonal(d, 31).T
    Z_a, Z_b = W.T @ W, W @ W.T
    zeros = torch.zeros(d, d, dtype=F64)
    m = LayerMatrices(
        W=W,
        H_a=Z_a,
        G_a=W.T @ Z_b @ W,
        H_b=W @ Z_a @ W.T,
        G_b=Z_b,
        C_a=zeros,
        C_b=zeros,
        n=1,
        skipped_rows={},
        recipe="raw",
    )
    res = powers(m, bootstrap=10)
    assert res.phase.name == "RWA/GWA"
    assert res.phase.distance is not None and res.phase.distance < 1e-6
    assert res.phase.exponents == (1.0, 2.0, 2.0, 1.0)
    for name, row in PHASES:
        ph = nearest_phase(tuple(x + 0.1 for x in row))
        assert ph.name == name and ph.distance == pytest.approx(0.2)
    assert nearest_phase((1.0, None, 2.0, 1.0)).name is None


# --- power scan -------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["pearson", "cosine"])
def test_power_scan_matches_dense_powers(metric: str) -> None:
    d = 10
    Q = random_orthogonal(d, 40)
    z = torch.cat([torch.logspace(-2, 1, 7, dtype=F64), torch.zeros(3, dtype=F64)])
    Z = (Q * z) @ Q.T  # rank 7: powers live on the kept support
    M = torch.randn(d, d, generator=gen(41), dtype=F64)
    M = M @ M.T + 0.5
    sz = spectrum(Z)
    fast = scan_alignments(M, sz, metric=metric)
    assert len(fast) == len(SCAN_GRID) == 81 and SCAN_GRID[0] == -1.0 and SCAN_GRID[-1] == 3.0
    for k, got in zip(SCAN_GRID, fast, strict=True):
        ref = alignment(M, matrix_power(sz, k), metric)
        assert got is not None and ref is not None
        assert got == pytest.approx(ref, abs=1e-9)


def test_power_scan_finds_planted_exponent() -> None:
    d = 20
    Q = random_orthogonal(d, 42)
    z = torch.logspace(-1, 1, d, dtype=F64)
    Z = (Q * z) @ Q.T
    M = (Q * z**0.75) @ Q.T
    fit = fit_power(spectrum(M), spectrum(Z))
    assert fit.kappa_star == 0.75 and fit.alpha_star == pytest.approx(1.0, abs=1e-12)


# --- agreement, failures, properties ----------------------------------------------------


def test_unrelated_matrices_have_low_eigenbasis_agreement() -> None:
    d = 64
    lam = 1.0 / torch.arange(1, d + 1, dtype=F64) ** 2
    M = with_spectrum(lam, 50)
    Z = with_spectrum(lam.flip(0), 51)
    fit = fit_power(spectrum(M), spectrum(Z))
    assert fit.agreement is not None and fit.agreement < 0.2
    same = fit_power(spectrum(with_spectrum(lam, 51)), spectrum(Z))
    assert same.agreement == pytest.approx(1.0, abs=1e-10)


def test_agreement_in_random_basis_matches_haar_expectation() -> None:
    # For v uniform on the sphere E[(vᵀMv)²] = ((tr M)² + 2‖M‖_F²)/(d(d+2)), so the mean
    # agreement over random bases is ((tr M)²/‖M‖_F² + 2)/(d + 2).
    d, k = 24, 300
    lam = 1.0 / torch.arange(1, d + 1, dtype=F64)
    sz = spectrum(torch.diag(torch.logspace(-1, 1, d, dtype=F64)))
    Os = HaarBank(seed=2, samples=k).get(d)
    ag = torch.tensor(
        [fit_power(spectrum((O * lam) @ O.T), sz, bootstrap=0).agreement for O in Os],
        dtype=F64,
    )
    expect = float(lam.sum() ** 2 / (lam**2).sum() + 2) / (d + 2)
    assert abs(float(ag.mean()) - expect) < 4 * float(ag.std()) / math.sqrt(k)


def test_degenerate_inputs_give_reasons_not_nan() -> None:
    d = 6
    eye = spectrum(torch.eye(d, dtype=F64))
    M = spectrum(with_spectrum(torch.logspace(0, 1, d, dtype=F64), 60))
    flat = fit_power(M, eye)
    assert flat.kappa is None and "flat" in (flat.reason or "")
    neg = fit_power(M, spectrum(-torch.eye(d, dtype=F64)))
    assert neg.kappa is None and "no positive eigenvalue" in (neg.reason or "")
    const = fit_power(eye, M)  # M = I in any basis: κ = 0, R² undefined
    assert const.kappa == pytest.approx(0.0, abs=1e-10) and const.r2 is None and const.reason
    with pytest.raises(UsageError):
        fit_power(M, eye, floor=1.5)
    with pytest.raises(UsageError):
        fit_power(M, spectrum(torch.eye(3, dtype=F64)))

    W = torch.randn(4, 6, generator=gen(61), dtype=F64)
    m = layer_from_activations(
        W,
        torch.randn(30, 6, generator=gen(62), dtype=F64),
        torch.randn(30, 4, generator=gen(63), dtype=F64),
    )
    G_b = m.G_b.clone()
    G_b[0, 0] = float("nan")
    res = powers(dataclasses.replace(m, G_b=G_b), bootstrap=10)
    for f in res.fits:
        if "G_b" in (f.target, f.reference):
            assert f.kappa is None and f.reason and "non-finite" in f.reason
        else:
            assert f.kappa is not None
    assert res.consistency.g_shift is None and res.consistency.h_shift is not None
    assert res.phase.name is None and res.phase.reason
    assert all(math.isfinite(x) for x in float_leaves(res))


def test_powers_reuses_given_spectra() -> None:
    W = torch.randn(5, 7, generator=gen(70), dtype=F64)
    m = layer_from_activations(
        W,
        torch.randn(50, 7, generator=gen(71), dtype=F64),
        torch.randn(50, 5, generator=gen(72), dtype=F64),
    )
    sp = layer_spectra(m)
    assert powers(m, spectra=sp, bootstrap=30) == powers(m, bootstrap=30)
    assert [(f.target, f.reference, f.side) for f in powers(m, spectra=sp).fits] == list(FITS)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(1e-8, 1e8), st.floats(-1.0, 2.5))
def test_kappa_invariant_to_scaling_m(seed: int, scale: float, p: float) -> None:
    d = 8
    Q = random_orthogonal(d, seed % 1000)
    z = torch.logspace(-1, 1, d, dtype=F64)
    noise = 0.1 * torch.randn(d, d, generator=gen(seed), dtype=F64)
    M = (Q * z**p) @ Q.T + noise @ noise.T
    sz = spectrum((Q * z) @ Q.T)
    a = fit_power(spectrum(M), sz, bootstrap=20)
    b = fit_power(spectrum(scale * M), sz, bootstrap=20)
    assert a.kappa is not None and b.kappa is not None
    assert b.kappa == pytest.approx(a.kappa, abs=1e-8)
    assert b.r2 == pytest.approx(a.r2, abs=1e-8)
    assert b.n_kept == a.n_kept and b.kappa_star == a.kappa_star
    assert b.intercept == pytest.approx(a.intercept + math.log(scale), abs=1e-7)
