"""Alignment scores, the spectrum-preserving rotation null, and eigen-based matrix powers.

theory.md section 3 (alignment score ``α`` and its Haar-rotation null), section 4
(fractional powers on a kept support) and section 7 (float64, determinism, no NaN in a
record).

Every matrix is eigendecomposed once (:func:`spectrum`); the null and the power fits reuse
that :class:`Spectrum`. With ``A = V_A diag(a) V_Aᵀ``, ``B = V_B diag(λ) V_Bᵀ`` and
``O = V_Aᵀ Q V_B`` (Haar whenever ``Q`` is), the rotated matrix ``Q B Qᵀ`` enters the score
only through

* ``⟨A, Q B Qᵀ⟩_F = aᵀ (O∘O) λ``,
* ``1ᵀ Q B Qᵀ 1 = Σ_k λ_k (cᵀ O)_k²`` with ``c = V_Aᵀ 1``,
* ``‖Q B Qᵀ‖_F = ‖B‖_F``,

so a null sample costs O(d²) once a Haar ``O`` is at hand. :class:`HaarBank` draws those
``O`` once per dimension and run and caches them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from symtool.errors import AnalysisError, UsageError

Tensor = torch.Tensor

METRICS = ("pearson", "cosine")
"""Alignment metrics ``α`` accepts."""

_UNDEFINED_REL = 1e-12
"""A matrix whose (centred, for Pearson) Frobenius norm is at most this fraction of its
plain Frobenius norm counts as constant (Pearson) or zero (cosine): the score is undefined."""

_SEED_MIX = 0x9E3779B97F4A7C15
_SEED_MASK = (1 << 63) - 1


def sym(M: Tensor) -> Tensor:
    """Symmetric part ``(M + Mᵀ)/2`` of a square matrix."""
    return (M + M.transpose(-1, -2)) / 2


@dataclass(frozen=True, eq=False)
class Spectrum:
    """One eigendecomposition of a symmetric matrix, float64, reused by every analysis.

    Attributes:
        matrix: the symmetrised float64 matrix ``sym(M)`` that was decomposed.
        values: eigenvalues in **ascending** order (as ``torch.linalg.eigh`` returns them).
        vectors: orthonormal eigenvectors as columns, ``matrix = V diag(values) Vᵀ``; each
            column's sign is fixed so its entry sum is ``≥ 0`` (ties: largest-magnitude entry
            positive), which makes results independent of the solver's sign choice.
        ones: ``c = Vᵀ 1``, the all-ones vector in the eigenbasis (entry sums need it);
            inside a degenerate eigenspace, all of it sits on the space's first vector
            (see :func:`_canonical_ones`).

    ``vectors`` and ``ones`` are ``None`` for a values-only spectrum
    (``spectrum(M, vectors=False)``): enough for the rotated side of a null, at a third of
    the cost of a full ``eigh``.
    """

    matrix: Tensor
    values: Tensor
    vectors: Tensor | None
    ones: Tensor | None

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

    def rayleigh(self, M: Tensor) -> Tensor:
        """Rayleigh quotients ``m_i = v_iᵀ M v_i`` of ``M`` in this eigenbasis (one GEMM)."""
        V = self.vectors
        if V is None:
            raise AnalysisError("this spectrum was computed without eigenvectors")
        M64 = sym(M.to(dtype=torch.float64, device=V.device))
        return ((M64 @ V) * V).sum(dim=0)


def spectrum(M: Tensor, *, vectors: bool = True) -> Spectrum:
    """Eigendecompose ``sym(M)`` in float64, once.

    Args:
        M: a square matrix (any float dtype, any device).
        vectors: also compute eigenvectors (``False``: eigenvalues only, ``eigvalsh``).

    Returns:
        The :class:`Spectrum`, eigenvalues ascending.

    Raises:
        AnalysisError: ``M`` is not square, has non-finite entries, or ``eigh`` fails.
    """
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise AnalysisError(f"expected a square matrix, got shape {tuple(M.shape)}")
    M64 = sym(M.to(torch.float64))
    if not bool(torch.isfinite(M64).all()):
        raise AnalysisError("matrix has non-finite entries")
    try:
        if not vectors:
            return Spectrum(M64, torch.linalg.eigvalsh(M64), None, None)
        values, V = torch.linalg.eigh(M64)
    except RuntimeError as exc:  # torch.linalg.LinAlgError subclasses RuntimeError
        raise AnalysisError(f"eigh failed: {exc}") from exc
    V = _canonical_signs(V)
    ones = _canonical_ones(values, V.sum(dim=0))
    return Spectrum(matrix=M64, values=values, vectors=V, ones=ones)


_CLUSTER_REL = 1e-9
"""Eigenvalues closer than this (relative to ``max |λ|``) form one eigenspace."""


def _canonical_ones(values: Tensor, c: Tensor) -> Tensor:
    """``c = Vᵀ1`` made independent of the basis chosen inside (near-)degenerate eigenspaces.

    Within a cluster of equal eigenvalues the eigenvectors are decided by round-off (a
    rank-deficient ``H_b`` has a whole null space of them), and so would be ``c`` there.
    Rotating the cluster's basis so that ``1`` projects onto its first vector alone gives
    ``(‖c_G‖, 0, …, 0)``: the same for every basis of that eigenspace. Entry sums and the
    rotation null then no longer change with round-off.
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
        if hi - lo > 1:
            out[lo:hi] = 0.0
            out[lo] = c[lo:hi].norm()
    return out


