"""The alignment score α and its spectrum-preserving rotation null (docs/theory.md §3).

Ziyin, Chuang, Galanti, Poggio, *Formation of Representations in Neural Networks* (ICLR
2025, arXiv 2410.03006). Every matrix is eigendecomposed once
(:func:`symtool.linalg.spectrum`); the sampled null reuses that :class:`Spectrum`. With
``A = V_A diag(a) V_Aᵀ``, ``B = V_B diag(λ) V_Bᵀ`` and ``O = V_Aᵀ Q V_B`` (Haar whenever
``Q`` is), the rotated matrix ``Q B Qᵀ`` enters the score only through

* ``⟨A, Q B Qᵀ⟩_F = aᵀ (O∘O) λ``,
* ``1ᵀ Q B Qᵀ 1 = Σ_k λ_k (cᵀ O)_k²`` with ``c = V_Aᵀ 1``,
* ``‖Q B Qᵀ‖_F = ‖B‖_F``,

so a null sample costs O(d²) once a Haar ``O`` is at hand. :class:`HaarBank` draws those
``O`` once per dimension and run and caches them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from symtool.errors import AnalysisError, UsageError
from symtool.linalg import Spectrum, all_finite, spectrum

Tensor = torch.Tensor

METRICS = ("pearson", "cosine")
"""Alignment metrics ``α`` accepts."""

UNDEFINED_REL = 1e-12
"""A matrix whose (centred, for Pearson) Frobenius norm is at most this fraction of its
plain Frobenius norm counts as constant (Pearson) or zero (cosine): the score is undefined."""

_BLOCK_ENTRIES = 1 << 18
"""Entries per block of :func:`alignment`'s passes (2 MiB float64 temporaries)."""

_SEED_MIX = 0x9E3779B97F4A7C15
_SEED_MASK = (1 << 63) - 1


def check_metric(metric: str) -> None:
    """Raise :class:`UsageError` naming the metrics when ``metric`` is not one of them."""
    if metric not in METRICS:
        raise UsageError(f"unknown alignment metric {metric!r}; choose one of {METRICS}")


Known = tuple[tuple[float, float, float], tuple[float, float, float]]
"""``((‖A‖², 1ᵀA1, ‖A − mean(A)‖²), (the same for B))``, as :class:`~symtool.align.null.Invariants`
hold them."""


