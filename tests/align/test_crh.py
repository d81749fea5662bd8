"""Tests for symtool.align.crh: the six relations, their nulls, cross terms and --verify."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from symtool.align.crh import (
    RELATIONS,
    LayerAlignment,
    Thresholds,
    layer_spectra,
    relations,
    verify,
    z_error,
)
from symtool.align.moments import LayerMatrices
from symtool.align.null import haar_null
from symtool.align.score import HaarBank, rotation_null
from symtool.errors import UsageError
from symtool.linalg import spectrum
from tests.reference import (
    float_leaves,
    gen,
    layer_from_activations,
    matrix_power,
    np_alignment,
    random_orthogonal,
    with_spectrum,
)

F64 = torch.float64


def _layer(
    W: torch.Tensor,
    H_a: torch.Tensor,
    G_a: torch.Tensor,
    H_b: torch.Tensor,
    G_b: torch.Tensor,
    C_a: torch.Tensor | None = None,
    C_b: torch.Tensor | None = None,
    raw: dict[str, torch.Tensor] | None = None,
) -> LayerMatrices:
    d_out, d_in = W.shape
    return LayerMatrices(
        W=W,
        H_a=H_a,
        G_a=G_a,
        H_b=H_b,
        G_b=G_b,
        C_a=torch.zeros(d_in, d_in, dtype=F64) if C_a is None else C_a,
        C_b=torch.zeros(d_out, d_out, dtype=F64) if C_b is None else C_b,
        n=100,
        skipped_rows={"h_a": 0, "h_b": 0, "g_a": 0, "g_b": 0},
        recipe="raw" if raw is not None else "paper",
        raw=raw,
    )


def _anisotropic(d: int, seed: int) -> torch.Tensor:
    return with_spectrum(torch.logspace(0, 2, d, dtype=F64), seed)


def test_relation_table_ids_formulas_sides() -> None:
    d_in, d_out = 6, 5
    W = torch.randn(d_out, d_in, generator=gen(0), dtype=F64)
    X = torch.randn(50, d_in, generator=gen(1), dtype=F64)
    Y = torch.randn(50, d_out, generator=gen(2), dtype=F64)
    res = relations(layer_from_activations(W, X, Y))
    assert isinstance(res, LayerAlignment)
    got = [(r.id, r.formula, r.side) for r in res.relations]
    assert got == [
        ("f-RGA", "H_a ~ G_a", "a"),
        ("f-GWA", "G_a ~ Z_a", "a"),
        ("f-RWA", "H_a ~ Z_a", "a"),
        ("b-RGA", "H_b ~ G_b", "b"),
        ("b-GWA", "G_b ~ Z_b", "b"),
        ("b-RWA", "H_b ~ Z_b", "b"),
    ]
    assert [(r.id, r.formula) for r in res.cross] == [
        ("f-CROSS", "-sym C_a ~ Z_a"),
        ("b-CROSS", "-sym C_b ~ Z_b"),
    ]
    assert res.thresholds == Thresholds(0.8, 3.0)
    assert res.metric == "pearson" and res.null_samples == 0 and res.recipe == "raw"
    assert len(RELATIONS) == 6


@pytest.mark.parametrize("metric", ["pearson", "cosine"])
def test_alpha_matches_brute_force_numpy(metric: str) -> None:
    W = torch.randn(4, 7, generator=gen(3), dtype=F64)
    X = torch.randn(40, 7, generator=gen(4), dtype=F64) * torch.linspace(0.2, 3, 7, dtype=F64)
    Y = torch.randn(40, 4, generator=gen(5), dtype=F64)
    m = layer_from_activations(W, X, Y)
    res = relations(m, metric=metric)
    Wn = W.numpy()
    dense = {
        "H_a": m.H_a.numpy(),
        "G_a": m.G_a.numpy(),
        "Z_a": Wn.T @ Wn,
        "H_b": m.H_b.numpy(),
        "G_b": m.G_b.numpy(),
        "Z_b": Wn @ Wn.T,
    }

    def ref(A: np.ndarray, B: np.ndarray) -> float:
        return np_alignment(A, B, metric)

    for rel, (_, first, second, _) in zip(res.relations, RELATIONS, strict=True):
        assert rel.alpha == pytest.approx(ref(dense[first], dense[second]), abs=1e-12)
    C_b = m.C_b.numpy()
    assert res.cross[1].alpha == pytest.approx(ref(-(C_b + C_b.T) / 2, dense["Z_b"]), abs=1e-12)


def test_planted_crh_holds_and_unrelated_does_not() -> None:
    d = 24
    W = torch.randn(d, d, generator=gen(6), dtype=F64)
    Z_a = W.T @ W
    noise_h = _anisotropic(d, 7)
    noise_g = _anisotropic(d, 8)
    m = _layer(W, H_a=2.0 * Z_a, G_a=0.1 * Z_a, H_b=noise_h, G_b=noise_g)
    res = relations(m, bank=HaarBank(seed=0))
    by_id = {r.id: r for r in res.relations}
    for rid in ("f-RGA", "f-GWA", "f-RWA"):
        r = by_id[rid]
        assert r.alpha == pytest.approx(1.0, abs=1e-12)
        assert r.z is not None and r.z > 3.0 and r.holds is True and r.reason is None
    for rid in ("b-RGA", "b-GWA", "b-RWA"):
        assert by_id[rid].holds is False
    assert float_leaves(res) and all(math.isfinite(x) for x in float_leaves(res))


def test_null_exposes_spurious_alignment_of_near_isotropic_matrices() -> None:
    # Two unrelated near-identity matrices score high α, but a rotation of one scores just
    # as high: the null z stays small and the relation does not hold.
    d = 16
    eye = torch.eye(d, dtype=F64)
    W = random_orthogonal(d, 9)  # Z = I
    A = eye + 0.05 * _anisotropic(d, 10) / 100
    B = eye + 0.05 * _anisotropic(d, 11) / 100
    m = _layer(W, H_a=A, G_a=B, H_b=A, G_b=B)
    rel = relations(m, bank=HaarBank(seed=1)).relations[0]  # f-RGA: H_a ~ G_a
    assert rel.alpha is not None and rel.alpha > 0.9
    assert rel.z is not None and abs(rel.z) < 3.0
    assert rel.holds is False


def test_sampled_nulls_come_from_the_shared_bank() -> None:
    W = torch.randn(5, 8, generator=gen(12), dtype=F64)
    X = torch.randn(60, 8, generator=gen(13), dtype=F64)
    Y = torch.randn(60, 5, generator=gen(14), dtype=F64)
    m = layer_from_activations(W, X, Y)
    bank = HaarBank(seed=4)
    res = relations(m, bank=bank, null_samples=10)
    sp = layer_spectra(m)
    for rel, (_, first, second, _) in zip(res.relations, RELATIONS, strict=True):
        A, B = sp.matrix(first), sp.matrix(second)
        assert A is not None and B is not None
        null = rotation_null(spectrum(A), spectrum(B), rel.alpha, bank=bank, samples=10)
        # the layer's nulls share one batched product over the bank: equal to round-off
        s = rel.sampled_null
        assert s is not None and s.rotations == 10
        assert s.mean == pytest.approx(null.mean, rel=1e-13, abs=1e-15)
        assert s.std == pytest.approx(null.std, rel=1e-12)
        assert s.z == pytest.approx(null.z, rel=1e-12, abs=1e-12)
        # the reported null is the exact one, whatever was sampled
        exact = haar_null(A, B)
        assert rel.null_mean == pytest.approx(exact.mean, rel=1e-12)  # Z's traces from W
        assert rel.null_std == pytest.approx(exact.std, rel=1e-12)
        assert rel.null_method == exact.method == "quadrature"
    again = relations(m, bank=HaarBank(seed=4), null_samples=10, spectra=sp)
    assert again == res  # deterministic for a seed, with or without precomputed spectra
    other = relations(m, bank=HaarBank(seed=5), null_samples=10)
    first, first_other = res.relations[0], other.relations[0]
    assert first_other.sampled_null is not None and first.sampled_null is not None
    assert first_other.sampled_null.mean != first.sampled_null.mean
    assert (first_other.alpha, first_other.z, first_other.holds) == (
        first.alpha, first.z, first.holds)
    plain = relations(m)
    assert all(r.sampled_null is None for r in plain.relations)
    assert [(r.z, r.holds) for r in plain.relations] == [(r.z, r.holds) for r in res.relations]


def test_z_and_holds_do_not_depend_on_any_seed() -> None:
    # issue 16: the verdict of a relation near its threshold was a coin toss over --seed
    W = torch.randn(6, 48, generator=gen(40), dtype=F64)
    X = torch.randn(200, 48, generator=gen(41), dtype=F64)
    Y = torch.randn(200, 6, generator=gen(42), dtype=F64)
    m = layer_from_activations(W, X, Y)
    runs = [relations(m, bank=HaarBank(seed=s), null_samples=4) for s in range(5)]
    for r in runs[1:]:
        for a, b in zip(r.relations + r.cross, runs[0].relations + runs[0].cross, strict=True):
            assert (a.null_mean, a.null_std, a.z, a.holds, a.borderline) == (
                b.null_mean, b.null_std, b.z, b.holds, b.borderline)
    assert {r.null_method for r in runs[0].relations} == {"quadrature"}  # d = 6 and 48 ≤ 64


def test_borderline_when_z_is_within_its_error_of_the_threshold() -> None:
    W = torch.randn(4, 80, generator=gen(43), dtype=F64)  # d_in = 80 > 64: the series null
    X = torch.randn(300, 80, generator=gen(44), dtype=F64)
    Y = torch.randn(300, 4, generator=gen(45), dtype=F64)
    m = layer_from_activations(W, X, Y)
    rel = relations(m).relations[0]  # f-RGA, d = 80
    assert rel.null_method == "series" and rel.z is not None and rel.null_error is not None
    assert 0.0 < rel.null_error < 1e-2
    err = z_error(rel.z, rel.null_error)
    assert err == pytest.approx((abs(rel.z) + 1) * rel.null_error / (1 - rel.null_error))
    at = relations(m, thresholds=Thresholds(alpha=-1.0, z=rel.z + 0.5 * err)).relations[0]
    assert at.borderline is True and at.holds is False
    far = relations(m, thresholds=Thresholds(alpha=-1.0, z=rel.z - 3 * err)).relations[0]
    assert far.borderline is False and far.holds is True


def test_thresholds_decide_holds() -> None:
    d = 12
    W = torch.randn(d, d, generator=gen(15), dtype=F64)
    Z = W.T @ W
    H = Z + 0.3 * _anisotropic(d, 16) / 100 * float(Z.norm())
    m = _layer(W, H_a=H, G_a=Z, H_b=W @ W.T, G_b=W @ W.T)
    loose = relations(m, thresholds=Thresholds(alpha=-1.0, z=-1e9))
    strict = relations(m, thresholds=Thresholds(alpha=1.0, z=1e9))
    r_loose, r_strict = loose.relations[2], strict.relations[2]  # f-RWA
    assert r_loose.alpha == r_strict.alpha and r_loose.alpha is not None
    assert r_loose.holds is True and r_strict.holds is False
    assert strict.thresholds.alpha == 1.0
    with pytest.raises(UsageError):
        Thresholds(alpha=1.5)
    with pytest.raises(UsageError):
        Thresholds(z=float("nan"))
    with pytest.raises(UsageError):
        relations(m, metric="kendall")
    # z and holds come from the exact null: no samples are needed for them
    assert all(r.z is not None and r.holds is not None for r in loose.relations)
    assert all(r.null_error == 0.0 or r.null_method != "exact" for r in loose.relations)


def test_cross_term_planted_weight_decay_stationarity() -> None:
    # At a stationary point with L2 coefficient γ: −sym E[g_b h_bᵀ] = γ Z_b.
    d_in, d_out, gamma = 7, 9, 0.01
    W = torch.randn(d_out, d_in, generator=gen(17), dtype=F64)
    S_a = torch.randn(d_in, d_in, generator=gen(18), dtype=F64)
    S_b = torch.randn(d_out, d_out, generator=gen(19), dtype=F64)
    C_a = -gamma * (W.T @ W) + (S_a - S_a.T)  # skew parts are removed by sym
    C_b = -gamma * (W @ W.T) + (S_b - S_b.T)
    eye_a, eye_b = torch.eye(d_in, dtype=F64), torch.eye(d_out, dtype=F64)
    m = _layer(W, eye_a, eye_a, eye_b, eye_b, C_a=C_a, C_b=C_b)
    res = relations(m)
    for rel in res.cross:
        assert rel.alpha == pytest.approx(1.0, abs=1e-12)
    flipped = relations(dataclasses.replace(m, C_b=-C_b))
    assert flipped.cross[1].alpha == pytest.approx(-1.0, abs=1e-12)


def test_nonfinite_matrices_fail_with_reason_and_no_nan() -> None:
    W = torch.randn(4, 6, generator=gen(20), dtype=F64)
    X = torch.randn(30, 6, generator=gen(21), dtype=F64)
    Y = torch.randn(30, 4, generator=gen(22), dtype=F64)
    m = layer_from_activations(W, X, Y)
    H_a = m.H_a.clone()
    H_a[0, 0] = float("nan")
    res = relations(dataclasses.replace(m, H_a=H_a))
    by_id = {r.id: r for r in res.relations}
    for rid in ("f-RGA", "f-RWA"):
        r = by_id[rid]
        assert r.alpha is None and r.holds is None and r.z is None
        assert r.reason is not None and "H_a" in r.reason and "non-finite" in r.reason
    assert by_id["f-GWA"].alpha is not None and by_id["b-RWA"].alpha is not None
    W_bad = W.clone()
    W_bad[1, 2] = float("inf")
    res_w = relations(dataclasses.replace(m, W=W_bad))
    for r in res_w.relations + res_w.cross:
        if "Z_" in r.formula:
            assert r.alpha is None and "W has non-finite" in (r.reason or "")
    for rec in (res, res_w):
        assert all(math.isfinite(x) for x in float_leaves(rec))


def test_verify_exact_for_raw_chain_and_reports_errors() -> None:
    W = torch.randn(5, 8, generator=gen(23), dtype=F64)
    X = torch.randn(70, 8, generator=gen(24), dtype=F64)
    Y = torch.randn(70, 5, generator=gen(25), dtype=F64)
    m = layer_from_activations(W, X, Y)
    v = verify(m)
    assert v.reason is None
    assert v.h_b_error is not None and v.h_b_error < 1e-13
    assert v.g_a_error is not None and v.g_a_error < 1e-13
    assert m.raw is not None
    raw = dict(m.raw)
    raw["H_b"] = 1.1 * raw["H_b"]  # ‖1.1 H − H‖/‖1.1 H‖ = 0.1/1.1
    v2 = verify(dataclasses.replace(m, raw=raw))
    assert v2.h_b_error == pytest.approx(0.1 / 1.1, rel=1e-10)
    assert v2.g_a_error is not None and v2.g_a_error < 1e-13
    v3 = verify(dataclasses.replace(m, raw=None))
    assert v3.h_b_error is None and v3.g_a_error is None and v3.reason
    bad = dict(m.raw)
    bad["G_b"] = bad["G_b"] * float("nan")
    v4 = verify(dataclasses.replace(m, raw=bad))
    assert v4.h_b_error is not None and v4.g_a_error is None and "non-finite" in (v4.reason or "")


def test_layer_spectra_one_per_matrix_and_shared_with_power() -> None:
    W = torch.randn(3, 5, generator=gen(26), dtype=F64)
    X = torch.randn(20, 5, generator=gen(27), dtype=F64)
    Y = torch.randn(20, 3, generator=gen(28), dtype=F64)
    m = layer_from_activations(W, X, Y)
    sp = layer_spectra(m)
    assert sp.reasons == ()
    Z_a = sp.get("Z_a")
    assert Z_a is not None and torch.allclose(Z_a.matrix, W.T @ W)
    X_b = sp.matrix("X_b")  # used as a matrix only: not decomposed
    assert sp.get("X_b") is None and sp.get("G_a") is None and sp.get("G_b") is None
    assert X_b is not None and torch.allclose(X_b, -(m.C_b + m.C_b.T) / 2)
    G_a = sp.matrix("G_a")
    assert G_a is not None and torch.equal(G_a, (m.G_a + m.G_a.T) / 2)
    assert layer_spectra(m, cross=False).matrix("X_a") is None
    # the spectrum's powers are the dense ones
    assert torch.allclose(matrix_power(Z_a, 1.0), W.T @ W, atol=1e-12)
    assert sp.H_a is not None and torch.equal(sp.H_a.matrix, spectrum(m.H_a).matrix)
    with pytest.raises(KeyError):
        sp.get("Q")
