"""Exact Haar rotation null of an alignment score, from matrix invariants (docs/theory.md §3).

For symmetric ``A`` (fixed) and ``B`` (rotated) the null is the law of ``α(A, Q B Qᵀ)`` for
``Q`` Haar on ``O(d)``. Its mean and standard deviation are properties of the two matrices,
so they are computed here, not sampled:

* ``cosine``: ``α`` is linear in ``Q B Qᵀ``; second-order Weingarten calculus gives mean and
  variance in closed form (method ``"exact"``).
* ``pearson``: conditioning on ``u = Qᵀ1/√d`` makes the numerator's first two moments closed
  form and fixes the denominator; what is left is an average over ``u`` of a function of
  ``β = uᵀBu`` and ``γ = ‖Bu‖²``. For ``d ≤ QUADRATURE_MAX_DIM`` that average is a fixed,
  deterministic quasi-Monte Carlo rule over the eigenvalues of ``B`` with exact-moment
  control variates (method ``"quadrature"``); above it, a fourth-order moment series in
  ``β − E β`` (method ``"series"``) that needs only traces of ``B``, ``B²``, ``B³``, ``B⁴``.

Nothing here draws random numbers from a user seed: two calls give bit-identical results.
Accuracy, calibration and cost are measured in docs/exact_null.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from symtool.align.score import UNDEFINED_REL, check_metric
from symtool.linalg import all_finite, centred_power_traces

Tensor = torch.Tensor


ZERO_SPREAD = 1e-12
"""A null standard deviation at or below this counts as zero spread."""

QUADRATURE_MAX_DIM = 64
"""Largest side length that uses the quadrature route (one ``eigvalsh`` of ``B``)."""

QUADRATURE_POINTS = 1 << 15
"""Points of the fixed quasi-Monte Carlo rule over the sphere."""

_QUADRATURE_SEED = 0x5EED_0F_5A
"""Fixed scrambling seed of the rule: internal, never a user's seed."""

_SERIES_ORDER = 4
"""Highest central moment of ``β`` the series uses (needs ``tr B̃³`` and ``tr B̃⁴``)."""

SERIES_ERROR_SCALE = 1.0
"""Calibrated factor: the series' error estimate is this times the size of its fourth-order
terms (docs/exact_null.md, calibration table)."""

SERIES_ERROR_FLOOR = 1e-5
"""Floor of the series' error estimate, in null standard deviations."""

QUADRATURE_ERROR_FLOOR = 5e-4
"""Calibrated floor of the quadrature's error estimate, in null standard deviations."""

_ZERO_REASON = "null has zero spread (rotation-invariant pair)"


@dataclass(frozen=True)
class ExactNull:
    """Mean and standard deviation of ``α(A, Q B Qᵀ)`` over Haar ``Q``.

    Attributes:
        mean: the null mean, or ``None`` when undefined.
        std: the null standard deviation (0.0 for a rotation-invariant pair), or ``None``.
        method: ``"exact"``, ``"quadrature"``, ``"series"`` or ``"none"`` (see module doc).
        error_bound: calibrated estimate of ``|approx − true|`` of mean and of std, in units
            of the null std (0.0 for ``"exact"``); ``None`` when std is ``None`` or 0.
        reason: why a field is ``None`` or the spread is zero, else ``None``.
    """

    mean: float | None
    std: float | None
    method: str
    error_bound: float | None
    reason: str | None


@dataclass(frozen=True, eq=False)
class SphereAverages:
    """The fixed quadrature rule evaluated for one rotated matrix ``B`` (Pearson, small d).

    Attributes:
        beta: ``uᵀBu`` at the rule's points.
        gamma: ``‖Bu‖²`` at the rule's points.
        Z: the control variates at the rule's points, each minus its exact mean.
        solvers: for the whole rule and for its first half, ``(n, z̄, G⁺)``: the number of
            points, the variates' mean over them and the pseudo-inverse of their Gram matrix
            ``(Z − z̄)ᵀ(Z − z̄)``, so that a control-variate mean of ``Y`` is
            ``Ȳ − z̄ · G⁺ (Z − z̄)ᵀ (Y − Ȳ)`` (the least-squares slope).
    """

    beta: Tensor
    gamma: Tensor
    Z: Tensor
    solvers: tuple[tuple[int, Tensor, Tensor], ...]

    def mean(self, Y: Tensor, part: int = 0) -> float:
        """Control-variate mean of ``Y`` over the whole rule (``part=0``) or its first half."""
        n, zbar, G_pinv = self.solvers[part]
        y = Y[:n]
        ybar = y.mean()
        return float(ybar - zbar @ (G_pinv @ ((self.Z[:n] - zbar).T @ (y - ybar))))


