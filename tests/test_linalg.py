"""Tests for symtool.linalg: spectra, Gram pairs, matrix powers, the BLAS paths."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from symtool import eigen
from symtool.align.score import HaarBank
from symtool.errors import AnalysisError
from symtool.linalg import (
    all_finite,
    eigvalsh,
    gram,
    gram_pair,
    spectrum,
    sym,
)
from symtool.triangles import full_from_lower, mirror_lower_, scaled_sym, sub_outer_
from tests.reference import matrix_power, psd

# --- spectrum / sym ---------------------------------------------------------------------


def test_sym_is_symmetric_part() -> None:
    M = torch.arange(9, dtype=torch.float64).reshape(3, 3)
    S = sym(M)
    assert torch.equal(S, S.T)
    assert torch.allclose(S + (M - M.T) / 2, M)


@pytest.mark.parametrize("d", [1, 5, 128, 129, 300])
def test_mirror_copies_the_lower_triangle_exactly(d: int) -> None:
    """Strip by strip, whatever the upper triangle held: entry for entry the lower one's
    transpose (sizes below, at and across the strip height)."""
    S = torch.randn(d, d, generator=torch.Generator().manual_seed(d), dtype=torch.float64)
    low = torch.tril(S)
    want = low + torch.tril(S, -1).T
    before = S.clone()
    assert torch.equal(full_from_lower(S), want)
    assert torch.equal(S, before)  # full_from_lower leaves its argument alone
    out = mirror_lower_(S)
    assert out is S and torch.equal(S, want)
    batch = torch.stack([S.T.contiguous(), S])  # a batch too, matrix by matrix
    assert torch.equal(full_from_lower(batch), torch.tril(batch) + torch.tril(batch, -1).mT)
    # the other strip-wise steps: entry for entry their whole-matrix expressions, and
    # exactly symmetric
    C = torch.randn(d, d, generator=torch.Generator().manual_seed(d + 1), dtype=torch.float64)
    X = scaled_sym(C, -0.5)
    assert torch.equal(X, (C + C.T) * -0.5) and torch.equal(X, X.T)
    u = torch.randn(d, generator=torch.Generator().manual_seed(d + 2), dtype=torch.float64)
    Y = sub_outer_(want.clone(), u)
    assert torch.equal(Y, want - torch.outer(u, u)) and torch.equal(Y, Y.T)


def test_spectrum_reconstructs_and_is_ascending() -> None:
    A = psd(20, 1) - 5.0 * torch.eye(20, dtype=torch.float64)
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
    Z, M = psd(9, 4), psd(9, 5)
    s = spectrum(Z)
    ref = np.diag(s.vectors.numpy().T @ M.numpy() @ s.vectors.numpy())
    assert np.allclose(s.rayleigh(M).numpy(), ref, rtol=1e-12)


# --- matrix powers ----------------------------------------------------------------------


@pytest.mark.parametrize("p", [-1.0, -0.5, 0.5, 1.0, 1.5, 2.0, 3.0])
def test_matrix_power_matches_numpy(p: float) -> None:
    A = psd(8, 11) + 0.5 * torch.eye(8, dtype=torch.float64)
    w, V = np.linalg.eigh(A.numpy())
    ref = (V * w**p) @ V.T
    got = matrix_power(spectrum(A), p).numpy()
    assert np.allclose(got, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())


def test_matrix_power_on_kept_support_is_pseudo_inverse() -> None:
    A = psd(8, 12, rank=5)  # three zero eigenvalues
    s = spectrum(A)
    assert np.allclose(matrix_power(s, -1.0).numpy(), np.linalg.pinv(A.numpy(), rcond=1e-8))
    assert torch.allclose(matrix_power(s, 1.0), A, atol=1e-10)
    P = matrix_power(s, 0.0)  # projector onto the support
    assert torch.allclose(P @ P, P, atol=1e-12)
    assert float(torch.trace(P)) == pytest.approx(5.0, abs=1e-10)
    assert torch.equal(matrix_power(spectrum(-A), 0.5), torch.zeros(8, 8, dtype=torch.float64))


# --- partial spectra and the Gram pair --------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: psd(30, 60) + 2.0,  # a large entry mean: c is far from uniform
        lambda: psd(17, 61, rank=5),  # a 12-dimensional null space
        lambda: torch.eye(6, dtype=torch.float64),  # one eigenspace
        lambda: psd(2, 62),
        lambda: torch.tensor([[3.0]], dtype=torch.float64),
        lambda: -psd(9, 63) + 1.0,  # indefinite
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
        M = psd(9, 91) + 0.5
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


# --- deflation and solver fallbacks (issue 15: ResNet layer4's H_a) ---------------------


def _im2col_moment(channels: int = 24, rows: int = 15, seed: int = 5) -> torch.Tensor:
    """A small analogue of ResNet-18 layer4's ``H_a``: im2col of 3×3 kernels on 1×1 maps.

    With padding 1 only the centre tap of each channel sees data, so 8 of every 9 columns
    (``d = 9·channels``) are exactly zero, and there are fewer rows than channels.
    """
    g = torch.Generator().manual_seed(seed)
    d = 9 * channels
    X = torch.zeros(rows, d, dtype=torch.float64)
    X[:, 4::9] = torch.relu(torch.randn(rows, channels, generator=g, dtype=torch.float64))
    return X.T @ X


@pytest.mark.parametrize("host", [True, False])
def test_zero_rows_are_deflated_exactly(monkeypatch: pytest.MonkeyPatch, host: bool) -> None:
    from symtool import linalg as la

    monkeypatch.setattr(la, "HOST_BLAS", host)
    H = _im2col_moment()
    d = H.shape[0]
    seen: list[int] = []
    robust = eigen.robust
    monkeypatch.setattr(
        eigen, "robust", lambda M, v, host: (seen.append(M.shape[0]), robust(M, v, host))[1]
    )
    s = spectrum(H)
    assert seen == [24]  # only the 24 centre-tap rows were decomposed
    ref = np.linalg.eigvalsh(H.numpy())
    assert np.allclose(s.values.numpy(), ref, atol=1e-10 * float(H.abs().max()))
    assert bool((s.values[1:] >= s.values[:-1]).all())
    rec = (s.vectors * s.values) @ s.vectors.T
    assert torch.allclose(rec, H, atol=1e-10 * float(H.abs().max()))
    assert torch.allclose(s.vectors.T @ s.vectors, torch.eye(d, dtype=torch.float64), atol=1e-12)
    # each zero row j contributes exactly the eigenpair (0, e_j)
    zero_rows = [j for j in range(d) if j % 9 != 4]
    block = s.vectors[zero_rows]
    assert int((block.abs() == 1.0).sum()) == len(zero_rows)
    # values-only and values-and-ones depths see the same spectrum and c = Vᵀ1
    p = spectrum(H, vectors=False, ones=True)
    assert torch.allclose(p.values, s.values, atol=1e-10 * float(H.abs().max()))
    assert torch.allclose(p.ones, s.ones, atol=1e-9)
    assert torch.allclose(spectrum(H, vectors=False).values, s.values, atol=1e-9)
    v = eigvalsh(H.unsqueeze(0))[0]
    assert np.allclose(v.numpy(), ref, atol=1e-10 * float(H.abs().max()))


def test_a_failing_solver_falls_back_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """What torch's MKL ``eigh`` did on 2 threads for layer4's H_a: the fallback answers."""
    from symtool import linalg as la

    monkeypatch.setattr(la, "HOST_BLAS", False)

    def fails(*args, **kwargs):
        raise RuntimeError("linalg.eigh: The algorithm failed to converge (error code: 20145713)")

    monkeypatch.setattr(torch.linalg, "eigh", fails)
    monkeypatch.setattr(torch.linalg, "eigvalsh", fails)
    M = psd(30, 8) + 0.1
    s = spectrum(M)
    assert s.note is not None and "scipy evr" in s.note and "failed to converge" in s.note
    assert np.allclose(s.values.numpy(), np.linalg.eigvalsh(M.numpy()), atol=1e-10)
    assert torch.allclose((s.vectors * s.values) @ s.vectors.T, M, atol=1e-10)
    p = spectrum(M, vectors=False, ones=True)  # the torch path of c = Vᵀ1 needs eigh too
    assert p.note is not None and torch.allclose(p.ones, s.ones, atol=1e-9)
    assert np.allclose(eigvalsh(M.unsqueeze(0))[0].numpy(), np.linalg.eigvalsh(M.numpy()))
    za, zb = gram_pair(torch.randn(4, 7, dtype=torch.float64))
    assert za.note is not None and za.note == zb.note


def test_shift_is_the_last_resort_and_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    from symtool import linalg as la

    monkeypatch.setattr(la, "HOST_BLAS", True)
    real = eigen.scipy.linalg.eigh
    calls: list[str] = []

    def picky(a, *args, driver=None, **kwargs):
        calls.append(driver)
        if len(calls) <= 3:  # evd, evr, ev on the matrix itself all fail
            raise np.linalg.LinAlgError(f"{driver} did not converge")
        return real(a, *args, driver=driver, **kwargs)

    monkeypatch.setattr(eigen.scipy.linalg, "eigh", picky)
    M = psd(12, 3)
    s = spectrum(M)
    assert calls == ["evd", "evr", "ev", "evd"]
    assert s.note is not None and "diagonal shift" in s.note
    bound = 2 * eigen.SHIFT_REL * float(M.abs().max())
    assert np.allclose(s.values.numpy(), np.linalg.eigvalsh(M.numpy()), atol=bound + 1e-12)


def test_when_every_solver_fails_the_error_names_each(monkeypatch: pytest.MonkeyPatch) -> None:
    from symtool import linalg as la

    monkeypatch.setattr(la, "HOST_BLAS", True)

    def never(a, *args, driver=None, **kwargs):
        raise np.linalg.LinAlgError(f"{driver} broke")

    monkeypatch.setattr(eigen.scipy.linalg, "eigh", never)
    with pytest.raises(AnalysisError) as info:
        spectrum(psd(5, 1))
    for label in ("scipy evd: evd broke", "scipy evr", "scipy ev: ev broke", "with shift"):
        assert label in info.value.message


def test_spectra_agree_at_one_and_two_threads() -> None:
    """One thread runs SciPy's LAPACK, two run torch's MKL: same values, signs, c."""
    H = _im2col_moment(channels=40, rows=30, seed=9)
    before = torch.get_num_threads()
    got = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            s = spectrum(H)
            got.append((s.values, s.vectors, s.ones, spectrum(H, vectors=False, ones=True).ones))
    finally:
        torch.set_num_threads(before)
    scale = float(H.abs().max())
    assert torch.allclose(got[0][0], got[1][0], atol=1e-12 * scale)
    top = got[0][0] > 1e-8 * scale  # vectors are unique (up to sign) only off the null space
    assert torch.allclose(got[0][1][:, top], got[1][1][:, top], atol=1e-9)
    assert torch.allclose(got[0][2], got[1][2], atol=1e-9)
    assert torch.allclose(got[0][3], got[1][3], atol=1e-9)


@pytest.mark.parametrize("d", [1, 2, 7, 130, 257])
def test_centred_power_traces_equal_the_dense_products(d: int) -> None:
    """``tr D³``, ``tr D⁴`` of ``D = M − sI`` from the lower triangle of ``D²`` equal the
    dense ``⟨D, DD⟩`` and ``‖DD‖²`` to round-off (the exact null's rotated side)."""
    from symtool.linalg import centred_power_traces

    g = torch.Generator().manual_seed(d)
    X = torch.randn(d, d + 3, generator=g, dtype=torch.float64)
    M = X @ X.T
    M = (M + M.T) / 2
    s = float(M.trace()) / d
    D = M - s * torch.eye(d, dtype=torch.float64)
    D2 = D @ D
    tr3, tr4 = centred_power_traces(M, s)
    scale3 = float((D.abs() @ D.abs() * D.abs()).sum())  # round-off scale of tr D³
    assert abs(tr3 - float((D * D2).sum())) <= 1e-13 * scale3
    assert tr4 == pytest.approx(float((D2 * D2).sum()), rel=1e-13)
