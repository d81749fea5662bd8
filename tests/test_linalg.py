"""Tests for symtool.linalg: spectra, α, Haar bank, rotation null, matrix powers."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from symtool.align.score import (
    HaarBank,
    alignment,
    haar_orthogonal,
    rotated_alignments,
    rotation_null,
)
from symtool.errors import AnalysisError, UsageError
from symtool.linalg import all_finite, eigvalsh, gram, gram_pair, matrix_power, spectrum, sym


def _psd(d: int, seed: int, rank: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(d, rank or d, generator=g, dtype=torch.float64)
    return X @ X.T


def _np_pearson(A: np.ndarray, B: np.ndarray) -> float:
    return float(np.corrcoef(A.ravel(), B.ravel())[0, 1])


def _np_cosine(A: np.ndarray, B: np.ndarray) -> float:
    return float((A * B).sum() / (np.linalg.norm(A) * np.linalg.norm(B)))


# --- spectrum / sym ---------------------------------------------------------------------


def test_sym_is_symmetric_part() -> None:
    M = torch.arange(9, dtype=torch.float64).reshape(3, 3)
    S = sym(M)
    assert torch.equal(S, S.T)
    assert torch.allclose(S + (M - M.T) / 2, M)


def test_spectrum_reconstructs_and_is_ascending() -> None:
    A = _psd(20, 1) - 5.0 * torch.eye(20, dtype=torch.float64)
    s = spectrum(A.to(torch.float32))  # any dtype in, float64 out
    assert s.values.dtype == torch.float64 and s.vectors.dtype == torch.float64
    assert bool((s.values[1:] >= s.values[:-1]).all())
    rec = (s.vectors * s.values) @ s.vectors.T
    assert torch.allclose(rec, s.matrix, atol=1e-10)
    assert torch.allclose(s.vectors.T @ s.vectors, torch.eye(20, dtype=torch.float64), atol=1e-12)
    assert bool((s.vectors.sum(dim=0) >= 0).all())  # sign convention
    assert torch.allclose(s.ones, s.vectors.T @ torch.ones(20, dtype=torch.float64))
    assert s.frob_sq == pytest.approx(float((s.matrix**2).sum()), rel=1e-12)
    assert s.entry_sum == pytest.approx(float(s.matrix.sum()), rel=1e-10)


def test_spectrum_symmetrises_input() -> None:
    g = torch.Generator().manual_seed(3)
    M = torch.randn(6, 6, generator=g, dtype=torch.float64)
    s = spectrum(M)
    assert torch.allclose(s.matrix, (M + M.T) / 2)
    ref = np.linalg.eigvalsh(((M + M.T) / 2).numpy())
    assert np.allclose(s.values.numpy(), ref, atol=1e-12)


def test_spectrum_rejects_nonfinite_and_nonsquare() -> None:
    M = torch.eye(3, dtype=torch.float64)
    M[0, 1] = float("nan")
    with pytest.raises(AnalysisError, match="non-finite"):
        spectrum(M)
    with pytest.raises(AnalysisError, match="square"):
        spectrum(torch.zeros(2, 3))


def test_rayleigh_matches_dense() -> None:
    Z, M = _psd(9, 4), _psd(9, 5)
    s = spectrum(Z)
    ref = np.diag(s.vectors.numpy().T @ M.numpy() @ s.vectors.numpy())
    assert np.allclose(s.rayleigh(M).numpy(), ref, rtol=1e-12)


# --- alignment --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alignment_matches_numpy(seed: int) -> None:
    A, B = _psd(7, seed), _psd(7, seed + 10)
    assert alignment(A, B) == pytest.approx(_np_pearson(A.numpy(), B.numpy()), abs=1e-13)
    assert alignment(A, B, "cosine") == pytest.approx(_np_cosine(A.numpy(), B.numpy()), abs=1e-13)


def test_alignment_exact_affine_and_antialigned() -> None:
    A = _psd(5, 7)
    assert alignment(A, 3.0 * A + 2.0) == pytest.approx(1.0, abs=1e-14)
    assert alignment(A, -0.5 * A + 1.0) == pytest.approx(-1.0, abs=1e-14)
    assert alignment(A, 4.0 * A, "cosine") == pytest.approx(1.0, abs=1e-14)
    # cosine is not shift invariant: it sees the offset
    assert alignment(A, A + 100.0, "cosine") < 0.99


def test_alignment_undefined_is_none() -> None:
    A = _psd(4, 8)
    const = torch.full((4, 4), 2.5, dtype=torch.float64)
    assert alignment(A, const) is None
    assert alignment(const, A) is None
    assert alignment(A, torch.zeros(4, 4), "cosine") is None
    assert alignment(A, const, "cosine") is not None  # a constant matrix has a direction
    bad = A.clone()
    bad[1, 1] = float("inf")
    assert alignment(A, bad) is None
    with pytest.raises(UsageError):
        alignment(A, A, "spearman")
    with pytest.raises(AnalysisError):
        alignment(A, torch.zeros(3, 3))


_mats = st.tuples(
    st.integers(2, 8),
    st.integers(0, 2**31 - 1),
    st.floats(1e-6, 1e6),
    st.floats(1e-6, 1e6),
    st.sampled_from(["pearson", "cosine"]),
)


@settings(max_examples=60, deadline=None)
@given(_mats)
def test_alignment_properties(args: tuple[int, int, float, float, str]) -> None:
    d, seed, ca, cb, metric = args
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    B = torch.randn(d, d, generator=g, dtype=torch.float64) + 0.3 * A
    a = alignment(A, B, metric)
    assert a is not None and -1.0 <= a <= 1.0
    assert alignment(B, A, metric) == pytest.approx(a, abs=1e-12)
    assert alignment(ca * A, B, metric) == pytest.approx(a, abs=1e-10)
    assert alignment(A, cb * B, metric) == pytest.approx(a, abs=1e-10)
    assert alignment(ca * A, cb * B, metric) == pytest.approx(a, abs=1e-10)
    assert alignment(A, A, metric) == pytest.approx(1.0, abs=1e-12)
    assert alignment(A, -A, metric) == pytest.approx(-1.0, abs=1e-12)


# --- matrix powers ----------------------------------------------------------------------


@pytest.mark.parametrize("p", [-1.0, -0.5, 0.5, 1.0, 1.5, 2.0, 3.0])
def test_matrix_power_matches_numpy(p: float) -> None:
    A = _psd(8, 11) + 0.5 * torch.eye(8, dtype=torch.float64)
    w, V = np.linalg.eigh(A.numpy())
    ref = (V * w**p) @ V.T
    got = matrix_power(spectrum(A), p).numpy()
    assert np.allclose(got, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())


def test_matrix_power_on_kept_support_is_pseudo_inverse() -> None:
    A = _psd(8, 12, rank=5)  # three zero eigenvalues
    s = spectrum(A)
    assert np.allclose(matrix_power(s, -1.0).numpy(), np.linalg.pinv(A.numpy(), rcond=1e-8))
    assert torch.allclose(matrix_power(s, 1.0), A, atol=1e-10)
    P = matrix_power(s, 0.0)  # projector onto the support
    assert torch.allclose(P @ P, P, atol=1e-12)
    assert float(torch.trace(P)) == pytest.approx(5.0, abs=1e-10)
    assert torch.equal(matrix_power(spectrum(-A), 0.5), torch.zeros(8, 8, dtype=torch.float64))


# --- Haar bank --------------------------------------------------------------------------


def test_haar_samples_are_orthogonal() -> None:
    O = HaarBank(seed=5, samples=8).get(13)
    assert O.shape == (8, 13, 13) and O.dtype == torch.float64
    eye = torch.eye(13, dtype=torch.float64)
    assert torch.allclose(O.transpose(1, 2) @ O, eye.expand(8, 13, 13), atol=1e-13)


def test_haar_bank_deterministic_order_independent_and_cached() -> None:
    b1, b2 = HaarBank(seed=3), HaarBank(seed=3)
    x5, x7 = b1.get(5), b1.get(7)
    y7, y5 = b2.get(7), b2.get(5)
    assert torch.equal(x5, y5) and torch.equal(x7, y7)
    assert b1.get(5).data_ptr() == x5.data_ptr()  # cached, not redrawn
    more = b1.get(5, 40)  # extending keeps the first samples
    assert more.shape[0] == 40 and torch.equal(more[:16], x5)
    assert torch.equal(b1.get(5, 4), x5[:4])
    assert not torch.equal(HaarBank(seed=4).get(5), x5)


def test_haar_sign_fix_makes_columns_symmetric() -> None:
    # Plain QR of a Gaussian has Q_11 of one sign; Haar has E[O_ij] = 0 and E[O_ij²] = 1/d.
    d, k = 4, 4000
    O = haar_orthogonal(d, k, torch.Generator().manual_seed(0))
    mc = 4.0 / math.sqrt(k)
    assert abs(float(O[:, 0, 0].mean())) < mc
    assert abs(float(torch.diagonal(O, dim1=1, dim2=2).mean())) < mc
    assert float((O**2).mean()) == pytest.approx(1.0 / d, abs=1e-12)  # rows are unit
    assert abs(float((O[:, 0, 0] ** 2).mean()) - 1.0 / d) < 4.0 * math.sqrt(0.1 / k)


# --- rotation null ----------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["pearson", "cosine"])
def test_null_fast_path_equals_brute_force(metric: str) -> None:
    d = 11
    A, B = _psd(d, 20) + 1.0, _psd(d, 21, rank=6)
    sa, sb = spectrum(A), spectrum(B)
    O = HaarBank(seed=1, samples=16).get(d)
    fast = rotated_alignments(sa, sb, O, metric)
    for k in range(16):
        Q = sa.vectors @ O[k] @ sb.vectors.T  # the Q whose O is O[k]
        brute = alignment(A, Q @ B @ Q.T, metric)
        assert brute is not None
        assert float(fast[k]) == pytest.approx(brute, abs=1e-10)
    # and from the other end: any Q, with O = V_Aᵀ Q V_B
    Qs = HaarBank(seed=9, samples=5).get(d)
    Os = sa.vectors.T @ Qs @ sb.vectors
    fast = rotated_alignments(sa, sb, Os, metric)
    for k in range(5):
        brute = alignment(A, Qs[k] @ B @ Qs[k].T, metric)
        assert float(fast[k]) == pytest.approx(brute, abs=1e-10)


def test_null_stats_match_brute_force() -> None:
    d = 9
    A, B = _psd(d, 30), _psd(d, 31)
    sa, sb = spectrum(A), spectrum(B)
    bank = HaarBank(seed=2, samples=16)
    alpha = alignment(A, B)
    assert alpha is not None
    null = rotation_null(sa, sb, alpha, bank=bank)
    brute = []
    for O in bank.get(d):
        Q = sa.vectors @ O @ sb.vectors.T
        brute.append(alignment(A, Q @ B @ Q.T))
    arr = np.array(brute)
    assert null.samples == 16 and null.reason is None
    assert null.mean == pytest.approx(arr.mean(), abs=1e-12)
    assert null.std == pytest.approx(arr.std(ddof=1), abs=1e-12)
    assert null.z == pytest.approx((alpha - arr.mean()) / arr.std(ddof=1), rel=1e-9)


def test_cosine_null_mean_matches_haar_expectation() -> None:
    # E_Q[Q B Qᵀ] = tr(B)/d · I, so E[cos] = tr(A) tr(B) / (d ‖A‖_F ‖B‖_F).
    d, k = 6, 3000
    A = _psd(d, 40, rank=2) + 0.1 * torch.eye(d, dtype=torch.float64)
    B = _psd(d, 41, rank=3)
    sa, sb = spectrum(A), spectrum(B)
    null = rotation_null(sa, sb, 0.0, bank=HaarBank(seed=7), samples=k, metric="cosine")
    expect = float(torch.trace(A) * torch.trace(B)) / (
        d * float(torch.linalg.matrix_norm(A)) * float(torch.linalg.matrix_norm(B))
    )
    assert null.mean is not None and null.std is not None
    assert abs(null.mean - expect) < 4.0 * null.std / math.sqrt(k)


def test_null_degenerate_cases() -> None:
    d = 5
    bank = HaarBank(seed=0)
    eye = spectrum(torch.eye(d, dtype=torch.float64))
    sb = spectrum(_psd(d, 50))
    # α(I, Q B Qᵀ) with cosine is tr(B)/(√d ‖B‖_F) for every Q: zero spread, z undefined.
    null = rotation_null(eye, sb, 0.9, bank=bank, metric="cosine")
    assert null.z is None and null.std is not None and null.std <= 1e-12
    assert "zero spread" in (null.reason or "")
    assert rotation_null(eye, sb, 0.9, bank=bank, samples=0).mean is None
    one = rotation_null(sb, sb, 0.9, bank=bank, samples=1)
    assert one.mean is not None and one.std is None and one.z is None
    undef = rotation_null(sb, sb, None, bank=bank)
    assert undef.mean is not None and undef.z is None
    zero = spectrum(torch.zeros(d, d, dtype=torch.float64))
    none = rotation_null(sb, zero, 0.5, bank=bank, metric="cosine")
    assert none.mean is None and none.samples == 0 and none.reason


# --- partial spectra and the Gram pair --------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: _psd(30, 60) + 2.0,  # a large entry mean: c is far from uniform
        lambda: _psd(17, 61, rank=5),  # a 12-dimensional null space
        lambda: torch.eye(6, dtype=torch.float64),  # one eigenspace
        lambda: _psd(2, 62),
        lambda: torch.tensor([[3.0]], dtype=torch.float64),
        lambda: -_psd(9, 63) + 1.0,  # indefinite
    ],
)
def test_values_and_ones_without_vectors_match_full_eigh(make: Callable[[], torch.Tensor]) -> None:
    M = make()
    full = spectrum(M)
    part = spectrum(M, vectors=False, ones=True)
    bare = spectrum(M, vectors=False)
    scale = float(M.abs().max())
    assert part.vectors is None and bare.vectors is None and bare.ones is None
    assert torch.allclose(part.values, full.values, atol=1e-12 * scale, rtol=0)
    assert torch.allclose(bare.values, full.values, atol=1e-12 * scale, rtol=0)
    assert part.ones is not None and full.ones is not None
    assert torch.allclose(part.ones, full.ones, atol=1e-10)
    # Parseval: c holds all of 1 (‖c‖² = d), and the entry sum is Σ λ c²
    d = M.shape[0]
    assert float((part.ones**2).sum()) == pytest.approx(d, rel=1e-12)
    assert float((part.values * part.ones**2).sum()) == pytest.approx(
        float(M.sum()), abs=1e-9 * scale * d
    )


@pytest.mark.parametrize(
    ("shape", "rank"), [((7, 7), None), ((4, 9), None), ((9, 4), None), ((8, 8), 3), ((6, 10), 2)]
)
def test_gram_pair_matches_dense_decompositions(shape: tuple[int, int], rank: int | None) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    d_out, d_in = shape
    W = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    if rank is not None:
        W = torch.randn(d_out, rank, generator=g, dtype=torch.float64) @ torch.randn(
            rank, d_in, generator=g, dtype=torch.float64
        )
    Za, Zb = gram_pair(W)
    for s, Z in ((Za, W.T @ W), (Zb, W @ W.T)):
        d = Z.shape[0]
        assert s.vectors is not None and s.ones is not None
        assert torch.allclose(s.matrix, Z, atol=1e-12)
        ref = torch.linalg.eigvalsh(Z)
        assert torch.allclose(s.values, ref, atol=1e-11 * float(ref.abs().max()))
        assert bool((s.values[1:] >= s.values[:-1]).all())
        eye = torch.eye(d, dtype=torch.float64)
        assert torch.allclose(s.vectors.T @ s.vectors, eye, atol=1e-11)
        rec = (s.vectors * s.values) @ s.vectors.T
        assert torch.allclose(rec, Z, atol=1e-11 * float(Z.abs().max()))
        full = spectrum(Z)  # c agrees with a direct eigh, null space included
        assert torch.allclose(s.ones, full.ones, atol=1e-9)


def test_gram_pair_of_zero_weight_is_all_null() -> None:
    Za, Zb = gram_pair(torch.zeros(3, 5, dtype=torch.float64))
    assert torch.equal(Za.values, torch.zeros(5, dtype=torch.float64))
    assert Zb.vectors is not None and torch.allclose(
        Zb.vectors.T @ Zb.vectors, torch.eye(3, dtype=torch.float64)
    )
    assert Za.ones is not None and float(Za.ones[0]) == pytest.approx(math.sqrt(5))


# --- which matrix the null rotates -----------------------------------------------------


def test_null_rotates_the_second_matrix_not_the_first() -> None:
    # docs/theory.md §3: α(A, Q B Qᵀ), A fixed. For Pearson this is not the law of α(Q A Qᵀ, B)
    # when A has a large entry mean; the fast path must give the former, sample by sample.
    d = 12
    g = torch.Generator().manual_seed(70)
    E = torch.randn(d, d, generator=g, dtype=torch.float64)
    A = torch.ones(d, d, dtype=torch.float64) + 0.05 * (E + E.T)
    B = torch.diag(torch.linspace(0.0, 1.0, d, dtype=torch.float64)) + 0.3
    sa, sb = spectrum(A, vectors=False, ones=True), spectrum(B, vectors=False)
    bank = HaarBank(seed=3, samples=64)
    full_a = spectrum(A)
    assert full_a.vectors is not None
    brute = []
    for O in bank.get(d):
        Q = full_a.vectors @ O  # any V_B: it cancels in Q B Qᵀ only through B's own basis
        Qb = Q @ spectrum(B).vectors.T
        brute.append(alignment(A, Qb @ B @ Qb.T))
    null = rotation_null(sa, sb, 0.5, bank=bank)
    arr = np.array(brute)
    assert null.mean == pytest.approx(arr.mean(), abs=1e-12)
    assert null.std == pytest.approx(arr.std(ddof=1), abs=1e-12)
    swapped = rotation_null(spectrum(B), spectrum(A), 0.5, bank=bank)
    assert swapped.mean is not None and abs(swapped.mean - null.mean) > 5 * null.std / 8


def test_gram_of_matrix_and_batch_is_exactly_symmetric() -> None:
    g = torch.Generator().manual_seed(80)
    X = torch.randn(3, 11, 7, generator=g)  # float32 in, float64 out
    G = gram(X)
    want = X.double().mT @ X.double()
    assert G.dtype == torch.float64 and G.shape == (3, 7, 7)
    assert torch.allclose(G, want, rtol=1e-12, atol=1e-12)
    assert torch.equal(G, G.mT)
    assert torch.allclose(gram(X[0]), want[0], rtol=1e-12, atol=1e-12)
    # a transposed view (Fortran order) goes to syrk as it is; mirror=False keeps one triangle
    Y = torch.randn(9, 13, generator=g, dtype=torch.float64)
    low = gram(Y.mT, mirror=False)
    assert torch.equal(torch.triu(low, 1), torch.zeros_like(low))
    assert torch.allclose(torch.tril(low), torch.tril(Y @ Y.mT), rtol=1e-12, atol=1e-12)
    assert torch.allclose(eigvalsh(low), torch.linalg.eigvalsh(Y @ Y.mT), atol=1e-10)


def test_canonical_ones_clusters_have_bounded_span() -> None:
    from symtool.linalg import _canonical_ones

    # a chain of gaps 0.6e-9 (each below the 1e-9 cluster tolerance) spans 3e-9: it is cut
    # into clusters of span ≤ 1e-9, so no c-mass moves further than that
    values = torch.tensor([0.0, 0.6e-9, 1.2e-9, 1.8e-9, 2.4e-9, 3.0e-9, 1.0], dtype=torch.float64)
    c = torch.arange(1.0, 8.0, dtype=torch.float64)
    out = _canonical_ones(values, c)
    assert float(out.norm()) == pytest.approx(float(c.norm()), rel=1e-15)  # ‖c‖ kept
    assert out.tolist() == pytest.approx(
        [math.hypot(1, 2), 0.0, math.hypot(3, 4), 0.0, math.hypot(5, 6), 0.0, 7.0]
    )


def test_the_torch_path_gpus_take_gives_the_same_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """With SciPy switched off, CPU tensors take the ``torch.linalg`` path CUDA tensors always
    take: spectra, c = Vᵀ1, Gram pairs, sums, nulls and a layer's relations must agree."""
    from symtool import linalg as la
    from symtool.align.crh import layer_spectra, relations
    from symtool.align.moments import LayerAccumulator

    g = torch.Generator().manual_seed(90)
    W = torch.randn(6, 9, generator=g, dtype=torch.float64)
    X = torch.randn(50, 9, generator=g, dtype=torch.float64)
    Y = torch.randn(50, 6, generator=g, dtype=torch.float64)

    def run() -> tuple:
        M = _psd(9, 91) + 0.5
        s, p = spectrum(M), spectrum(M, vectors=False, ones=True)
        za, zb = gram_pair(W)
        acc = LayerAccumulator("paper")
        acc.add(X, X @ W.T, Y, Y @ W)
        m = acc.finish(W)
        rel = relations(m, spectra=layer_spectra(m), bank=HaarBank(seed=2), null_samples=8)
        return s.values, s.ones, p.ones, za.values, zb.ones, m.H_a, rel

    fast = run()
    monkeypatch.setattr(la, "HOST_BLAS", False)
    slow = run()
    for a, b in zip(fast[:6], slow[:6], strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)
    pairs = zip(fast[6].relations + fast[6].cross, slow[6].relations + slow[6].cross, strict=True)
    for ra, rb in pairs:
        assert ra.alpha == pytest.approx(rb.alpha, abs=1e-12)
        assert ra.null_mean == pytest.approx(rb.null_mean, abs=1e-10)
        assert ra.z == pytest.approx(rb.z, rel=1e-8, abs=1e-8)


