"""Float64 linear algebra shared by every analysis: spectra, Gram products, powers.

docs/theory.md §4 (fractional powers on a kept support) and §7 (float64, determinism, no NaN
in a record). Every matrix is eigendecomposed once (:func:`spectrum`); the alignment null
(:mod:`symtool.align.score`) and the PAH fits reuse that :class:`Spectrum`. On the CPU the
decompositions and Gram sums go through SciPy's LAPACK/BLAS while torch runs on one thread
(:data:`HOST_BLAS`), otherwise through ``torch.linalg``.
"""


from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

from symtool import eigen
from symtool.errors import AnalysisError
from symtool.triangles import full_from_lower, mirror_lower_

Tensor = torch.Tensor



def sym(M: Tensor) -> Tensor:
    """Symmetric part ``(M + Mᵀ)/2`` of a square matrix."""
    return (M + M.transpose(-1, -2)) / 2


@dataclass(frozen=True, eq=False)
class Spectrum:
    """One eigendecomposition of a symmetric matrix, float64, reused by every analysis.

    Attributes:
        matrix: the symmetrised float64 matrix ``sym(M)`` that was decomposed.
        values: eigenvalues in **ascending** order.
        vectors: orthonormal eigenvectors as columns, ``matrix = V diag(values) Vᵀ``; each
            column's sign is fixed so its entry sum is ``≥ 0`` (ties: largest-magnitude entry
            positive), which makes results independent of the solver's sign choice.
        ones: ``c = Vᵀ 1``, the all-ones vector in the eigenbasis (entry sums need it);
            inside a degenerate eigenspace, all of it sits on the space's first vector
            (see :func:`_canonical_ones`).

        note: how the decomposition was obtained when the first solver failed (the
            fallback driver, or the diagonal shift it needed); ``None`` otherwise.

    ``vectors`` is ``None`` for a spectrum computed without them, and ``ones`` too for a
    values-only one (see :func:`spectrum`).
    """

    matrix: Tensor
    values: Tensor
    vectors: Tensor | None
    ones: Tensor | None
    note: str | None = None

    @property
    def dim(self) -> int:
        """Matrix side length ``d``."""
        return int(self.values.shape[0])

    @property
    def frob_sq(self) -> float:
        """``‖M‖_F² = Σ λ_k²``."""
        return float((self.values**2).sum())

    @property
    def entry_sum(self) -> float:
        """``1ᵀ M 1``, the sum of all entries."""
        return float(self.matrix.sum())

    def product(self, M: Tensor) -> Tensor:
        """``M V`` in float64: the one GEMM behind Rayleigh quotients in this eigenbasis."""
        V = self.vectors
        if V is None:
            raise AnalysisError("this spectrum was computed without eigenvectors")
        return M.to(dtype=torch.float64, device=V.device) @ V

    def rayleigh(self, M: Tensor) -> Tensor:
        """Rayleigh quotients ``m_i = v_iᵀ M v_i`` of ``M`` in this eigenbasis (one GEMM).

        ``vᵀ M v = vᵀ sym(M) v``, so ``M`` need not be symmetrised first.
        """
        MV = self.product(M)
        return (MV * self.vectors).sum(dim=0)


HOST_BLAS = True
"""Allow SciPy's BLAS/LAPACK for CPU tensors when torch runs on one thread (``False``:
``torch.linalg`` everywhere, the path GPU tensors always take; the tests switch it off to
check that path on the CPU)."""


def all_finite(t: Tensor) -> bool:
    """Whether every entry of ``t`` is finite.

    One reduction instead of an elementwise mask: any NaN or infinite entry makes the sum
    NaN or infinite, so a finite sum proves every entry finite; a non-finite sum (a bad
    entry, or overflow of finite ones) is settled entrywise.
    """
    if t.numel() == 0 or bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def _host_blas(t: Tensor) -> bool:
    """Whether ``t`` goes to SciPy's BLAS/LAPACK rather than torch's.

    Only CPU tensors, and only while torch runs on one thread: there SciPy's LAPACK is
    10–40% faster than torch's (docs/performance.md); with more threads torch's MKL scales
    on its own thread pool, while OpenBLAS's threads would compete with torch's.
    """
    return HOST_BLAS and t.device.type == "cpu" and torch.get_num_threads() == 1