@dataclass(frozen=True, eq=False)
class Invariants:
    """Rotation-free summaries of one symmetric matrix, computed once and shared by pairs.

    Attributes:
        dim: side length ``d``.
        finite: every entry is finite (the other fields are 0 otherwise).
        frob_sq: ``‖M‖_F²``.
        trace: ``tr M``.
        dev_sq: ``‖M − (tr M/d) I‖_F²`` (``tr M̃²``), formed directly, without cancellation.
        centred_sq: ``‖M − mean(M) 11ᵀ‖_F²`` (Pearson's centred norm), formed directly.
        total: ``1ᵀ M 1``.
        row_dev_sq: ``‖M1 − mean(M1) 1‖²``.
        dev3: ``tr M̃³`` (rotated side of a Pearson null only, else ``None``).
        dev4: ``tr M̃⁴`` (idem).
        sphere: the quadrature rule evaluated for ``M`` (rotated side of a Pearson null with
            ``d ≤ QUADRATURE_MAX_DIM`` only, else ``None``).
    """

    dim: int
    finite: bool
    frob_sq: float
    trace: float
    dev_sq: float
    centred_sq: float
    total: float
    row_dev_sq: float
    dev3: float | None = None
    dev4: float | None = None
    sphere: SphereAverages | None = None


def _symmetric64(M: Tensor) -> Tensor:
    """``M`` as float64, checked square and symmetric (to 1e-9 relative) and symmetrised."""
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"need a square matrix, got shape {tuple(M.shape)}")
    M64 = M.detach().to(torch.float64)
    asym = float(torch.linalg.matrix_norm(M64 - M64.T))
    scale = float(torch.linalg.matrix_norm(M64))
    if asym > 1e-9 * scale:
        raise ValueError(f"need a symmetric matrix, ‖M − Mᵀ‖/‖M‖ = {asym / scale:.3g}")
    return 0.5 * (M64 + M64.T)


_ROW_BLOCK = 256  # rows per block of the pass below: temporaries of 256 × d, not d × d


def _squared_norms(M64: Tensor, trace: float, rows: Tensor, total: float) -> tuple[float, ...]:
    """``‖M‖²``, ``‖M̃‖²``, ``‖M_c‖²``, ``‖M1 − mean(M1) 1‖²`` in one pass over row blocks,
    each from its own entries (no cancellation: near-multiples of I or 11ᵀ are recognised)."""
    d = M64.shape[0]
    shift, mean = trace / d, total / (d * d)
    frob = dev = centred = 0.0
    for i in range(0, d, _ROW_BLOCK):
        blk = M64[i : i + _ROW_BLOCK]
        frob += float(torch.tensordot(blk, blk, dims=2))
        centred += float(torch.linalg.vector_norm(blk - mean)) ** 2
        saved = torch.diagonal(blk, offset=i).clone()  # M − (tr M/d) I, in place on the block
        torch.diagonal(blk, offset=i).sub_(shift)
        dev += float(torch.tensordot(blk, blk, dims=2))
        torch.diagonal(blk, offset=i).copy_(saved)  # M restored bit for bit
    return frob, dev, centred, float(((rows - total / d) ** 2).sum())


