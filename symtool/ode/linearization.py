"""Linearisations of a recurrent cell: weights-only diagnostics and the ODE reading of ``J``.

docs/theory.md §6 ("Weights only", "ODE reading of J"); float64 throughout (section 7).
``J = ∂s_{k+1}/∂s_k`` is read as one step of size ``Δt`` of Euler, RK2–RK4 or the exact
flow of ``y' = Λy``; the RK algebra is in :mod:`symtool.stability`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from symtool.ode.cells import CellWeights, effective_recurrent
from symtool.stability import (
    SCHEMES,
    imaginary_axis_extent,
    real_axis_extent,
    rk_rates,
    stability_function,
)

Tensor = torch.Tensor

GAMMA = {"tanh": 1.0, "relu": 1.0, "linear": 1.0, "sigmoid": 0.25}
"""Lipschitz constant ``γ_φ`` of each activation."""
_ACTIVATION = {
    "r": "sigmoid",
    "z": "sigmoid",
    "n": "tanh",
    "i": "sigmoid",
    "f": "sigmoid",
    "g": "tanh",
    "o": "sigmoid",
}
_TOL = 1e-12  # |R| ≤ 1 + tol counts as inside; Re z > 1e-10 counts as unstable
_UNSTABLE = 1e-10


@dataclass(frozen=True)
class Mode:
    """One eigenvalue ``μ`` of a recurrent matrix and its decay time ``−1/ln|μ|`` (steps)."""

    re: float
    im: float
    modulus: float
    timescale: float | None
    note: str | None


@dataclass(frozen=True)
class GateDiagnostics:
    """Weights-only diagnostics of one gate block of ``W_hh`` (``H × H``).

    Attributes:
        gate: block name (``hh``; GRU ``r z n``; LSTM ``i f g o``).
        matrix: what was analysed (``W_hh[gate]`` or ``W_hh[gate] @ W_hr`` with projection).
        activation: the nonlinearity applied to the block's pre-activation.
        gamma: its Lipschitz constant ``γ_φ``.
        spectral_radius: ``ρ = max|μ_i|``.
        singular_values: leading singular values, descending (``max_modes`` of them).
        sigma_max: largest singular value.
        gamma_sigma_max: ``γ_φ σ_max``.
        vanishing_guaranteed: ``γ_φ σ_max < 1`` (sufficient for vanishing gradients).
        symmetric_energy: ``‖(W+Wᵀ)/2‖_F² / ‖W‖_F²``; the skew part has ``1 −`` this.
        skew_energy: ``‖(W−Wᵀ)/2‖_F² / ‖W‖_F²``.
        departure_from_normality: ``sqrt(‖W‖_F² − Σ|μ_i|²)/‖W‖_F`` (0 for normal ``W``).
        unitarity_defect: ``‖WᵀW − I‖_F/√H``.
        modes: leading eigenvalues by modulus with timescales.
        modes_total: number of eigenvalues.
        non_decaying: count of ``|μ| ≥ 1``.
        max_timescale: longest finite timescale, steps.
        reason: why energies/normality are ``None`` (zero matrix).
    """

    gate: str
    matrix: str
    activation: str
    gamma: float
    spectral_radius: float
    singular_values: tuple[float, ...]
    sigma_max: float
    gamma_sigma_max: float
    vanishing_guaranteed: bool
    symmetric_energy: float | None
    skew_energy: float | None
    departure_from_normality: float | None
    unitarity_defect: float
    modes: tuple[Mode, ...]
    modes_total: int
    non_decaying: int
    max_timescale: float | None
    reason: str | None = None


@dataclass(frozen=True)
class StepSize:
    """The step ``Δt`` the ODE reading divides by, and where it came from.

    Attributes:
        dt: the step, or ``None`` when it cannot be formed.
        source: ``override``, ``unit`` (RNN, custom), ``1 - z`` (GRU), ``1 - f`` (LSTM).
        gate_mean: mean of the gate (``z`` or ``f``) over units (and steps, samples).
        memory_time: LSTM ``τ = −1/E[ln f]`` in steps.
        reason: why ``dt`` or ``memory_time`` is ``None``.
    """

    dt: float | None
    source: str
    gate_mean: float | None = None
    memory_time: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class SchemeReading:
    """Continuous rates ``λ`` read from the eigenvalues of ``J`` by one scheme.

    Attributes:
        scheme: ``euler`` (``λ = (μ−1)/Δt``), ``rk2``/``rk3``/``rk4`` (principal root of
            ``R_s(Δtλ) = μ``) or ``exact`` (``λ = Log μ / Δt``).
        stages: RK stage count, ``None`` for ``exact``.
        rates: ``(Re λ, Im λ)`` for the leading modes (``None``: ``μ = 0`` under ``exact``).
        spectral_abscissa: ``max Re λ`` over all finite rates.
        n_unstable: count of ``Re(Δtλ) > 1e-10``.
    """

    scheme: str
    stages: int | None
    rates: tuple[tuple[float, float] | None, ...]
    spectral_abscissa: float | None
    n_unstable: int


@dataclass(frozen=True)
class RegionCheck:
    """Would RK-``s`` with step ``Δt`` stay bounded on the ODE whose exact ``Δt``-flow is ``J``.

    Attributes:
        stages: ``s`` (1 is Euler).
        in_region: every ``z_i = Δtλ_i = Log μ_i`` has ``|R_s(z_i)| ≤ 1``.
        margin: ``1 − max_i |R_s(z_i)|`` (negative outside), ``None`` with a zero mode.
        imag_extent: the region covers ``|Im z| ≤`` this on the imaginary axis.
        real_extent: the region covers ``[real_extent, 0]`` on the real axis.
    """

    stages: int
    in_region: bool
    margin: float | None
    imag_extent: float
    real_extent: float


@dataclass(frozen=True)
class JacobianReading:
    """The ODE reading of one Jacobian ``J = ∂s_{k+1}/∂s_k``.

    Attributes:
        point: ``rest`` (zero state, rest input) or ``along`` (mean of ``samples``
            Jacobians at points visited along the sequences).
        samples: Jacobians averaged (1 at rest).
        step: the ``Δt`` used.
        state_size: ``D``.
        eigenvalues: leading ``(Re μ, Im μ)`` by modulus.
        modes_total: ``D``.
        spectral_radius: ``ρ(J)``.
        norm: ``‖J‖_2``.
        delta: ``‖J − I‖_2`` (small: the ODE reading is meaningful; ≳ 1: formal).
        discrete_stable: ``ρ(J) ≤ 1``; equals "every RK-s reading lies in its own region".
        schemes: the readings ``euler, rk2, rk3, rk4, exact``.
        regions: RK-1..4 stability of the exact-flow rates.
        euler_dt_max: per leading mode ``−2 Re λ/|λ|²`` of the exact-flow rate, ``None``
            when ``Re λ ≥ 0`` (no stable Euler step).
        euler_dt_limit: the smallest of them over all modes, or ``None``.
        zero_modes: eigenvalues exactly 0 (exact-flow rate ``−∞``).
        reason: why schemes are empty or a limit is ``None``.
    """

    point: str
    samples: int
    step: StepSize
    state_size: int
    eigenvalues: tuple[tuple[float, float], ...]
    modes_total: int
    spectral_radius: float
    norm: float
    delta: float
    discrete_stable: bool
    schemes: tuple[SchemeReading, ...]
    regions: tuple[RegionCheck, ...]
    euler_dt_max: tuple[float | None, ...]
    euler_dt_limit: float | None
    zero_modes: int
    reason: str | None = None


# --------------------------------------------------------------------- weights only


def gate_diagnostics(
    w: Tensor, gate: str, activation: str, *, matrix: str = "", max_modes: int = 32
) -> GateDiagnostics:
    """Weights-only diagnostics of one square recurrent block (float64)."""
    w = w.detach().to(torch.float64)
    size = w.shape[0]
    mu = np.linalg.eigvals(w.numpy())
    sv = torch.linalg.svdvals(w)
    fro2 = float((w**2).sum())
    gamma = GAMMA[activation]
    sigma_max = float(sv[0]) if sv.numel() else 0.0
    sym = float((((w + w.T) / 2) ** 2).sum())
    if fro2 > 0:
        sym_e, skew_e = sym / fro2, max(fro2 - sym, 0.0) / fro2
        dep = math.sqrt(max(fro2 - float(np.sum(np.abs(mu) ** 2)), 0.0) / fro2)
        reason = None
    else:
        sym_e = skew_e = dep = None
        reason = "zero matrix"
    eye = torch.eye(size, dtype=torch.float64)
    order = _mode_order(mu)
    modes = tuple(_mode(mu[i]) for i in order)
    finite = [m.timescale for m in modes if m.timescale is not None]
    return GateDiagnostics(
        gate=gate,
        matrix=matrix or f"W_hh[{gate}]",
        activation=activation,
        gamma=gamma,
        spectral_radius=float(np.abs(mu).max()) if mu.size else 0.0,
        singular_values=tuple(float(v) for v in sv[:max_modes]),
        sigma_max=sigma_max,
        gamma_sigma_max=gamma * sigma_max,
        vanishing_guaranteed=gamma * sigma_max < 1.0,
        symmetric_energy=sym_e,
        skew_energy=skew_e,
        departure_from_normality=dep,
        unitarity_defect=float(torch.linalg.matrix_norm(w.T @ w - eye)) / math.sqrt(size),
        modes=modes[:max_modes],
        modes_total=len(modes),
        non_decaying=sum(m.timescale is None for m in modes),
        max_timescale=max(finite) if finite else None,
        reason=reason,
    )


def _mode(mu: complex) -> Mode:
    """One eigenvalue and its timescale ``−1/ln|μ|`` (0 at ``μ = 0``; none at ``|μ| ≈ 1+``)."""
    a = float(abs(mu))
    if a >= 1.0 - _TOL:
        return Mode(float(mu.real), float(mu.imag), a, None, "non-decaying")
    return Mode(float(mu.real), float(mu.imag), a, 0.0 if a == 0 else -1.0 / math.log(a), None)


def _mode_order(mu: np.ndarray) -> list[int]:
    """Indices sorted by modulus, then real part, then imaginary part, all descending."""
    return sorted(range(mu.size), key=lambda i: (-abs(mu[i]), -mu[i].real, -mu[i].imag))


def weight_diagnostics(cell: CellWeights, max_modes: int = 32) -> tuple[GateDiagnostics, ...]:
    """Diagnostics of every gate block of a cell's ``W_hh`` (through ``W_hr`` if projected)."""
    spec = cell.spec
    out = []
    for gate, w in effective_recurrent(cell):
        act = (spec.nonlinearity or "tanh") if spec.kind == "rnn" else _ACTIVATION[gate]
        matrix = f"W_hh[{gate}] @ W_hr" if cell.w_hr is not None else f"W_hh[{gate}]"
        out.append(gate_diagnostics(w, gate, act, matrix=matrix, max_modes=max_modes))
    return tuple(out)