def add_product_(out: Tensor, a: Tensor, b: Tensor) -> None:
    """``out += a @ b`` into a float64 sum ``out``, the product formed in ``a``'s dtype."""
    if a.dtype == torch.float64:
        out.addmm_(a, b)
    else:
        out += torch.mm(a, b).to(torch.float64)


def add_gram_(out: Tensor, x: Tensor) -> None:
    """Add the lower triangle of ``xᵀx`` into that of a float64 sum ``out``.

    Only ``out``'s lower triangle is defined afterwards (:func:`full_from_lower` mirrors it).
    On the CPU at one thread, BLAS ``syrk`` through SciPy computes just that triangle, half
    the work of a GEMM; otherwise three of the four ``d/2`` blocks are formed with torch
    (the upper-right one is the mirror of the lower-left), three quarters of a GEMM, on
    torch's own threads and device. ``x`` is ``N × d`` in float64 or float32 (then the
    product is formed in float32 and added into the float64 sum).
    """
    x = x.detach()
    if x.numel() == 0:  # no rows or no columns: nothing to add
        return
    if not _host_blas(out):
        h = x.shape[1] // 2
        if h < 64:
            add_product_(out, x.T, x)
            return
        A, B = x[:, :h], x[:, h:]
        add_product_(out[:h, :h], A.T, A)
        add_product_(out[h:, :h], B.T, A)
        add_product_(out[h:, h:], B.T, B)
        return
    if x.is_contiguous():
        a, trans = x.T.numpy(), 0  # d × N in Fortran order (no copy): C = a aᵀ
    elif x.mT.is_contiguous():
        a, trans = x.numpy(), 1  # N × d in Fortran order (a transposed view): C = aᵀ a
    else:
        a, trans = x.contiguous().T.numpy(), 0
    c = out.T.numpy()  # Fortran view of out: its upper triangle is out's lower one
    if x.dtype == torch.float64:
        res = scipy.linalg.blas.dsyrk(1.0, a, beta=1.0, c=c, trans=trans, lower=0, overwrite_c=1)
        if not np.shares_memory(res, c):
            c[...] = res
    else:
        tri = scipy.linalg.blas.ssyrk(1.0, a, trans=trans, lower=0)
        out += torch.from_numpy(np.ascontiguousarray(tri.T))


def centred_power_traces(M64: Tensor, shift: float) -> tuple[float, float]:
    """``tr D³`` and ``tr D⁴`` of ``D = M − shift·I`` for an exactly symmetric float64 ``M``.

    ``D² = DᵀD`` is formed as its lower triangle (:func:`add_gram_`: half a GEMM on the
    host); then ``tr D³ = ⟨D, D²⟩`` and ``tr D⁴ = ‖D²‖²``, each read from the triangle
    (off-diagonal entries twice). The shift is applied to a copy's diagonal only.
    """
    D = M64.clone()
    D.diagonal().sub_(shift)
    tri = torch.zeros_like(D)
    add_gram_(tri, D)
    low = torch.tril(tri)
    d_low, d_diag = low.diagonal(), D.diagonal()
    tr3 = 2.0 * float((D * low).sum()) - float((d_diag * d_low).sum())
    tr4 = 2.0 * float((low * low).sum()) - float((d_low * d_low).sum())
    return tr3, tr4


def gram(X: Tensor, *, mirror: bool = True) -> Tensor:
    """``XᵀX`` of a matrix or a batch of matrices, float64, from its lower triangle
    (:func:`add_gram_`).

    Exactly symmetric (the triangle mirrored); ``mirror=False`` leaves the upper triangle
    undefined, for a consumer that reads only the lower one (:func:`eigvalsh`).
    """
    X = X.to(torch.float64)
    flat = X.reshape(math.prod(X.shape[:-2]), *X.shape[-2:])
    c = flat.shape[-1]
    out = torch.zeros((flat.shape[0], c, c), dtype=torch.float64, device=X.device)
    for i in range(flat.shape[0]):
        add_gram_(out[i], flat[i])
        if mirror:
            mirror_lower_(out[i])
    return out.reshape(*X.shape[:-2], c, c)


def _with_vectors(M64: Tensor, values: Tensor, V: Tensor, note: str | None = None) -> Spectrum:
    """The :class:`Spectrum` of ``M64`` from its eigenpairs, in the canonical signs and ``c``."""
    V = _canonical_signs(V)
    return Spectrum(M64, values, V, _canonical_ones(values, V.sum(dim=0)), note)