def alignment(
    A: Tensor,
    B: Tensor,
    metric: str = "pearson",
    *,
    assume_finite: bool = False,
    known: Known | None = None,
) -> float | None:
    """Alignment score ``α(A, B)`` of two same-shape matrices (docs/theory.md §3).

    ``pearson``: correlation of all entries, flattened. ``cosine``: ``⟨A, B⟩_F/(‖A‖_F ‖B‖_F)``.
    Computed in float64 and clipped to ``[-1, 1]``.

    Args:
        A: first matrix.
        B: second matrix, same shape as ``A``.
        metric: ``"pearson"`` or ``"cosine"``.
        assume_finite: skip the finiteness check (the matrices of a :class:`Spectrum`
            were checked when it was made).
        known: each matrix's squared norm, entry sum and centred squared norm when already
            computed (the exact null's invariants): the score then reads the pair once.

    Returns:
        The score, or ``None`` when it is undefined: a non-finite entry, or a matrix that is
        constant (Pearson) or zero (cosine) up to a relative ``1e-12``.

    Raises:
        UsageError: unknown metric.
        AnalysisError: the shapes differ.
    """
    check_metric(metric)
    if A.shape != B.shape:
        raise AnalysisError(
            f"alignment needs equal shapes, got {tuple(A.shape)} and {tuple(B.shape)}"
        )
    a = A.detach().to(torch.float64)
    b = B.detach().to(dtype=torch.float64, device=a.device)
    if a.numel() == 0:
        return None
    if not assume_finite and not (all_finite(a) and all_finite(b)):
        return None
    cols = a.shape[-1] if a.ndim > 1 else a.numel()
    a2, b2 = a.reshape(-1, cols), b.reshape(-1, cols)
    step = max(1, _BLOCK_ENTRIES // max(cols, 1))
    blocks = [(a2[i : i + step], b2[i : i + step]) for i in range(0, a2.shape[0], step)]
    pearson = metric == "pearson"
    if known is None:  # one pass for the plain norms and sums
        first = torch.stack(
            [torch.stack([_norm2(x), _norm2(y), x.sum(), y.sum()]) for x, y in blocks]
        ).sum(dim=0)
        norm_a2, norm_b2, sum_a, sum_b = (float(v) for v in first)
    else:
        (norm_a2, sum_a, _), (norm_b2, sum_b, _) = known
    mean_a, mean_b = (sum_a / a.numel(), sum_b / b.numel()) if pearson else (0.0, 0.0)
    # one pass for the product (and, unless known, the centred norms); partial sums stay on
    # the device until the end (one host sync per score)
    second = []
    for x, y in blocks:  # centred in blocks: temporaries of _BLOCK_ENTRIES, not A's size
        xc, yc = (x - mean_a, y - mean_b) if pearson else (x, y)
        terms = [torch.dot(xc.reshape(-1), yc.reshape(-1)), xc.sum(), yc.sum()]
        if known is None:
            terms += [_norm2(xc), _norm2(yc)]
        second.append(torch.stack(terms))
    sums = [float(v) for v in torch.stack(second).sum(dim=0)]
    dot, ra, rb = sums[:3]
    if known is None:
        da2, db2 = sums[3:]
    elif pearson:
        da2, db2 = known[0][2], known[1][2]
    else:
        da2, db2 = norm_a2, norm_b2
    if pearson:
        # the residual sums Σ(x − mean) correct the rounded means (a two-pass mean)
        dot -= ra * rb / a.numel()
        if known is None:
            da2 -= ra * ra / a.numel()
            db2 -= rb * rb / b.numel()
    da, db = math.sqrt(max(da2, 0.0)), math.sqrt(max(db2, 0.0))
    norm_a, norm_b = math.sqrt(norm_a2), math.sqrt(norm_b2)
    if da <= UNDEFINED_REL * norm_a or db <= UNDEFINED_REL * norm_b or da == 0 or db == 0:
        return None
    value = dot / (da * db)
    return min(1.0, max(-1.0, value))


def _norm2(x: Tensor) -> Tensor:
    """``‖x‖²`` as a 0-d tensor, from the overflow-safe norm."""
    return torch.linalg.vector_norm(x) ** 2


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
    distribution is not Haar), returned transposed (the inverse of a Haar matrix is Haar).
    """
    out = torch.empty((k, d, d), dtype=torch.float64)
    for i in range(k):  # one at a time: the transient is 3 d² numbers, not 3 K d²
        Q, R = torch.linalg.qr(torch.randn((d, d), generator=generator, dtype=torch.float64))
        signs = torch.sign(torch.diagonal(R))
        signs = torch.where(signs == 0, torch.ones_like(signs), signs)
        # (Q · diag(signs))ᵀ, Haar as well: LAPACK's Q is column-major, so its transpose is
        # written row-major by this one multiplication
        torch.mul(Q.mT, signs.unsqueeze(-1), out=out[i])
    return out


@dataclass(frozen=True)
class NullStats:
    """Spectrum-preserving rotation null of one score (docs/theory.md §3).

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


def _fixed_products(
    fixed: Sequence[Spectrum], O: Tensor, metric: str
) -> tuple[Tensor, Tensor | None]:
    """``aᵀ (O_k∘O_k)`` and (Pearson) ``cᵀ O_k`` of every fixed matrix: one pass over the bank.

    ``O_k∘O_k`` is formed one ``k`` at a time (``d²`` transient), so the bank holds only the
    ``O_k``. Returns ``(u, co)`` of shape ``(K, m, d)`` for the ``m`` fixed spectra.
    """
    a = torch.stack([f.values for f in fixed])
    c = None
    if metric == "pearson":
        if any(f.ones is None for f in fixed):
            raise AnalysisError("the fixed side of a Pearson null needs c = Vᵀ1")
        c = torch.stack([f.ones for f in fixed if f.ones is not None]).to(a.device)
    k, d, _ = O.shape
    u = torch.empty((k, a.shape[0], d), dtype=torch.float64, device=a.device)
    co = None if c is None else torch.empty_like(u)
    for i in range(k):
        Oi = O[i]
        torch.matmul(a, Oi * Oi, out=u[i])
        if co is not None and c is not None:
            torch.matmul(c, Oi, out=co[i])
    return u, co


def _scores(A: Spectrum, B: Spectrum, u: Tensor, co: Tensor | None, metric: str) -> Tensor:
    """``α(A, Q B Qᵀ)`` per sample from ``u = aᵀ(O∘O)`` and ``co = cᵀO`` (each ``K × d``)."""
    lam = B.values.to(u.device)
    inner = u @ lam  # aᵀ (O∘O) λ per sample
    nb_sq = B.frob_sq
    na_sq = A.frob_sq
    if co is None:
        num = inner
        den_sq_a = torch.full_like(inner, na_sq)
        den_sq_b = torch.full_like(inner, nb_sq)
    else:
        n = float(A.dim) ** 2
        sum_b = (co * co) @ lam  # 1ᵀ Q B Qᵀ 1
        sum_a = A.entry_sum
        num = inner - sum_a * sum_b / n
        den_sq_a = torch.full_like(inner, na_sq - sum_a * sum_a / n)
        den_sq_b = nb_sq - sum_b * sum_b / n
    tol = UNDEFINED_REL**2
    ok = (den_sq_a > tol * na_sq) & (den_sq_b > tol * nb_sq) & (den_sq_a > 0) & (den_sq_b > 0)
    den = torch.sqrt(den_sq_a.clamp_min(0.0) * den_sq_b.clamp_min(0.0))
    out = torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.nan)
    return out.clamp(-1.0, 1.0)