# --------------------------------------------------------------------- ODE reading


def read_jacobian(
    jac: Tensor, step: StepSize, *, point: str = "rest", samples: int = 1, max_modes: int = 32
) -> JacobianReading:
    """Read ``J`` as one step of Euler, RK2–4 and the exact flow (docs/theory.md §6).

    Args:
        jac: ``(D, D)`` Jacobian of the one-step map.
        step: the ``Δt`` to divide by.
        point: label of where ``J`` was taken.
        samples: how many Jacobians were averaged into ``jac``.
        max_modes: leading modes kept in per-mode tuples.
    """
    j = jac.detach().to(torch.float64)
    size = j.shape[0]
    mu = np.linalg.eigvals(j.numpy())
    mu = mu[_mode_order(mu)]
    eye = torch.eye(size, dtype=torch.float64)
    zero = mu == 0
    with np.errstate(divide="ignore"):
        z_exact = np.log(mu.astype(complex))
    regions = []
    for s in range(1, 5):
        amp = np.abs(stability_function(z_exact[~zero], s)) if (~zero).any() else np.zeros(0)
        worst = float(amp.max()) if amp.size else 0.0
        regions.append(
            RegionCheck(
                stages=s,
                in_region=bool(not zero.any() and worst <= 1 + _TOL),
                margin=None if zero.any() else 1.0 - worst,
                imag_extent=imaginary_axis_extent(s),
                real_extent=real_axis_extent(s),
            )
        )
    rho = float(np.abs(mu).max())
    base = dict(
        point=point,
        samples=samples,
        step=step,
        state_size=size,
        eigenvalues=tuple((float(m.real), float(m.imag)) for m in mu[:max_modes]),
        modes_total=size,
        spectral_radius=rho,
        norm=float(torch.linalg.matrix_norm(j, ord=2)),
        delta=float(torch.linalg.matrix_norm(j - eye, ord=2)),
        discrete_stable=rho <= 1 + _TOL,
        regions=tuple(regions),
        zero_modes=int(zero.sum()),
    )
    if step.dt is None:
        return JacobianReading(
            **base,
            schemes=(),
            euler_dt_max=(),
            euler_dt_limit=None,
            reason=step.reason or "no step size",
        )
    dt = step.dt
    schemes = []
    for name, s in (*SCHEMES.items(), ("exact", None)):
        zs = _scaled_rates(mu, z_exact, s)
        finite = [z for z in zs if z is not None]
        schemes.append(
            SchemeReading(
                scheme=name,
                stages=s,
                rates=tuple(
                    None if z is None else (z.real / dt, z.imag / dt) for z in zs[:max_modes]
                ),
                spectral_abscissa=max(z.real for z in finite) / dt if finite else None,
                n_unstable=int(sum(z.real > _UNSTABLE for z in finite)),
            )
        )
    limits: list[float | None] = []
    for i, z in enumerate(complex(v) for v in z_exact):
        if zero[i]:
            limits.append(0.0)
        elif z.real < -_UNSTABLE:
            limits.append(-2.0 * z.real * dt / abs(z) ** 2)
        else:
            limits.append(None)
    decaying = all(v is not None for v in limits)
    return JacobianReading(
        **base,
        schemes=tuple(schemes),
        euler_dt_max=tuple(limits[:max_modes]),
        euler_dt_limit=min(limits) if decaying else None,  # type: ignore[type-var]
        reason=None if decaying else "a mode does not decay (Re λ ≥ 0): no stable Euler step",
    )