def _checked(M: Tensor) -> Tensor:
    """``sym(M)`` in float64, after checking the shape and that every entry is finite."""
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise AnalysisError(f"expected a square matrix, got shape {tuple(M.shape)}")
    M64 = sym(M.detach().to(torch.float64))
    if not all_finite(M64):
        raise AnalysisError("matrix has non-finite entries")
    return M64


def spectrum(
    M: Tensor, *, vectors: bool = True, ones: bool = False, checked: bool = False
) -> Spectrum:
    """Eigendecompose ``sym(M)`` in float64, once.

    Three depths, each computing no more than it is asked for:

    * ``vectors=True`` (default): eigenvalues, eigenvectors and ``c = Vᵀ1`` (``eigh``);
    * ``vectors=False, ones=True``: eigenvalues and ``c = Vᵀ1`` only, what the fixed
      matrix of a Pearson rotation null needs (:func:`_values_and_ones`: on the CPU one
      tridiagonal reduction, about 0.6 of a full ``eigh``);
    * ``vectors=False, ones=False``: eigenvalues only (``eigvalsh``).

    On the CPU with torch on one thread the float64 decompositions run in SciPy's LAPACK
    (``syevd``, ``sytrd``, ``stemr``); otherwise in ``torch.linalg`` (``c`` then comes from
    a full ``eigh``).

    Exactly-zero rows (and so columns) are deflated first (:mod:`symtool.eigen`): only
    the block on the other rows is decomposed, and each zero row adds the eigenpair
    ``(0, e_j)`` — exact, not an approximation, and the case of im2col moments of 3×3
    kernels on 1×1 maps, where most rows are zero padding (docs/theory.md §7). A solver
    that fails falls back (:func:`symtool.eigen.robust`); the spectrum's ``note`` says how.

    Args:
        M: a square matrix (any float dtype, any device).
        vectors: also compute eigenvectors.
        ones: with ``vectors=False``, also compute ``c = Vᵀ1``.
        checked: ``M`` is already a finite, exactly symmetric float64 matrix (no check, no
            symmetrising copy).

    Returns:
        The :class:`Spectrum`, eigenvalues ascending.

    Raises:
        AnalysisError: ``M`` is not square, has non-finite entries, or every solver failed
            (the message names each attempt).
    """
    M64 = M.detach() if checked else _checked(M)
    support = eigen.zero_support(M64)
    sub = M64 if support is None else M64[support][:, support]
    values, V, c, note = _decompose(sub, vectors=vectors, ones=ones)
    if support is not None:
        values, V, c = eigen.embed(M64.shape[0], support, values, V, c)
    if V is not None:
        V = _canonical_signs(V)
        return Spectrum(M64, values, V, _canonical_ones(values, V.sum(dim=0)), note)
    if c is not None:
        return Spectrum(M64, values, None, _canonical_ones(values, c), note)
    return Spectrum(M64, values, None, None, note)


def _decompose(
    M64: Tensor, *, vectors: bool, ones: bool
) -> tuple[Tensor, Tensor | None, Tensor | None, str | None]:
    """``(values, vectors, c, note)`` of a finite symmetric float64 matrix, at the depth
    :func:`spectrum` describes; ``c`` is ``Vᵀ1`` before the canonical ones (or ``None``)."""
    cpu = _host_blas(M64)
    if vectors:
        w, V, note = eigen.robust_eigh(M64, cpu)
        return w, V, None, note
    if ones:
        if cpu:
            try:
                w, c = _values_and_ones(M64)
                return w, None, c, None
            except (RuntimeError, ValueError, np.linalg.LinAlgError):
                pass
        w, V, note = eigen.robust_eigh(M64, cpu)
        return w, None, _canonical_signs(V).sum(dim=0), note
    w, note = eigen.robust_eigvalsh(M64, cpu)
    return w, None, None, note