def invariants(
    M: Tensor, *, rotated: bool = True, eigenvalues: Tensor | None = None, symmetric: bool = False
) -> Invariants:
    """Invariants of one symmetric matrix, O(d²); the rotated side adds one O(d³) step.

    Args:
        M: a symmetric ``d × d`` matrix (any float dtype or device).
        rotated: also compute what the rotated side of a Pearson null needs: ``tr M̃³`` and
            ``tr M̃⁴`` (from the eigenvalues for ``d ≤ QUADRATURE_MAX_DIM``, which the
            quadrature keeps, else from one product ``M̃ M̃``).
        eigenvalues: ``M``'s eigenvalues when already known (``Z = WᵀW`` from the singular
            values of ``W``): the rotated side then needs no O(d³) step at all.
        symmetric: ``M`` is exactly symmetric float64 already (as ``layer_spectra`` gives
            it): no check, no symmetrising copy.

    Raises:
        ValueError: ``M`` not square or not symmetric.
    """
    d = int(M.shape[0]) if M.ndim == 2 else 0
    finite = d > 0 and all_finite(M)
    if symmetric and M.dtype == torch.float64 and M.ndim == 2 and M.shape[0] == M.shape[1]:
        M64 = M.detach() if finite else None
    else:
        M64 = _symmetric64(M) if finite else None
    if M64 is None:
        if M.ndim != 2 or M.shape[0] != M.shape[1]:
            raise ValueError(f"need a square matrix, got shape {tuple(M.shape)}")
        return Invariants(d, False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    trace = float(torch.diagonal(M64).sum())
    rows = M64.sum(dim=1)
    total = float(rows.sum())
    frob_sq, dev_sq, centred_sq, row_dev_sq = _squared_norms(M64, trace, rows, total)
    base = {
        "dim": d,
        "finite": True,
        "frob_sq": frob_sq,
        "trace": trace,
        "dev_sq": dev_sq,
        "centred_sq": centred_sq,
        "total": total,
        "row_dev_sq": row_dev_sq,
    }
    if not rotated:
        return Invariants(**base)
    if eigenvalues is not None and eigenvalues.shape != (d,):
        raise ValueError(f"need {d} eigenvalues, got shape {tuple(eigenvalues.shape)}")
    if eigenvalues is not None or d <= QUADRATURE_MAX_DIM:
        lam = (
            torch.linalg.eigvalsh(M64.cpu())
            if eigenvalues is None
            else eigenvalues.detach().to(device="cpu", dtype=torch.float64)
        )
        cl = lam - trace / d
        dev3, dev4 = float((cl**3).sum()), float((cl**4).sum())
        if d > QUADRATURE_MAX_DIM:
            return Invariants(**base, dev3=dev3, dev4=dev4)
        sphere = _sphere_averages(d, lam, trace, base["frob_sq"], base["dev_sq"], dev3, dev4)
        return Invariants(**base, dev3=dev3, dev4=dev4, sphere=sphere)
    dev3, dev4 = centred_power_traces(M64, trace / d)  # tr M̃³, tr M̃⁴ from half a GEMM
    return Invariants(**base, dev3=dev3, dev4=dev4)


# --------------------------------------------------------------------------- cosine


def _cosine(ia: Invariants, ib: Invariants) -> ExactNull:
    """Exact cosine null: ``E = tr A tr B/(d ‖A‖‖B‖)``,
    ``Var = 2 ‖Ã‖² ‖B̃‖²/((d−1)(d+2) ‖A‖² ‖B‖²)``."""
    d = ia.dim
    na, nb = math.sqrt(ia.frob_sq), math.sqrt(ib.frob_sq)
    mean = ia.trace * ib.trace / (d * na * nb)
    if d == 1:
        return ExactNull(mean, 0.0, "exact", None, _ZERO_REASON)
    var = 2.0 * ia.dev_sq * ib.dev_sq / ((d - 1) * (d + 2) * ia.frob_sq * ib.frob_sq)
    std = math.sqrt(max(var, 0.0))
    if _rotation_invariant(ia) or _rotation_invariant(ib) or std <= ZERO_SPREAD:
        return ExactNull(mean, 0.0, "exact", None, _ZERO_REASON)
    return ExactNull(mean, std, "exact", 0.0, None)


def _rotation_invariant(inv: Invariants) -> bool:
    """``M`` is a multiple of the identity up to ``UNDEFINED_REL``."""
    return inv.dev_sq <= (UNDEFINED_REL**2) * inv.frob_sq


# --------------------------------------------------------------------------- pearson


@dataclass(frozen=True)
class _PearsonA:
    """The fixed side's part of ``E[X|u]`` and ``Var[X|u]`` (``X = ⟨A_c, QBQᵀ⟩``).

    ``mean_coef = tr A_c/(d−1)``; ``cross = 4‖P⊥A_c e‖²/(d−1)``; ``bulk = 2‖Ã₂₂‖²/((d−2)(d+1))``
    with ``Ã₂₂`` the traceless part of ``A_c`` compressed to ``1⊥``; ``norm_sq = ‖A_c‖²``.
    """

    d: int
    mean_coef: float
    cross: float
    bulk: float
    norm_sq: float


def _pearson_a(ia: Invariants) -> _PearsonA:
    d = ia.dim
    t = ia.trace - ia.total / d
    a_sq = ia.row_dev_sq / d
    q = max(ia.centred_sq - 2.0 * a_sq - t * t / (d - 1), 0.0)
    bulk = 2.0 * q / ((d - 2) * (d + 1)) if d > 2 else 0.0
    return _PearsonA(d, t / (d - 1), 4.0 * a_sq / (d - 1), bulk, ia.centred_sq)


def _conditional(
    pa: _PearsonA, ib: Invariants, beta: Tensor, gamma: Tensor
) -> tuple[Tensor, Tensor]:
    """``E[α|u]`` and ``Var[α|u]`` at ``β = uᵀBu``, ``γ = ‖Bu‖²`` (exact, elementwise)."""
    d, N, tB = pa.d, ib.frob_sq, ib.trace
    den_sq = (N - beta * beta).clamp_min(N * UNDEFINED_REL**2)
    m = pa.mean_coef * (tB - beta)
    rest = tB - beta
    v = pa.cross * (gamma - beta * beta) + pa.bulk * (
        N - 2.0 * gamma + beta * beta - rest * rest / (d - 1)
    )
    return m / torch.sqrt(pa.norm_sq * den_sq), v.clamp_min(0.0) / (pa.norm_sq * den_sq)


_RULES: dict[int, Tensor] = {}
_RULES_KEPT = 8
"""How many side lengths keep their rule's points (``QUADRATURE_POINTS · d`` numbers each)."""


def _sphere_rule(d: int) -> Tensor:
    """Fixed ``(QUADRATURE_POINTS, d)`` weights ``w = u∘u`` of a scrambled Sobol rule on the
    sphere (Gaussian by inverse CDF, then normalised); the last few ``d`` are cached."""
    w = _RULES.pop(d, None)
    if w is None:
        engine = torch.quasirandom.SobolEngine(d, scramble=True, seed=_QUADRATURE_SEED)
        x = engine.draw(QUADRATURE_POINTS, dtype=torch.float64)
        g = torch.special.ndtri(x.clamp(2.0**-40, 1.0 - 2.0**-40))
        g2 = g * g
        w = g2 / g2.sum(dim=1, keepdim=True)
    _RULES[d] = w  # most recently used last
    while len(_RULES) > _RULES_KEPT:
        del _RULES[next(iter(_RULES))]
    return w


def _central_moments(d: int, t2: float, t3: float, t4: float) -> list[float]:
    """``E[δᵏ]``, k = 0…4, of ``δ = uᵀB̃u`` for ``u`` uniform on the sphere.

    ``E[(uᵀMu)ᵏ] = E[(gᵀMg)ᵏ]/(d(d+2)…(d+2k−2))`` for Gaussian ``g``, whose cumulants are
    ``2ᵏ⁻¹(k−1)! tr Mᵏ``; ``t_k = tr B̃ᵏ`` and ``tr B̃ = 0``.
    """
    n2 = d * (d + 2)
    n3 = n2 * (d + 4)
    n4 = n3 * (d + 6)
    return [1.0, 0.0, 2.0 * t2 / n2, 8.0 * t3 / n3, (48.0 * t4 + 12.0 * t2 * t2) / n4]


def _cross_moments(
    d: int, b0: float, t2: float, t3: float, t4: float
) -> tuple[float, float, float]:
    """``E[δε]``, ``E[δ²ε]``, ``E[ε²]`` with ``ε = uᵀC̃u``, ``C̃ = B² − (‖B‖²/d) I``.

    ``C̃ = B̃² − (t₂/d) I + 2 b₀ B̃`` with ``b₀ = tr B/d``, ``t_k = tr B̃ᵏ``.
    """
    n2 = d * (d + 2)
    n3 = n2 * (d + 4)
    tr_bc = t3 + 2.0 * b0 * t2
    tr_bbc = t4 + 2.0 * b0 * t3 - t2 * t2 / d
    tr_cc = t4 + 4.0 * b0 * t3 + 4.0 * b0 * b0 * t2 - t2 * t2 / d
    return 2.0 * tr_bc / n2, 8.0 * tr_bbc / n3, 2.0 * tr_cc / n2


def _sphere_averages(
    d: int,
    lam: Tensor,
    trace: float,
    frob_sq: float,
    t2: float,
    t3: float,
    t4: float,
    rule: Tensor | None = None,
) -> SphereAverages:
    """Evaluate the fixed rule (or ``rule``, weights ``u∘u`` of other points) for eigenvalues
    ``lam`` and prepare the control variates ``δ, δ², δ³, δ⁴, ε, δε, δ²ε, ε²``
    (``δ = β − E β``, ``ε = γ − E γ``), centred by their exact means, so that each pair's
    average is one small matrix-vector product."""
    w = _sphere_rule(d) if rule is None else rule
    beta = w @ lam
    gamma = w @ (lam * lam)
    b0 = trace / d
    mu = _central_moments(d, t2, t3, t4)
    e_de, e_dde, e_ee = _cross_moments(d, b0, t2, t3, t4)
    sd = math.sqrt(mu[2]) if mu[2] > 0 else 1.0  # scaled: a well-conditioned least squares
    se = math.sqrt(e_ee) if e_ee > 0 else 1.0
    dl = (beta - b0) / sd
    ep = (gamma - frob_sq / d) / se
    Z = torch.stack(
        [
            dl,
            dl**2 - mu[2] / sd**2,
            dl**3 - mu[3] / sd**3,
            dl**4 - mu[4] / sd**4,
            ep,
            dl * ep - e_de / (sd * se),
            dl**2 * ep - e_dde / (sd**2 * se),
            ep**2 - e_ee / se**2,
        ],
        dim=1,
    )
    solvers = []
    for n in (w.shape[0], w.shape[0] // 2):
        zbar = Z[:n].mean(dim=0)
        Zc = Z[:n] - zbar
        vals, vecs = torch.linalg.eigh(Zc.T @ Zc)
        # collinear variates (d = 2: ε is a multiple of δ) are dropped by the cut-off; an
        # inexact slope only costs variance reduction, never bias (E Z = 0 exactly)
        keep = vals > 1e-12 * vals[-1]
        inv = torch.where(keep, 1.0 / torch.where(keep, vals, 1.0), 0.0)
        solvers.append((n, zbar, (vecs * inv) @ vecs.T))
    return SphereAverages(beta, gamma, Z, tuple(solvers))


def _pearson_quadrature(pa: _PearsonA, ib: Invariants) -> tuple[float, float, float]:
    """Mean, std and an error estimate (in std units) by the fixed rule over the sphere.

    ``E[α|u]`` and ``Var[α|u]`` are exact at each point; their averages use control variates
    of exactly known means. The error estimate is twice the change from the rule's first
    half to the whole rule, at least ``QUADRATURE_ERROR_FLOOR``.
    """
    sph = ib.sphere
    assert sph is not None
    m1, v = _conditional(pa, ib, sph.beta, sph.gamma)
    out = []
    for part in (0, 1):
        mean = sph.mean(m1, part)
        dev = m1 - mean
        out.append((mean, math.sqrt(max(sph.mean(v + dev * dev, part), 0.0))))
    (mean, std), (half_mean, half_std) = out
    if std <= ZERO_SPREAD:
        return mean, std, 0.0
    err = 2.0 * max(abs(mean - half_mean), abs(std - half_std)) / std
    return mean, std, max(err, QUADRATURE_ERROR_FLOOR)


def _series_mul(a: list[float], b: list[float]) -> list[float]:
    """Product of two power series in ``δ``, truncated at ``_SERIES_ORDER``."""
    K = _SERIES_ORDER
    out = [0.0] * (K + 1)
    for i, ai in enumerate(a):
        for j in range(K + 1 - i):
            out[i + j] += ai * b[j]
    return out


def _series_pow(a: list[float], p: float) -> list[float]:
    """``a(δ)^p`` as a truncated power series (``a[0] > 0``)."""
    K = _SERIES_ORDER
    x = [0.0] + [c / a[0] for c in a[1:]]
    out = [1.0] + [0.0] * K
    term = [1.0] + [0.0] * K
    coef = 1.0
    for k in range(1, K + 1):
        term = _series_mul(term, x)
        coef *= (p - k + 1) / k
        out = [o + coef * t for o, t in zip(out, term, strict=True)]
    scale = a[0] ** p
    return [scale * o for o in out]


def _series_terms(pa: _PearsonA, ib: Invariants) -> tuple[list[float], list[float]]:
    """The null's mean and variance as sums of terms of order 0…4 in ``δ = β − E β``.

    ``E[α|u] = F(β)`` and ``Var[α|u] = V₀(β) + V₁(β) ε`` are expanded to fourth order in
    ``δ``; their averages use the exact central moments of ``δ`` and ``E[δᵏε]`` (k ≤ 2).
    ``Var α = E[Var(α|u)] + Var F(β)``, with ``Var F`` truncated at fourth order too.
    Returns ``(mean_terms, var_terms)``, entry ``k`` being the order-``k`` part.
    """
    d, N, tB = pa.d, ib.frob_sq, ib.trace
    b0, g0 = tB / d, N / d
    t3, t4 = ib.dev3 or 0.0, ib.dev4 or 0.0
    mu = _central_moments(d, ib.dev_sq, t3, t4)
    e_de, e_dde, _ = _cross_moments(d, b0, ib.dev_sq, t3, t4)
    K = _SERIES_ORDER
    beta = [b0, 1.0] + [0.0] * (K - 1)
    rest = [tB - b0, -1.0] + [0.0] * (K - 1)
    den = [N - b0 * b0, -2.0 * b0, -1.0] + [0.0] * (K - 2)
    inv_sqrt = _series_pow(den, -0.5)
    inv = _series_pow(den, -1.0)
    scale = 1.0 / math.sqrt(pa.norm_sq)
    F = [scale * pa.mean_coef * c for c in _series_mul(rest, inv_sqrt)]
    b2 = _series_mul(beta, beta)
    r2 = _series_mul(rest, rest)
    v0 = [
        pa.cross * (g0 * (k == 0) - b2[k])
        + pa.bulk * ((N - 2.0 * g0) * (k == 0) + b2[k] - r2[k] / (d - 1))
        for k in range(K + 1)
    ]
    V0 = [c / pa.norm_sq for c in _series_mul(v0, inv)]
    V1 = [(pa.cross - 2.0 * pa.bulk) * c / pa.norm_sq for c in inv]
    # contributions by order, so that the last ones give the error estimate
    mean_terms = [F[k] * mu[k] for k in range(K + 1)]
    ev_terms = [V0[k] * mu[k] for k in range(K + 1)]
    ev_terms[2] += V1[1] * e_de  # E[δε] is of second order, E[δ²ε] of third
    ev_terms[3] += V1[2] * e_dde
    vf_terms = [0.0] * (K + 1)
    for j in range(1, K + 1):
        for k in range(1, K + 1 - j):
            vf_terms[j + k] += F[j] * F[k] * mu[j + k]
    vf_terms[4] -= (F[2] * mu[2]) ** 2
    return mean_terms, [e + v for e, v in zip(ev_terms, vf_terms, strict=True)]


def _pearson_series(pa: _PearsonA, ib: Invariants) -> tuple[float, float, float]:
    """Mean, std and an error estimate (std units) by the fourth-order moment series.

    The estimate is ``SERIES_ERROR_SCALE`` times the size of the fourth-order terms (of the
    mean in std units, of the variance relative to ``2 Var``): the series is asymptotic in
    ``1/d`` and its first omitted terms are smaller than its last kept ones.
    """
    mean_terms, var_terms = _series_terms(pa, ib)
    mean = sum(mean_terms)
    var = max(sum(var_terms), 0.0)
    std = math.sqrt(var)
    if std <= ZERO_SPREAD:
        return mean, std, 0.0
    err = max(abs(mean_terms[4]) / std, abs(var_terms[4]) / (2.0 * var))
    return mean, std, max(SERIES_ERROR_SCALE * err, SERIES_ERROR_FLOOR)


def _pearson(ia: Invariants, ib: Invariants) -> ExactNull:
    d = ia.dim
    if d == 1:
        return ExactNull(None, None, "none", None, "1×1 matrices: Pearson correlation undefined")
    pa = _pearson_a(ia)
    if _rotation_invariant(ib):
        b = ib.trace / d
        beta = torch.tensor([b], dtype=torch.float64)
        mean = float(_conditional(pa, ib, beta, beta * beta)[0][0])
        return ExactNull(mean, 0.0, "exact", None, _ZERO_REASON)
    if d <= QUADRATURE_MAX_DIM:
        mean, std, err = _pearson_quadrature(pa, ib)
        method = "quadrature"
    else:
        mean, std, err = _pearson_series(pa, ib)
        method = "series"
    if std <= ZERO_SPREAD:
        return ExactNull(mean, 0.0, method, None, _ZERO_REASON)
    return ExactNull(mean, std, method, err, None)


def _undefined(ia: Invariants, ib: Invariants, metric: str) -> str | None:
    """Why the null is undefined for this pair, else ``None``."""
    if ia.dim == 0:
        return "empty matrices"
    for name, inv in (("A", ia), ("B", ib)):
        if not inv.finite:
            return f"non-finite entry in {name}"
    for name, inv in (("A", ia), ("B", ib)):
        if inv.frob_sq == 0.0:
            return f"{name} is zero"
    if metric == "pearson":
        if ia.centred_sq <= (UNDEFINED_REL**2) * ia.frob_sq:
            return "A is constant (Pearson correlation undefined for every rotation)"
    return None


def null_from_invariants(ia: Invariants, ib: Invariants, metric: str = "pearson") -> ExactNull:
    """The null of ``α(A, Q B Qᵀ)`` from the two matrices' :class:`Invariants`.

    ``ib`` must have been computed with ``rotated=True`` for the Pearson metric.
    """
    check_metric(metric)
    if ia.dim != ib.dim:
        raise ValueError(f"null needs equal sizes, got {ia.dim} and {ib.dim}")
    reason = _undefined(ia, ib, metric)
    if reason is not None:
        return ExactNull(None, None, "none", None, reason)
    if metric == "cosine":
        return _cosine(ia, ib)
    if (
        ib.dim > 1
        and not _rotation_invariant(ib)
        and (ib.dev4 is None or (ib.dim <= QUADRATURE_MAX_DIM and ib.sphere is None))
    ):
        raise ValueError("the rotated side of a Pearson null needs invariants(rotated=True)")
    return _pearson(ia, ib)


def haar_nulls(pairs: Sequence[tuple[Tensor, Tensor]], metric: str = "pearson") -> list[ExactNull]:
    """:func:`haar_null` of many ``(A, B)`` pairs; each distinct matrix (by identity) has its
    invariants computed once, so a layer's relations over shared matrices cost O(1) each."""
    check_metric(metric)
    rotated_ids = {id(B) for _, B in pairs} if metric == "pearson" else set()
    cache: dict[int, Invariants] = {}

    def get(M: Tensor) -> Invariants:
        inv = cache.get(id(M))
        if inv is None:
            inv = invariants(M, rotated=id(M) in rotated_ids)
            cache[id(M)] = inv
        return inv

    out = []
    for A, B in pairs:
        if A.shape != B.shape:
            raise ValueError(f"null needs equal shapes, got {tuple(A.shape)} and {tuple(B.shape)}")
        out.append(null_from_invariants(get(A), get(B), metric))
    return out


def haar_null(A: Tensor, B: Tensor, metric: str = "pearson") -> ExactNull:
    """Mean and std of ``α(A, Q B Qᵀ)`` over Haar ``Q`` on ``O(d)``, without sampling.

    Args:
        A: fixed symmetric ``d × d`` matrix.
        B: rotated symmetric ``d × d`` matrix.
        metric: ``"pearson"`` or ``"cosine"``.

    Returns:
        :class:`ExactNull`; ``mean``/``std`` are ``None`` with a ``reason`` when the null is
        undefined, and ``std == 0.0`` with a reason when it has no spread.

    Raises:
        ValueError: unknown metric, shapes differ, or a matrix is not square symmetric.
    """
    return haar_nulls([(A, B)], metric)[0]
