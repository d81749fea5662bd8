"""The eigenbases PAH reads, decomposed only as far as they are read (docs/performance.md).

A PAH fit ``M ~ Z^κ`` (docs/theory.md §4) reads the reference ``Z``'s eigenvalues and, for
its **kept** eigenvalues ``z_i > ε·max z`` only, the eigenvectors ``v_i`` (Rayleigh
quotients ``v_iᵀ M v_i``, eigenspace blocks) and ``c_i = v_iᵀ1`` (power scan). What
:mod:`symtool.align.pah` needs of the rest, the orthogonal complement of the kept
vectors, follows from ``tr M`` and ``‖M‖_F`` without a basis of it. So a reference of rank
``r`` is decomposed in an ``r``-dimensional problem:

* ``Z_a = WᵀW`` and ``Z_b = WWᵀ`` (rank ``≤ min(d_in, d_out)``): one ``eigh`` of the
  smaller Gram matrix, the other side's range vectors ``W v_i/σ_i`` (the numbers of
  :func:`symtool.linalg.gram_pair`, without the ``d × d`` completion of the null space);
* a moment kept as rows (fewer rows than its width, :attr:`LayerMatrices.factors`,
  ``H = YᵀY``): one ``eigh`` of the ``r × r`` Gram matrix ``YYᵀ``, vectors ``Yᵀu_i/σ_i``;
* any other moment: the full ``eigh``, as before.

Each result is a :class:`symtool.linalg.Spectrum` whose ``values`` and ``ones`` have all
``d`` entries (zeros and the all-ones vector's null-space share ``‖P₀1‖`` on the first null
index, as the canonical rule of :func:`symtool.linalg._canonical_ones` gives a dense
decomposition), and whose ``vectors`` hold the last ``p ≤ d`` columns only: those of the
non-zero eigenvalues (``Spectrum.product`` and ``rayleigh`` then act on those columns).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import scipy.linalg
import torch

from symtool.errors import AnalysisError
from symtool.linalg import (
    Spectrum,
    _canonical_ones,
    _canonical_signs,
    _checked,
    _host_blas,
    all_finite,
    gram,
    spectrum,
    sym,
)

Tensor = torch.Tensor

_EPS = float(torch.finfo(torch.float64).eps)


def symmetric64(M: Tensor) -> Tensor:
    """``sym(M)`` in float64, without a copy when ``M`` is exactly symmetric float64 already
    (finished moments are: they are mirrored triangles minus ``μμᵀ``). One read of ``M``
    instead of two ``d × d`` temporaries."""
    M64 = M.detach().to(torch.float64)
    return M64 if torch.equal(M64, M64.mT) else sym(M64)


def _above_roundoff(s: Tensor) -> Tensor:
    """Eigenvalues of an ``r × r`` Gram matrix above round-off (``s_i > r·eps·max|s|``)."""
    smax = float(s.abs().max()) if s.numel() else 0.0
    return s > s.numel() * _EPS * smax


def _range(M64: Tensor, small: Spectrum, X: Tensor) -> Spectrum:
    """``M``'s spectrum from ``small = eigh(XᵀX)``, where ``M = X Xᵀ`` (``X``: ``d × r``).

    ``M`` has eigenpairs ``(s_i, X u_i/√s_i)`` for the non-zero eigenpairs ``(s_i, u_i)``
    of ``XᵀX``; those at round-off level (``s_i ≤ r·eps·max s``) join the null space (the
    rule of ``gram_pair``)."""
    assert small.vectors is not None
    s = small.values
    keep = _above_roundoff(s)
    n = int(keep.sum())
    d = M64.shape[0]
    U = _canonical_signs(((X @ small.vectors[:, keep]) / torch.sqrt(s[keep])).contiguous())
    values = torch.zeros(d, dtype=torch.float64, device=s.device)
    values[d - n :] = s[keep]
    c = torch.zeros(d, dtype=torch.float64, device=s.device)
    c_range = U.sum(dim=0)
    c[d - n :] = c_range
    if n < d:  # the null space's share of 1, all on its first vector (canonical rule)
        c[0] = math.sqrt(max(d - float((c_range * c_range).sum()), 0.0))
    return Spectrum(M64, values, U, _canonical_ones(values, c))


def gram_pair_range(W: Tensor) -> tuple[Spectrum, Spectrum]:
    """Spectra of ``Z_a = WᵀW`` and ``Z_b = WWᵀ`` from one ``eigh`` of the smaller one.

    The smaller side is decomposed in full (its ``d ≤ min(d_in, d_out)`` vectors); the
    bigger side gets its range vectors ``u_i = X v_i/σ_i`` only: the same eigenvalues,
    kept vectors and ``c`` as :func:`symtool.linalg.gram_pair`, which also builds a
    ``d × d`` basis of the null space that no fit reads. Both dense matrices are returned
    (the alignment scores use them).
    """
    W64 = W.detach().to(torch.float64)
    Za, Zb = gram(W64), gram(W64.T)  # exactly symmetric (mirrored triangles)
    if not (all_finite(Za) and all_finite(Zb)):
        raise AnalysisError("matrix has non-finite entries")
    a_small = Za.shape[0] <= Zb.shape[0]
    small = spectrum(Za if a_small else Zb, checked=True)
    big = _range(Zb if a_small else Za, small, W64 if a_small else W64.T)
    return (small, big) if a_small else (big, small)


def moment_spectrum(
    M: Tensor, factor: Tensor | None = None, *, checked: bool = False, vectors: bool = True
) -> Spectrum:
    """The spectrum of a moment ``M``, from its row factor when that is smaller.

    Args:
        M: the moment (symmetrised here, float64).
        factor: ``Y`` with ``M = YᵀY`` (``r × d``), or ``None``.
        checked: ``M`` is already a finite symmetric float64 matrix (no copy is made).
        vectors: also the eigenvectors and ``c``; ``False`` (with a factor only): the
            eigenvalues alone, from ``eigvalsh`` of the ``r × r`` Gram matrix.

    Returns:
        With ``r < d``: eigenvalues (zeros beyond rank ``r``), the range's eigenvectors
        (``d × p``, ``p ≤ r``) and ``c``, from one ``r × r`` ``eigh``; else the full
        :func:`symtool.linalg.spectrum`.
    """
    M64 = M if checked else _checked(M)
    if factor is None or factor.shape[0] >= M64.shape[0]:
        return spectrum(M64, checked=True)
    Y = factor.detach().to(dtype=torch.float64, device=M64.device)
    if vectors:
        return _range(M64, spectrum(gram(Y.T)), Y.T)
    s = spectrum(gram(Y.T), vectors=False).values
    kept = s[_above_roundoff(s)]  # as in _range: round-off joins the null space
    values = torch.zeros(M64.shape[0], dtype=torch.float64, device=s.device)
    values[values.shape[0] - kept.shape[0] :] = kept
    return Spectrum(M64, values, None, None)


Block = Callable[[Tensor], Tensor]
"""``E ↦ V_Eᵀ M V_E`` for column indices ``E`` of the ``V`` a :func:`quotients` call saw."""


def quotients(M: Tensor, V: Tensor, factor: Tensor | None = None) -> tuple[Tensor, Block]:
    """Rayleigh quotients ``m_i = v_iᵀ M v_i`` on the columns of ``V``, and their blocks.

    ``M`` is exactly symmetric float64. The cheapest of three products is formed once:

    * through ``M = YᵀY`` when the row factor is short (``4r < d``): ``Yᵀ(Y V)``;
    * on the host at one thread, BLAS ``trmm`` with the triangle ``S`` (the lower part
      of ``M`` with its diagonal halved, ``M = S + Sᵀ``): ``m_i = 2 v_iᵀ S v_i`` and
      ``V_EᵀMV_E = B + Bᵀ`` with ``B = V_Eᵀ S V_E``, half a GEMM's flops
      (docs/performance.md). ``S V`` is ``tril(M) V − ½ diag(M) V``: the correction is of
      ``M``'s own scale, so the round-off stays relative to ``‖M‖``;
    * else the GEMM ``M V``.

    Returns:
        ``m`` (one entry per column) and a function giving the block ``V_Eᵀ M V_E``.
    """
    V = V.to(torch.float64)
    d, p = M.shape[0], V.shape[1]
    short = factor is not None and 4 * factor.shape[0] < d
    if short or p == 0 or not (_host_blas(M) and M.dtype == torch.float64 and d == V.shape[0]):
        return product_quotients(kept_product(M, V, factor), V)
    R = _lower_product(M.detach(), V)  # (L + D) V, L the strict lower triangle, D the diagonal
    SV = R.addcmul_(M.diagonal().unsqueeze(1), V, value=-0.5)  # S V = (L + D/2) V

    def block(E: Tensor) -> Tensor:
        B = V[:, E].T @ SV[:, E]
        return B + B.T

    return 2.0 * (SV * V).sum(dim=0), block


def product_quotients(MV: Tensor, V: Tensor) -> tuple[Tensor, Block]:
    """:func:`quotients` from a product ``M V`` already formed."""
    return (MV * V).sum(dim=0), lambda E: V[:, E].T @ MV[:, E]


def _lower_product(M: Tensor, V: Tensor) -> Tensor:
    """``tril(M) V`` by BLAS ``trmm`` for an exactly symmetric float64 ``M`` on the host,
    in whichever memory order ``V`` has (no copy of either)."""
    a = M.T.numpy()  # Fortran view of M, i.e. Mᵀ = M: its lower triangle is tril(M)
    if V.mT.is_contiguous():  # column-major V (what eigh returns): B := tril(M) B
        out = scipy.linalg.blas.dtrmm(1.0, a, V.numpy(), lower=1)
        return torch.from_numpy(out)
    # row-major V: its Fortran view is Vᵀ, and (tril(M) V)ᵀ = Vᵀ tril(M)ᵀ
    out = scipy.linalg.blas.dtrmm(1.0, a, V.contiguous().T.numpy(), side=1, lower=1, trans_a=1)
    return torch.from_numpy(out).T


def kept_product(M: Tensor, V: Tensor, factor: Tensor | None = None) -> Tensor:
    """``M V`` for ``d × p`` columns ``V``; through ``M = YᵀY`` when that is cheaper.

    ``Yᵀ(Y V)`` costs ``4 r d p`` against ``2 d² p``: used when ``r < d/2``.
    """
    V = V.to(torch.float64)
    if factor is not None and 2 * factor.shape[0] < M.shape[0]:
        Y = factor.to(dtype=torch.float64, device=V.device)
        return Y.T @ (Y @ V)
    return M.to(dtype=torch.float64, device=V.device) @ V