def eigvalsh(M: Tensor) -> Tensor:
    """Eigenvalues (ascending) of a symmetric float64 matrix or batch of matrices.

    Only the lower triangle is read (as ``torch.linalg.eigvalsh`` does). Finite CPU input,
    with torch on one thread, runs LAPACK ``syevd`` through SciPy, one matrix at a time
    (15–20% faster than ``torch.linalg.eigvalsh`` there, docs/performance.md), after
    deflating exactly-zero rows; anything else goes to ``torch.linalg.eigvalsh``, with its
    behaviour on non-finite input, and where that fails on finite input, one matrix at a
    time through :func:`symtool.eigen.values_of` (deflation and the fallback solvers).
    """
    host = _host_blas(M) and M.dtype == torch.float64 and all_finite(M)
    if not host:
        try:
            return torch.linalg.eigvalsh(M)
        except RuntimeError:
            if M.dtype != torch.float64 or not all_finite(M):
                raise
    n = M.shape[-1]
    flat = M.reshape(math.prod(M.shape[:-2]), n, n)
    out = torch.empty(flat.shape[:2], dtype=torch.float64, device=M.device)
    for i in range(flat.shape[0]):
        out[i] = eigen.values_of(full_from_lower(flat[i]), _host_blas(flat[i]))
    return out.reshape(M.shape[:-1])


def singular_values(
    m: Tensor,
    *,
    exact: bool = False,
    cuts: Sequence[float] = (),
    entropy_tol: float | None = None,
) -> Tensor:
    """Singular values (float64, descending) of a matrix or a batch of matrices.

    By default from ``eigvalsh`` of the Gram matrix on the smaller side, 1.9–2.5× faster
    than ``svdvals`` here. Its eigenvalues carry an absolute error of order
    ``√d·eps·σ_1²`` (``d`` the longer side), so the leading ``σ_k`` are exact to
    round-off but the smallest are resolved only to about ``1e-7·σ_1``. The result is
    used only where its error model says that is harmless (:func:`_gram_suffices`): no
    ratio ``σ_k/σ_1`` within its error of one of ``cuts``, and, with ``entropy_tol``, a
    worst-case effective-rank error below that relative tolerance. Otherwise, and with
    ``exact=True``, ``svdvals`` runs (on the tall orientation: LAPACK is several times
    slower on wide matrices).

    Args:
        m: a matrix or a batch of matrices (any float dtype).
        exact: always ``svdvals``.
        cuts: thresholds on ``σ_k/σ_1`` that the caller counts at.
        entropy_tol: largest relative error of the effective rank ``exp(−Σ p log p)``,
            ``p = σ/Σσ``, the caller accepts (None: not used).
    """
    m = m.to(torch.float64)
    tall = m.mT if m.shape[-2] < m.shape[-1] else m
    if exact:
        return torch.linalg.svdvals(tall)
    values = eigvalsh(gram(tall, mirror=False)).clamp_min(0.0).sqrt().flip(-1)  # lower triangle
    if (cuts or entropy_tol is not None) and not _gram_suffices(
        values, max(tall.shape[-2:]), cuts, entropy_tol
    ):
        return torch.linalg.svdvals(tall)
    return values


GRAM_ERROR = 4.0
"""``c`` in the error model ``δ = c·√d·eps·σ_1²`` of Gram eigenvalues (:func:`_gram_suffices`)."""


def _gram_suffices(
    values: Tensor, d: int, cuts: Sequence[float], entropy_tol: float | None
) -> bool:
    """Whether singular values from a Gram matrix (:func:`singular_values`) are exact enough.

    Error model: the Gram eigenvalues ``σ_k²`` are off by at most ``δ = 4·√d·eps·σ_1²``
    (measured: 8–58·eps·σ_1² for d = 768–3072, 2–7× under the model), so ``σ_k`` is known
    to ``Δ_k = δ/(2σ_k)``, or only to ``√δ`` when ``σ_k ≤ √δ`` (unresolved). Required: no
    ratio ``σ_k/σ_1`` within its error of a cut; and, with ``entropy_tol``, the worst-case
    relative error of the effective rank ``exp(H)``, ``H = −Σ p log p``, ``p = σ/S``, at
    most ``entropy_tol``: ``Σ Δ_k·|log p_k + 1|/S`` over resolved values, ``−a log a``
    with ``a = (σ_k + Δ_k)/S`` over unresolved ones, and ``(ΣΔ/S)·Σ p|log p + 1|`` for
    the change of ``S``. That sum exceeded the actual error by 10³–10⁶ wherever measured
    (docs/symmetry.md).
    """
    eps = float(torch.finfo(torch.float64).eps)
    v = values.reshape(-1, values.shape[-1])
    v = v[v[:, 0] > 0] if v.shape[-1] else v[:0]  # zero matrices: nothing to resolve
    if v.numel() == 0:
        return True
    s1 = v[:, :1]
    delta = GRAM_ERROR * math.sqrt(d) * eps * s1 * s1
    root = delta.sqrt()
    resolved = v > root
    err = torch.where(resolved, delta / (2.0 * torch.maximum(v, root)), root.expand_as(v))
    ratio, rerr = v / s1, (err + v * (err[:, :1] / s1)) / s1
    for cut in cuts:
        if bool(((ratio - cut).abs() <= rerr).any()):
            return False
    if entropy_tol is not None:
        total = v.sum(1, keepdim=True)
        p = v / total
        logp = torch.where(p > 0, p.log(), 0.0)
        h = torch.where(resolved, err * (logp + 1.0).abs(), 0.0).sum(1) / total[:, 0]
        a = ((v + err) / total).clamp(max=math.exp(-1.0))
        h = h + torch.where(resolved, 0.0, -a * a.log()).nan_to_num(0.0).sum(1)
        h = h + err.sum(1) / total[:, 0] * (p * (logp + 1.0).abs()).sum(1)
        if bool((h > entropy_tol).any()):
            return False
    return True