def rotated_alignments(
    A: Spectrum,
    B: Spectrum,
    O: Tensor,
    metric: str = "pearson",
) -> Tensor:
    """Scores ``α(A, Q B Qᵀ)`` for ``Q = V_A O V_Bᵀ``, one per ``O`` in a batch, in O(K d²).

    Neither matrix's eigenvectors enter: ``A`` needs its eigenvalues and (Pearson)
    ``c = V_Aᵀ1``, ``B`` its eigenvalues.

    Args:
        A: spectrum of the fixed matrix.
        B: spectrum of the rotated matrix (same side length).
        O: ``(K, d, d)`` orthogonal matrices (Haar ones give the null).
        metric: ``"pearson"`` or ``"cosine"``.

    Returns:
        float64 tensor of length K; an undefined score is ``NaN`` here (internal only:
        :func:`rotation_null` drops them before anything reaches a record).
    """
    check_metric(metric)
    if A.dim != B.dim:
        raise AnalysisError(f"null needs equal sizes, got {A.dim} and {B.dim}")
    if metric == "pearson" and A.ones is None:
        raise AnalysisError("the fixed side of a Pearson null needs c = Vᵀ1")
    dev = A.values.device
    O = O.to(device=dev, dtype=torch.float64)
    u, co = _fixed_products([A], O, metric)
    return _scores(A, B, u[:, 0], None if co is None else co[:, 0], metric)


def _stats(vals: Tensor, alpha: float | None) -> NullStats:
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


def rotation_nulls(
    pairs: Sequence[tuple[Spectrum, Spectrum, float | None]],
    *,
    bank: HaarBank,
    samples: int | None = None,
    metric: str = "pearson",
) -> list[NullStats]:
    """:func:`rotation_null` of many ``(A, B, α)`` at once (a layer's eight relations).

    The bank is read once per side length for all pairs: ``aᵀ(O∘O)`` and ``cᵀO`` are
    computed for every distinct fixed matrix ``A`` in one batched product, and each pair then
    costs O(K d). A fixed matrix without ``c`` (Pearson) gets it from its matrix here.
    """
    check_metric(metric)
    k = bank.samples if samples is None else int(samples)
    if k <= 0:
        return [NullStats(None, None, None, 0, "null disabled (0 samples)") for _ in pairs]
    fixed: dict[int, Spectrum] = {}
    for A, B, _ in pairs:
        if A.dim != B.dim:
            raise AnalysisError(f"null needs equal sizes, got {A.dim} and {B.dim}")
        if id(A) not in fixed:
            if metric == "pearson" and A.ones is None:
                fixed[id(A)] = spectrum(A.matrix, vectors=False, ones=True)
            else:
                fixed[id(A)] = A
    prods: dict[int, tuple[Tensor, Tensor | None, int]] = {}
    by_dim: dict[int, list[int]] = {}
    for key, A in fixed.items():
        by_dim.setdefault(A.dim, []).append(key)
    for d, keys in by_dim.items():
        dev = fixed[keys[0]].values.device
        O = bank.get(d, k, device=dev)
        u, co = _fixed_products([fixed[key] for key in keys], O, metric)
        for i, key in enumerate(keys):
            prods[key] = (u, co, i)
    out = []
    for A, B, alpha in pairs:
        u, co, i = prods[id(A)]
        vals = _scores(fixed[id(A)], B, u[:, i], None if co is None else co[:, i], metric)
        out.append(_stats(vals, alpha))
    return out


def rotation_null(
    A: Spectrum,
    B: Spectrum,
    alpha: float | None,
    *,
    bank: HaarBank,
    samples: int | None = None,
    metric: str = "pearson",
) -> NullStats:
    """Null mean, std and z of ``α(A, B)`` under Haar rotations of ``B`` (docs/theory.md §3):
    ``α(A, Q B Qᵀ)``, ``A`` fixed.

    Args:
        A: spectrum of the fixed matrix (the first of the relation).
        B: spectrum of the rotated matrix (the second).
        alpha: the observed score (``None`` gives ``z = None``).
        bank: the run's shared :class:`HaarBank`.
        samples: number K of rotations (default: the bank's).
        metric: ``"pearson"`` or ``"cosine"``.

    Returns:
        :class:`NullStats`; ``std`` and ``z`` are ``None`` with fewer than two defined
        samples, ``z`` is ``None`` when the null has zero spread (std ≤ 1e-12).
    """
    return rotation_nulls([(A, B, alpha)], bank=bank, samples=samples, metric=metric)[0]