def _canonical_signs(V: Tensor) -> Tensor:
    """Flip eigenvector columns so each has entry sum ≥ 0 (ties: largest entry positive)."""
    if V.numel() == 0:
        return V
    col_sum = V.sum(dim=0)
    scale = V.abs().amax(dim=0)
    idx = V.abs().argmax(dim=0)
    peak = V.gather(0, idx.unsqueeze(0)).squeeze(0)
    tie = col_sum.abs() <= 1e-12 * scale * V.shape[0]
    sign = torch.where(tie, torch.sign(peak), torch.sign(col_sum))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return V * sign


def kept_support(values: Tensor, floor: float) -> Tensor:
    """Mask of the kept entries ``values_i > floor · max values`` (theory.md section 4).

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


def matrix_power(s: Spectrum, p: float, *, floor: float = 1e-8) -> Tensor:
    """Fractional power ``Σ_{i kept} z_i^p v_i v_iᵀ`` of a PSD matrix on its kept support.

    Kept eigenpairs have ``z_i > floor · max z`` (theory.md section 4, see
    :func:`kept_support`); the rest, including any negative eigenvalues, contribute zero, so
    negative ``p`` is a pseudo-inverse power.

    Args:
        s: the matrix's spectrum.
        p: the exponent (any real).
        floor: relative eigenvalue floor ``ε``.

    Returns:
        The dense ``d × d`` float64 matrix (all zeros when no eigenvalue is positive).
    """
    z = s.values
    V = s.vectors
    keep = kept_support(z, floor)
    zp = torch.zeros_like(z)
    zp[keep] = z[keep] ** p
    return (V * zp) @ V.T


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise UsageError(f"unknown alignment metric {metric!r}; choose one of {METRICS}")


def alignment(A: Tensor, B: Tensor, metric: str = "pearson") -> float | None:
    """Alignment score ``α(A, B)`` of two same-shape matrices (theory.md section 3).

    ``pearson``: correlation of all entries, flattened. ``cosine``: ``⟨A, B⟩_F/(‖A‖_F ‖B‖_F)``.
    Computed in float64 and clipped to ``[-1, 1]``.

    Args:
        A: first matrix.
        B: second matrix, same shape as ``A``.
        metric: ``"pearson"`` or ``"cosine"``.

    Returns:
        The score, or ``None`` when it is undefined: a non-finite entry, or a matrix that is
        constant (Pearson) or zero (cosine) up to a relative ``1e-12``.

    Raises:
        UsageError: unknown metric.
        AnalysisError: the shapes differ.
    """
    _check_metric(metric)
    if A.shape != B.shape:
        raise AnalysisError(
            f"alignment needs equal shapes, got {tuple(A.shape)} and {tuple(B.shape)}"
        )
    a = A.to(torch.float64).reshape(-1)
    b = B.to(dtype=torch.float64, device=a.device).reshape(-1)
    if a.numel() == 0 or not bool(torch.isfinite(a).all() & torch.isfinite(b).all()):
        return None
    norm_a = float(torch.linalg.vector_norm(a))
    norm_b = float(torch.linalg.vector_norm(b))
    if metric == "pearson":
        a = a - a.mean()
        b = b - b.mean()
    da = float(torch.linalg.vector_norm(a))
    db = float(torch.linalg.vector_norm(b))
    if da <= _UNDEFINED_REL * norm_a or db <= _UNDEFINED_REL * norm_b or da == 0 or db == 0:
        return None
    value = float(torch.dot(a, b)) / (da * db)
    return min(1.0, max(-1.0, value))


class HaarBank:
    """Seeded, cached Haar-random orthogonal matrices, K per dimension, shared by a run.

    Every relation, layer and checkpoint of one run draws its rotations from the same bank,
    so their nulls use the same rotations and the report is deterministic for a seed. Each
    dimension ``d`` has its own generator seeded from ``(seed, d)``: the matrices for ``d``
    do not depend on which other dimensions were asked for first, and asking for more
    samples later extends the list without changing the first ones.

    Memory: ``K · d² · 8`` bytes per dimension (16 samples of 1024² take 128 MiB).

    Args:
        seed: the run's seed.
        samples: default number ``K`` of matrices per dimension.
    """

    def __init__(self, seed: int = 0, samples: int = 16) -> None:
        if samples < 0:
            raise UsageError(f"null samples must be ≥ 0, got {samples}")
        self.seed = int(seed)
        self.samples = int(samples)
        self._cache: dict[int, Tensor] = {}
        self._gens: dict[int, torch.Generator] = {}
        self._on_device: dict[tuple[int, str], Tensor] = {}
        self._squares: dict[tuple[int, str], Tensor] = {}

    def squares(self, d: int, k: int | None = None, device: torch.device | str = "cpu") -> Tensor:
        """``O ∘ O`` of :meth:`get`'s matrices, computed once per dimension and device.

        Every relation's null reads these (``aᵀ (O∘O) λ``); caching them doubles the bank's
        memory but saves a ``K·d²`` pass per relation.
        """
        k = self.samples if k is None else int(k)
        O = self.get(d, k, device)
        key = (d, str(torch.device(device)))
        have = self._squares.get(key)
        if have is None or have.shape[0] < k:
            have = O * O
            self._squares[key] = have
        return have[:k]

    def _generator(self, d: int) -> torch.Generator:
        gen = self._gens.get(d)
        if gen is None:
            gen = torch.Generator(device="cpu")
            gen.manual_seed(((self.seed * _SEED_MIX) ^ (d * 0x632BE59BD9B4E019)) & _SEED_MASK)
            self._gens[d] = gen
        return gen

    def get(self, d: int, k: int | None = None, device: torch.device | str = "cpu") -> Tensor:
        """The first ``k`` Haar matrices of side ``d``, shape ``(k, d, d)``, float64.

        Args:
            d: side length.
            k: how many (default: the bank's ``samples``).
            device: where the returned tensor lives (drawn on CPU, copied once per device).
        """
        k = self.samples if k is None else int(k)
        have = self._cache.get(d)
        n_have = 0 if have is None else int(have.shape[0])
        if n_have < k:
            new = haar_orthogonal(d, k - n_have, self._generator(d))
            have = new if have is None else torch.cat([have, new])
            self._cache[d] = have
            self._on_device = {key: v for key, v in self._on_device.items() if key[0] != d}
            self._squares = {key: v for key, v in self._squares.items() if key[0] != d}
        assert have is not None
        dev = torch.device(device)
        if dev.type == "cpu":
            return have[:k]
        key = (d, str(dev))
        moved = self._on_device.get(key)
        if moved is None:
            moved = have.to(dev)
            self._on_device[key] = moved
        return moved[:k]


def haar_orthogonal(d: int, k: int, generator: torch.Generator) -> Tensor:
    """Draw ``k`` Haar-distributed ``d × d`` orthogonal matrices (float64, CPU).

    QR of a standard Gaussian matrix with the sign fix ``Q · sign(diag R)`` (without it the
    distribution is not Haar).
    """
    X = torch.randn((k, d, d), generator=generator, dtype=torch.float64)
    Q, R = torch.linalg.qr(X)
    signs = torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return (Q * signs.unsqueeze(-2)).contiguous()  # row-major: free reshapes downstream


@dataclass(frozen=True)
class NullStats:
    """Spectrum-preserving rotation null of one score (theory.md section 3).

    Attributes:
        mean: mean of ``α(A, Q B Qᵀ)`` over the defined samples.
        std: their sample standard deviation (ddof = 1).
        z: ``(α − mean)/std``.
        samples: how many rotated samples had a defined score.
        reason: why a field is ``None``, else ``None``.
    """

    mean: float | None
    std: float | None
    z: float | None
    samples: int = 0
    reason: str | None = None


def rotated_alignments(
    A: Spectrum,
    B: Spectrum,
    O: Tensor,
    metric: str = "pearson",
    squares: Tensor | None = None,
) -> Tensor:
    """Scores ``α(A, Q B Qᵀ)`` for ``Q = V_A O V_Bᵀ``, one per ``O`` in a batch, in O(K d²).

    Only ``A``'s eigenvectors enter (through ``c = V_Aᵀ1``); ``B`` may be values-only.

    Args:
        A: spectrum of the fixed matrix (with eigenvectors).
        B: spectrum of the rotated matrix (same side length).
        O: ``(K, d, d)`` orthogonal matrices (Haar ones give the null).
        metric: ``"pearson"`` or ``"cosine"``.
        squares: ``O ∘ O`` if already at hand (:meth:`HaarBank.squares`).

    Returns:
        float64 tensor of length K; an undefined score is ``NaN`` here (internal only:
        :func:`rotation_null` drops them before anything reaches a record).
    """
    _check_metric(metric)
    if A.dim != B.dim:
        raise AnalysisError(f"null needs equal sizes, got {A.dim} and {B.dim}")
    if A.ones is None:
        raise AnalysisError("the fixed side of a null needs eigenvectors")
    a = A.values
    lam = B.values.to(a.device)
    O = O.to(device=a.device, dtype=torch.float64)
    P = O * O if squares is None else squares.to(device=a.device, dtype=torch.float64)
    k, d, _ = P.shape
    inner = (P.reshape(k * d, d) @ lam).reshape(k, d) @ a  # aᵀ (O∘O) λ per sample
    nb_sq = B.frob_sq
    na_sq = A.frob_sq
    if metric == "cosine":
        num = inner
        den_sq_a = torch.full_like(inner, na_sq)
        den_sq_b = torch.full_like(inner, nb_sq)
        lim_a, lim_b = na_sq, nb_sq
    else:
        n = float(A.dim) ** 2
        co = A.ones @ O  # cᵀ O per sample
        sum_b = (co * co) @ lam
        sum_a = A.entry_sum
        num = inner - sum_a * sum_b / n
        den_sq_a = torch.full_like(inner, na_sq - sum_a * sum_a / n)
        den_sq_b = nb_sq - sum_b * sum_b / n
        lim_a, lim_b = na_sq, nb_sq
    tol = _UNDEFINED_REL**2
    ok = (den_sq_a > tol * lim_a) & (den_sq_b > tol * lim_b) & (den_sq_a > 0) & (den_sq_b > 0)
    den = torch.sqrt(den_sq_a.clamp_min(0.0) * den_sq_b.clamp_min(0.0))
    out = torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.nan)
    return out.clamp(-1.0, 1.0)


def rotation_null(
    A: Spectrum,
    B: Spectrum,
    alpha: float | None,
    *,
    bank: HaarBank,
    samples: int | None = None,
    metric: str = "pearson",
) -> NullStats:
    """Null mean, std and z of ``α(A, B)`` under Haar rotations of ``B`` (theory.md section 3).

    Args:
        A: spectrum of the fixed matrix.
        B: spectrum of the rotated matrix.
        alpha: the observed score (``None`` gives ``z = None``).
        bank: the run's shared :class:`HaarBank`.
        samples: number K of rotations (default: the bank's).
        metric: ``"pearson"`` or ``"cosine"``.

    Returns:
        :class:`NullStats`; ``std`` and ``z`` are ``None`` with fewer than two defined
        samples, ``z`` is ``None`` when the null has zero spread (std ≤ 1e-12).
    """
    k = bank.samples if samples is None else int(samples)
    if k <= 0:
        return NullStats(None, None, None, 0, "null disabled (0 samples)")
    if A.vectors is None and B.vectors is not None:
        A, B = B, A  # α and its Haar null are symmetric in the two matrices
    if A.vectors is None:
        A = spectrum(A.matrix)
    O = bank.get(A.dim, k, device=A.values.device)
    vals = rotated_alignments(A, B, O, metric, bank.squares(A.dim, k, device=A.values.device))
    vals = vals[~torch.isnan(vals)]
    n = int(vals.numel())
    if n == 0:
        return NullStats(None, None, None, 0, "every rotated score is undefined")
    mean = float(vals.mean())
    if n < 2:
        return NullStats(mean, None, None, n, "fewer than two defined null samples")
    std = float(vals.std(unbiased=True))
    if alpha is None:
        return NullStats(mean, std, None, n, "observed alignment is undefined")
    if std <= 1e-12:
        return NullStats(mean, std, None, n, "null has zero spread (rotation-invariant pair)")
    return NullStats(mean, std, (alpha - mean) / std, n, None)
