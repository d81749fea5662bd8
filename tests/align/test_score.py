"""Tests for symtool.align.score: the alignment score α, the Haar bank and the rotation null
(docs/theory.md §3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from symtool.align.null import invariants
from symtool.align.score import (
    HaarBank,
    alignment,
    haar_orthogonal,
    rotated_alignments,
    rotation_null,
)
from symtool.errors import AnalysisError, UsageError
from symtool.linalg import spectrum
from tests.reference import np_cosine, np_pearson, psd

# --- alignment ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alignment_matches_numpy(seed: int) -> None:
    A, B = psd(7, seed), psd(7, seed + 10)
    assert alignment(A, B) == pytest.approx(np_pearson(A.numpy(), B.numpy()), abs=1e-13)
    assert alignment(A, B, "cosine") == pytest.approx(np_cosine(A.numpy(), B.numpy()), abs=1e-13)


@pytest.mark.parametrize("metric", ["pearson", "cosine"])
def test_alignment_in_blocks_to_the_last_digit(metric: str) -> None:
    """Several blocks (1500 columns: 174 rows per block), a mean 1e5 times the spread and
    a transposed (non-contiguous) operand, against an extended-precision reference: within
    a few ulps (blocked sums and a two-pass mean), where one pass over whole centred copies
    is 44 (Pearson) and 37 (cosine) ulps off here."""
    g = torch.Generator().manual_seed(3)
    R, S = (torch.randn(1500, 1500, generator=g, dtype=torch.float64) for _ in range(2))
    A = R + R.T + 1e5
    B = (S + S.T + A - 1e5 + 3e5).T
    a = A.numpy().astype(np.longdouble).ravel()
    b = B.numpy().astype(np.longdouble).ravel()
    if metric == "pearson":
        a, b = a - a.mean(), b - b.mean()
    ref = float(a @ b / np.sqrt(a @ a) / np.sqrt(b @ b))
    assert not B.is_contiguous()
    tol = 16 * np.finfo(np.float64).eps
    assert abs(alignment(A, B, metric) - ref) <= tol * abs(ref)
    # with each matrix's sums and norms from the exact null's invariants: one pass, same α
    ia, ib = invariants(A, rotated=False), invariants(B, rotated=False)
    known = ((ia.frob_sq, ia.total, ia.centred_sq), (ib.frob_sq, ib.total, ib.centred_sq))
    assert abs(alignment(A, B, metric, known=known) - ref) <= tol * abs(ref)


def test_alignment_exact_affine_and_antialigned() -> None:
    A = psd(5, 7)
    assert alignment(A, 3.0 * A + 2.0) == pytest.approx(1.0, abs=1e-14)
    assert alignment(A, -0.5 * A + 1.0) == pytest.approx(-1.0, abs=1e-14)
    assert alignment(A, 4.0 * A, "cosine") == pytest.approx(1.0, abs=1e-14)
    # cosine is not shift invariant: it sees the offset
    assert alignment(A, A + 100.0, "cosine") < 0.99


def test_alignment_undefined_is_none() -> None:
    A = psd(4, 8)
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



# --- Haar bank ------------------------------------------------------------------------


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



# --- rotation null --------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["pearson", "cosine"])
def test_null_fast_path_equals_brute_force(metric: str) -> None:
    d = 11
    A, B = psd(d, 20) + 1.0, psd(d, 21, rank=6)
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
    A, B = psd(d, 30), psd(d, 31)
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
    A = psd(d, 40, rank=2) + 0.1 * torch.eye(d, dtype=torch.float64)
    B = psd(d, 41, rank=3)
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
    sb = spectrum(psd(d, 50))
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



# --- which matrix the null rotates ----------------------------------------------------


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
