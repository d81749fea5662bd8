"""Runge–Kutta stability functions, their regions, and reading a multiplier as a rate.

docs/theory.md §6 ("ODE reading of J"). An explicit ``s``-stage RK method of order ``s``
(``s ≤ 4``) applied to ``y' = λy`` with step ``Δt`` multiplies ``y`` by
``R_s(z) = Σ_{k≤s} z^k/k!`` with ``z = Δtλ``; its stability region is ``|R_s(z)| ≤ 1``.
Reading a Jacobian eigenvalue ``μ`` as one step of RK-``s`` means solving ``R_s(z) = μ``;
of the ``s`` roots we take the principal one, the root closest to ``Log μ`` (the principal
logarithm, which ``R_s`` approximates near ``z = 0``). For ``μ = 0`` (``Log μ = -∞``) the
root with the smallest real part is taken, then the smallest ``|Im|``, then ``Im ≥ 0``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numpy.polynomial import Polynomial

SCHEMES = {"euler": 1, "rk2": 2, "rk3": 3, "rk4": 4}
"""Explicit RK schemes by name and stage count (``euler`` is RK1)."""


def stability_function(z: complex | np.ndarray, stages: int) -> complex | np.ndarray:
    """``R_s(z) = Σ_{k=0}^{s} z^k / k!``, elementwise."""
    _check_stages(stages)
    z = np.asarray(z, dtype=complex)
    out = np.ones_like(z)
    term = out.copy()
    for k in range(1, stages + 1):
        term = term * z / k
        out = out + term
    return complex(out) if np.ndim(out) == 0 else out




def rk_rate(mu: complex, stages: int) -> complex:
    """The principal ``z`` with ``R_s(z) = μ`` (``z = μ − 1`` for Euler)."""
    return complex(rk_rates(np.asarray([mu], dtype=complex), stages)[0])


def rk_rates(mu: np.ndarray, stages: int) -> np.ndarray:
    """Principal roots of ``R_s(z) = μ`` for an array of ``μ`` (vectorised :func:`rk_rate`).

    All ``s`` roots come from the eigenvalues of the companion matrices of
    ``s!(R_s(z) − μ)`` and are polished by Newton's method (``R_s' = R_{s−1}``), so
    ``R_s(z)`` reproduces ``μ`` to rounding; the principal root is then picked per ``μ``.
    """
    _check_stages(stages)
    mu = np.asarray(mu, dtype=complex).reshape(-1)
    if stages == 1:
        return mu - 1.0
    fact = math.factorial(stages)
    comp = np.zeros((mu.size, stages, stages), dtype=complex)
    comp[:, np.arange(1, stages), np.arange(stages - 1)] = 1.0
    for k in range(1, stages):
        comp[:, k, -1] = -fact / math.factorial(k)
    comp[:, 0, -1] = -fact * (1.0 - mu)
    roots = np.linalg.eigvals(comp) if mu.size else np.zeros((0, stages), dtype=complex)
    roots = _polish(roots, mu[:, None], stages)
    with np.errstate(divide="ignore"):
        log_mu = np.log(mu)
    pick = np.argmin(np.abs(roots - log_mu[:, None]) - 1e-15 * roots.imag, axis=1)
    for i in np.flatnonzero(mu == 0):
        pick[i] = min(
            range(stages),
            key=lambda j, r=roots[i]: (round(r[j].real, 12), round(abs(r[j].imag), 12), -r[j].imag),
        )
    return roots[np.arange(mu.size), pick]


def _polish(z: np.ndarray, mu: np.ndarray, stages: int) -> np.ndarray:
    """A few Newton steps on ``R_s(z) − μ``, keeping each entry's best iterate."""
    best = z.copy()
    best_err = np.abs(stability_function(z, stages) - mu)
    for _ in range(4):
        d = stability_function(z, stages - 1)
        safe = d != 0
        step = np.where(safe, (stability_function(z, stages) - mu) / np.where(safe, d, 1.0), 0.0)
        z = z - step
        err = np.abs(stability_function(z, stages) - mu)
        better = err < best_err
        best = np.where(better, z, best)
        best_err = np.where(better, err, best_err)
    return best


@lru_cache(maxsize=8)
def imaginary_axis_extent(stages: int) -> float:
    """Largest ``y`` with ``|R_s(i t)| ≤ 1`` for all ``|t| ≤ y`` (0: only the origin).

    Computed from the real polynomial ``|R_s(iy)|² − 1``: after dividing out its zero at
    ``y = 0`` it is either positive near 0 (extent 0, Euler and RK2) or negative up to its
    smallest positive root (RK3: ``√3``, RK4: ``2√2``).
    """
    _check_stages(stages)
    re = np.zeros(stages + 1)
    im = np.zeros(stages + 1)
    for k in range(stages + 1):
        c = (1j**k) / math.factorial(k)
        re[k], im[k] = c.real, c.imag
    p = Polynomial(re) ** 2 + Polynomial(im) ** 2 - 1.0
    return _first_crossing(p)


@lru_cache(maxsize=8)
def real_axis_extent(stages: int) -> float:
    """Most negative ``x`` with ``|R_s(t)| ≤ 1`` for all ``t ∈ [x, 0]`` (Euler, RK2: −2)."""
    _check_stages(stages)
    r = Polynomial([1.0 / math.factorial(k) for k in range(stages + 1)])
    return -float(_first_crossing((r**2 - 1.0)(Polynomial([0.0, -1.0]))))


def _first_crossing(p: Polynomial) -> float:
    """Smallest ``y > 0`` where ``p`` (zero at 0, ``p ≤ 0`` just right of 0) turns positive."""
    coef = p.coef.copy()
    scale = np.abs(coef).max()
    coef[np.abs(coef) < 1e-14 * scale] = 0.0
    m = int(np.flatnonzero(coef)[0])
    q = Polynomial(coef[m:])
    if q.coef[0] > 0:
        return 0.0
    roots = sorted(r.real for r in q.roots() if abs(r.imag) < 1e-9 and r.real > 0)
    for r in roots:
        lo, hi = r * (1 - 1e-6), r * (1 + 1e-6)
        if q(lo) <= 0 < q(hi):
            for _ in range(200):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if q(mid) <= 0 else (lo, mid)
            return float(0.5 * (lo + hi))
    return math.inf


def _check_stages(stages: int) -> None:
    """Only RK1–RK4 have ``R_s`` equal to the Taylor polynomial of ``exp``."""
    if stages not in (0, 1, 2, 3, 4):
        raise ValueError(f"stages must be 0..4, got {stages}")