@pytest.mark.parametrize("host", [True, False])
def test_empty_matrices_decompose_to_nothing(monkeypatch: pytest.MonkeyPatch, host: bool) -> None:
    from symtool import linalg as la

    monkeypatch.setattr(la, "HOST_BLAS", host)
    empty = torch.zeros(0, 0, dtype=torch.float64)
    for kw in ({}, {"vectors": False}, {"vectors": False, "ones": True}):
        assert spectrum(empty, **kw).values.shape == (0,)
    Za, Zb = gram_pair(torch.zeros(3, 0, dtype=torch.float64))  # a layer with no inputs
    assert Za.dim == 0 and torch.equal(Zb.values, torch.zeros(3, dtype=torch.float64))
    assert gram(torch.zeros(2, 0, 4)).abs().sum() == 0
    assert eigvalsh(torch.zeros(2, 0, 0, dtype=torch.float64)).shape == (2, 0)


def test_all_finite_agrees_with_the_entrywise_check():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(50, 40, generator=g, dtype=torch.float64)
    assert all_finite(x) and all_finite(x[:0])
    for bad in (float("nan"), float("inf"), -float("inf")):
        y = x.clone()
        y[7, 3] = bad
        assert not all_finite(y) and not all_finite(y.float())
    y = x.clone()
    y[0, 0], y[1, 1] = float("inf"), -float("inf")  # the sum is NaN, not ±inf
    assert not all_finite(y)
    big = torch.full((4,), 3e38, dtype=torch.float32)  # finite entries whose sum overflows
    assert not torch.isfinite(big.sum()) and all_finite(big)