def _scaled_rates(mu: np.ndarray, log_mu: np.ndarray, stages: int | None) -> list[complex | None]:
    """``z = Δtλ`` per eigenvalue: RK-``s`` principal roots, or ``Log μ`` (``None`` at 0)."""
    if stages is not None:
        return [complex(z) for z in rk_rates(mu, stages)]
    return [None if m == 0 else complex(z) for m, z in zip(mu, log_mu, strict=True)]


def step_size(
    kind: str,
    gate: Tensor | None = None,
    override: float | None = None,
    *,
    gate_stats: tuple[int, float, float] | None = None,
) -> StepSize:
    """``Δt``: the override, 1 for RNN/custom cells, else ``E[1 − z]`` (GRU) / ``E[1 − f]`` (LSTM).

    Args:
        kind: ``rnn``, ``gru``, ``lstm`` or ``custom``.
        gate: gate values (any shape), averaged over all entries.
        override: the caller's ``Δt``.
        gate_stats: instead of ``gate``, streamed ``(count, Σ(1 − g), Σ ln g)``.
    """
    if gate is not None:
        g = gate.detach().to(torch.float64)
        gate_stats = (g.numel(), float((1 - g).sum()), float(torch.log(g.clamp_min(1e-300)).sum()))
    if kind in ("rnn", "custom") or gate_stats is None or gate_stats[0] == 0:
        return StepSize(
            override if override is not None else 1.0,
            "override" if override is not None else "unit",
        )
    n, one_minus, log_sum = gate_stats
    mean_dt = one_minus / n
    source = "1 - z" if kind == "gru" else "1 - f"
    memory, reason = None, None
    if kind == "lstm":
        if log_sum < 0:
            memory = -n / log_sum
        else:
            reason = "forget gate saturated at 1: memory time infinite"
    dt = override
    if override is None:
        dt = mean_dt if mean_dt > 0 else None
        if dt is None:
            reason = f"gate saturated at 1: Δt = {source} = 0"
    return StepSize(
        dt, "override" if override is not None else source, 1.0 - mean_dt, memory, reason
    )