def _values_and_ones(M64: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues and ``|Vᵀ1|`` of a symmetric float64 CPU matrix, without its eigenvectors.

    A Householder reflection ``P`` maps ``1/√d`` to ``e₁``; LAPACK ``sytrd`` (lower) reduces
    ``P M P = Q T Qᵀ`` with ``Q e₁ = e₁``; with ``T = S Λ Sᵀ`` the eigenvectors of ``M`` are
    ``P Q s_j`` and ``v_jᵀ1 = √d · S₁ⱼ``: the first row of ``T``'s eigenvectors (``stemr``,
    O(d²)). Cost: one tridiagonal reduction, as for eigenvalues alone, plus O(d²).
    """
    a = M64.detach().numpy()
    d = a.shape[0]
    if d == 0:
        return M64.new_zeros(0), M64.new_zeros(0)
    if d == 1:
        return torch.from_numpy(a[0].copy()), torch.ones(1, dtype=torch.float64)
    u = np.full(d, 1.0 / math.sqrt(d))
    u[0] -= 1.0
    u /= np.linalg.norm(u)
    b = np.array(a, order="F")
    au = b @ u
    w = au - float(u @ au) * u
    b = scipy.linalg.blas.dsyr2(-2.0, u, w, lower=1, a=b, overwrite_a=1)  # P M P, lower part
    lwork, info = scipy.linalg.lapack.dsytrd_lwork(d, lower=1)
    _, diag, off, _, info = scipy.linalg.lapack.dsytrd(b, lower=1, lwork=int(lwork), overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"sytrd failed (info {info})")
    try:
        values, S = scipy.linalg.eigh_tridiagonal(
            diag, off, lapack_driver="stemr", check_finite=False
        )
    except np.linalg.LinAlgError:  # MRRR can fail to converge; QL iteration does not
        values, S = scipy.linalg.eigh_tridiagonal(diag, off, lapack_driver="stev")
    c = math.sqrt(d) * np.abs(S[0])
    return torch.from_numpy(np.ascontiguousarray(values)), torch.from_numpy(c)


def gram_pair(W: Tensor) -> tuple[Spectrum, Spectrum]:
    """Spectra of ``Z_a = WᵀW`` and ``Z_b = WWᵀ`` from one ``eigh`` (docs/theory.md §1).

    Both share the non-zero eigenvalues ``σ_i²``; with ``Z_small v_i = σ_i² v_i`` on the
    smaller side, ``u_i = X v_i / σ_i`` (``X = W`` or ``Wᵀ``) are the other side's
    eigenvectors, and an orthonormal completion (Householder QR) spans its null space, whose
    eigenvalues are 0. Pairs with ``σ_i² ≤ d·eps·max σ²`` (zero to round-off) join the null
    space. ``u_i`` is as accurate as ``eigh`` of the bigger matrix would make it: its error
    ``eps·σ_max/σ_i`` is below ``eigh``'s ``eps·σ_max²/gap`` for every kept pair.

    Args:
        W: the layer's ``d_out × d_in`` weight (finite).

    Returns:
        ``(Z_a, Z_b)``, both with eigenvectors.

    Raises:
        AnalysisError: a decomposition failed.
    """
    W64 = W.detach().to(torch.float64)
    Za, Zb = _checked(gram(W64)), _checked(gram(W64.T))
    a_small = Za.shape[0] <= Zb.shape[0]
    small = spectrum(Za if a_small else Zb)
    X = W64 if a_small else W64.T  # small-side vectors → big-side vectors
    big_M = Zb if a_small else Za
    assert small.vectors is not None
    z = small.values
    zmax = float(z.abs().max()) if z.numel() else 0.0
    keep = z > z.numel() * torch.finfo(torch.float64).eps * zmax
    n_keep = int(keep.sum())
    U = (X @ small.vectors[:, keep]) / torch.sqrt(z[keep])
    d_big = big_M.shape[0]
    if n_keep < d_big:
        Q, _ = torch.linalg.qr(U, mode="complete")
        U = torch.cat([Q[:, n_keep:], U], dim=1)
    values = torch.zeros(d_big, dtype=torch.float64, device=z.device)
    values[d_big - n_keep :] = z[keep]
    big = _with_vectors(big_M, values, U.contiguous(), small.note)
    return (small, big) if a_small else (big, small)


_CLUSTER_REL = 1e-9
"""Eigenvalues closer than this (relative to ``max |λ|``) form one eigenspace."""


def _canonical_ones(values: Tensor, c: Tensor) -> Tensor:
    """``c = Vᵀ1`` made independent of the basis chosen inside (near-)degenerate eigenspaces.

    Within a cluster of equal eigenvalues the eigenvectors are decided by round-off (a
    rank-deficient ``H_b`` has a whole null space of them), and so would be ``c`` there.
    Rotating the cluster's basis so that ``1`` projects onto its first vector alone gives
    ``(‖c_G‖, 0, …, 0)``: the same for every basis of that eigenspace. Entry sums and the
    rotation null then no longer change with round-off.

    A cluster spans at most ``1e-9 · max|λ|`` from its first value (a chain of small gaps is
    cut there), so ``c``-mass never moves further than that along the spectrum.
    """
    d = values.shape[0]
    if d < 2:
        return c
    tol = _CLUSTER_REL * float(values.abs().max())
    breaks = torch.nonzero(values.diff() > tol).flatten().tolist()
    starts = [0] + [b + 1 for b in breaks]
    ends = [*(b + 1 for b in breaks), d]
    if len(starts) == d:
        return c
    out = c.clone()
    for lo, hi in zip(starts, ends, strict=True):
        if hi - lo < 2:
            continue
        vals = values[lo:hi].tolist()
        i = 0
        while i < hi - lo:
            j = i + 1
            while j < hi - lo and vals[j] - vals[i] <= tol:
                j += 1
            if j - i > 1:
                out[lo + i : lo + j] = 0.0
                out[lo + i] = c[lo + i : lo + j].norm()
            i = j
    return out


def _canonical_signs(V: Tensor) -> Tensor:
    """Flip eigenvector columns so each has entry sum ≥ 0 (ties: largest entry positive).

    A tie is ``|Σ v| ≤ 1e-12 · d · max|v|``; as ``max|v| ≤ 1`` for a unit column, only the
    columns with ``|Σ v| ≤ 1e-12 · d`` are examined for it.
    """
    if V.numel() == 0:
        return V
    d = V.shape[0]
    col_sum = V.sum(dim=0)
    sign = torch.sign(col_sum)
    maybe = torch.nonzero(col_sum.abs() <= 1e-12 * d).flatten()
    if maybe.numel():
        sub = V[:, maybe]
        scale = sub.abs().amax(dim=0)
        peak = sub.gather(0, sub.abs().argmax(dim=0).unsqueeze(0)).squeeze(0)
        tie = col_sum[maybe].abs() <= 1e-12 * scale * d
        sign[maybe] = torch.where(tie, torch.sign(peak), sign[maybe])
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return V * sign


def kept_support(values: Tensor, floor: float) -> Tensor:
    """Mask of the kept entries ``values_i > floor · max values`` (docs/theory.md §4).

    When the largest value is not above the float64 round-off floor
    ``n · eps · max |values|`` (a negative semidefinite matrix whose zero eigenvalues came
    out slightly positive), nothing is kept.
    """
    if values.numel() == 0:
        return torch.zeros_like(values, dtype=torch.bool)
    vmax = float(values.max())
    noise = values.numel() * torch.finfo(torch.float64).eps * float(values.abs().max())
    if vmax <= 0.0 or vmax <= noise:
        return torch.zeros_like(values, dtype=torch.bool)
    return values > floor * vmax
