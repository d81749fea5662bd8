"""Range-only eigenbases (symtool.align.bases) against dense float64 decompositions."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from symtool.align.bases import gram_pair_range, kept_product, moment_spectrum
from symtool.align.crh import layer_spectra, relations
from symtool.align.moments import LayerAccumulator, LayerMatrices
from symtool.align.pah import FITS, fit_power, powers
from symtool.linalg import gram_pair, kept_support, spectrum
from tests.reference import gen, rel_err

F64 = torch.float64


def _wide_layer(n: int = 25, d_in: int = 60, d_out: int = 12, seed: int = 0) -> LayerMatrices:
    """A conv-like layer: fewer rows than d_in (H_a, G_a kept as rows), paper recipe."""
    g = gen(seed)
    W = torch.randn(d_out, d_in, generator=g, dtype=F64) / d_in**0.5
    mix = torch.randn(d_in, d_in, generator=g, dtype=F64) / d_in**0.5
    h_a = torch.relu(torch.randn(n, d_in, generator=g, dtype=F64) @ mix + 0.3)
    g_b = torch.randn(n, d_out, generator=g, dtype=F64) * torch.linspace(0.2, 2.0, d_out)
    acc = LayerAccumulator("paper")
    for sl in (slice(0, 10), slice(10, n)):
        acc.add(h_a[sl], h_a[sl] @ W.T, g_b[sl], g_b[sl] @ W)
    return acc.finish(W)


def _projector(V: torch.Tensor) -> torch.Tensor:
    return V @ V.T


@pytest.mark.parametrize("shape", [(7, 20), (20, 7), (9, 9)])
def test_gram_pair_range_is_gram_pair_without_the_null_basis(shape: tuple[int, int]) -> None:
    W = torch.randn(*shape, generator=gen(1), dtype=F64)
    for lean, dense in zip(gram_pair_range(W), gram_pair(W), strict=True):
        d, p = lean.dim, lean.vectors.shape[1]
        assert p == min(shape) and dense.vectors.shape[1] == d
        assert torch.equal(lean.matrix, dense.matrix)
        assert torch.allclose(lean.values, dense.values, rtol=0, atol=1e-12)
        assert torch.allclose(lean.ones, dense.ones, rtol=0, atol=1e-10)
        # the range vectors are the dense ones (same signs), the null space is left out
        assert torch.allclose(lean.vectors, dense.vectors[:, d - p :], atol=1e-12)
        assert rel_err(lean.matrix, (lean.vectors * lean.values[d - p :]) @ lean.vectors.T) < 1e-12


def test_moment_spectrum_from_rows_matches_the_dense_eigh() -> None:
    m = _wide_layer()
    assert m.factors is not None and set(m.factors) == {"H_a", "G_a"}
    for name in ("H_a", "G_a"):
        M, Y = getattr(m, name), m.factors[name]
        lean, dense = moment_spectrum(M, Y), spectrum(M)
        d, p = lean.dim, lean.vectors.shape[1]
        assert p <= Y.shape[0] < d
        scale = float(dense.values.abs().max())
        assert torch.allclose(lean.values, dense.values, rtol=0, atol=1e-12 * scale)
        kept = int(kept_support(dense.values, 1e-8).sum())
        Vl, Vd = lean.vectors[:, p - kept :], dense.vectors[:, d - kept :]
        assert rel_err(_projector(Vl), _projector(Vd)) < 1e-9  # same kept eigenspace
        assert torch.allclose(lean.ones[d - kept :].abs(), dense.ones[d - kept :].abs(), atol=1e-9)
        # eigenvalues only (what G needs): the same values, from eigvalsh of the rows' Gram
        bare = moment_spectrum(M, Y, vectors=False)
        assert bare.vectors is None and bare.ones is None
        assert torch.allclose(bare.values, dense.values, rtol=0, atol=1e-12 * scale)
        # without a factor (or a factor as tall as wide): the dense eigh itself
        assert torch.equal(moment_spectrum(M).values, dense.values)
    V = torch.randn(60, 4, generator=gen(2), dtype=F64)
    assert rel_err(kept_product(m.H_a, V, m.factors["H_a"]), m.H_a @ V) < 1e-12


def _numpy_kappa(M: np.ndarray, Z: np.ndarray, floor: float = 1e-8) -> tuple[float, int]:
    """κ by numpy from the dense Z: kept z_i > ε·max z, then m_i > ε·max over those."""
    z, V = np.linalg.eigh(Z)
    kz = z > floor * z.max()
    m = np.einsum("ij,ik,kj->j", V[:, kz], M, V[:, kz])
    km = m > floor * m.max()
    x, y = np.log(z[kz][km]), np.log(m[km])
    return float(np.polyfit(x, y, 1)[0]), int(km.sum())


def test_lean_pah_equals_the_dense_reference_on_a_rank_deficient_wide_layer() -> None:
    m = _wide_layer()
    sp = layer_spectra(m)
    H_a, Z_a = sp.get("H_a"), sp.get("Z_a")
    assert H_a is not None and Z_a is not None
    assert H_a.vectors.shape[1] < 25 and Z_a.vectors.shape[1] == 12  # ranges only
    lean = powers(m, spectra=sp, bootstrap=50)
    full = {
        "H_a": spectrum(m.H_a),
        "H_b": spectrum(m.H_b),
        **dict(zip(("Z_a", "Z_b"), gram_pair(m.W), strict=True)),
    }
    for fit, (target, reference, side) in zip(lean.fits, FITS, strict=True):
        M = getattr(m, target)
        dense = fit_power(
            M, full[reference], target=target, reference=reference, side=side, bootstrap=50
        )
        kappa, n = _numpy_kappa(M.numpy(), full[reference].matrix.numpy())
        assert fit.kappa is not None and abs(fit.kappa - kappa) < 1e-8 and fit.n_kept == n
        for key in ("kappa", "intercept", "r2", "ci_low", "ci_high", "alpha_star"):
            a, b = getattr(fit, key), getattr(dense, key)
            assert a is not None and abs(a - b) < 1e-9 * max(1.0, abs(b)), (fit.formula, key)
        assert fit.kappa_star == dense.kappa_star and fit.n_kept == dense.n_kept
        for key in ("agreement", "agreement_blocks"):
            assert abs(getattr(fit, key) - getattr(dense, key)) < 1e-9, (fit.formula, key)


def test_symmetric64_copies_only_what_is_not_symmetric() -> None:
    from symtool.align.bases import symmetric64
    from symtool.linalg import sym

    S = torch.randn(6, 6, generator=gen(5), dtype=F64)
    S = S + S.T
    assert symmetric64(S).data_ptr() == S.data_ptr()  # exactly symmetric float64: no copy
    A = torch.randn(6, 6, generator=gen(6), dtype=F64)
    assert torch.equal(symmetric64(A), sym(A))
    assert torch.equal(symmetric64(S.float()), S.float().double())


@pytest.mark.parametrize("scale", [1.0, 1e-12])
@pytest.mark.parametrize("path", ["trmm", "gemm", "factor"])
def test_quotients_and_blocks_equal_the_dense_products(
    path: str, scale: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every product route gives ``diag(VᵀMV)`` and ``V_EᵀMV_E`` of the dense formula, to
    round-off relative to ``‖M‖`` at any scale (the halved diagonal is scaled with M)."""
    import symtool.linalg as la
    from symtool.align.bases import quotients

    d, r = 40, 6 if path == "factor" else 60
    g = gen(3)
    Y = torch.randn(r, d, generator=g, dtype=F64) * scale
    M = Y.T @ Y
    if path != "factor":  # full rank
        M = M + torch.diag(torch.rand(d, generator=g, dtype=F64)) * scale**2
    M = (M + M.T) / 2
    V = torch.linalg.qr(torch.randn(d, 25, generator=g, dtype=F64))[0]
    threads = torch.get_num_threads()
    monkeypatch.setattr(la, "HOST_BLAS", path == "trmm")
    torch.set_num_threads(1)
    try:
        m, block = quotients(M, V, Y if path == "factor" else None)
        E = torch.tensor([2, 5, 6, 11])
        got_block = block(E)
    finally:
        torch.set_num_threads(threads)
    dense = V.T @ M @ V
    norm = float(M.norm())
    assert float((m - dense.diagonal()).abs().max()) < 1e-14 * norm
    assert float((got_block - dense[E][:, E]).abs().max()) < 1e-14 * norm
    if path == "trmm":  # B + Bᵀ: exactly symmetric
        assert torch.equal(got_block, got_block.T)


def test_rows_kept_g_gives_the_same_relations_and_sampled_null() -> None:
    """A G kept as rows is decomposed for its eigenvalues only; relations, exact nulls and
    the sampled null (which needs ``c = Vᵀ1`` of a fixed G) equal those of the same layer
    handed over as dense matrices."""
    m = _wide_layer()
    dense = replace(m, factors=None)
    sp = layer_spectra(m)
    G = sp.get("G_a")
    assert G is not None and G.vectors is None and sp.get("H_a").vectors is not None
    lean, full = relations(m, null_samples=8), relations(dense, null_samples=8)
    for a, b in zip(lean.relations + lean.cross, full.relations + full.cross, strict=True):
        assert a.reason is None and a.sampled_null is not None and a.sampled_null.reason is None
        assert a.alpha == pytest.approx(b.alpha, abs=1e-14)
        assert a.z == pytest.approx(b.z, rel=1e-9)
        assert a.sampled_null.mean == pytest.approx(b.sampled_null.mean, abs=1e-12)
