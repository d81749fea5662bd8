"""Lyapunov spectrum, Kaplan–Yorke dimension and participation ratio along sequences.

docs/theory.md §6 ("Lyapunov spectrum"). QR method: start from an orthonormal
``Q_0`` (``D × k``, seeded), at every step ``Z = J_k Q``, ``Q, R = qr(Z)`` with
``diag(R) > 0``, and ``λ_i = mean ln R_ii`` over the steps after a warm-up (natural log,
per step). ``J_k Q`` comes from Jacobian-vector products (``torch.func.jvp`` vmapped over
the ``k`` columns; closed form for vanilla RNNs), never from a full ``J``. Sums and
counts are streamed in float64 and divided at the end (docs/theory.md §7).

``λ_1`` comes with an interval (:func:`lambda_interval`, docs/ode.md "Verdict"): the
standard error across sequences and the spread over independently drawn starting frames.
Extra frames carry one vector each: Gram–Schmidt never touches the first column of ``Q``,
so ``λ_1`` of a ``k``-column run is the growth rate of one vector, ``ln ‖J v‖`` with ``v``
renormalised every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from symtool.ode.cells import StepMap

Tensor = torch.Tensor


@dataclass(frozen=True)
class LyapunovResult:
    """Leading Lyapunov exponents of one cell along sequences.

    Attributes:
        drive: ``"data"`` (probe sequences), ``"gaussian(scale=…)"`` or ``"zero"``.
        sequences: number of sequences ``B``.
        steps: sequence length ``T``.
        warmup: leading steps left out of the averages.
        k: exponents computed (the leading ``k`` of ``D``).
        state_size: ``D``.
        exponents: mean over sequences of each sequence's sorted exponents, largest first,
            natural log per step; ``None`` for a direction collapsed exactly (``-∞``).
        spread: standard deviation across sequences (``ddof=1``), ``None`` for ``B = 1``.
        lambda_1: the largest exponent.
        total: sum of the ``k`` exponents (``None`` if any is ``-∞``).
        kaplan_yorke: Kaplan–Yorke dimension, or ``None`` with ``kaplan_yorke_reason``.
        participation_ratio: ``(Σσ)²/Σσ²`` over eigenvalues ``σ`` of the covariance of the
            hidden output ``h`` after warm-up, or ``None`` with ``participation_reason``.
        reason: why numbers are missing (the run stopped early on a non-finite state, or
            exponents are −∞), else ``None``.
        lambda_1_se: standard error of ``λ_1`` across sequences, ``sd(ddof=1)/√B`` of the
            per-sequence leading exponents (``None`` for ``B = 1``).
        frame_lambda_1: ``λ_1`` from each starting frame, the reported frame first (so
            ``frame_lambda_1[0] == lambda_1``); ``None`` for a frame whose vector collapsed.
        frame_range: ``max − min`` of ``frame_lambda_1`` (``None`` with fewer than two).
        lambda_1_low, lambda_1_high: the interval ``λ_1 ∓ half-width``
            (:func:`lambda_interval`), ``None`` when ``λ_1`` is.
        interval_rule: the interval's formula with its numbers.
    """

    drive: str
    sequences: int
    steps: int
    warmup: int
    k: int
    state_size: int
    exponents: tuple[float | None, ...]
    spread: tuple[float | None, ...]
    lambda_1: float | None
    total: float | None
    kaplan_yorke: float | None
    kaplan_yorke_reason: str | None
    participation_ratio: float | None
    participation_reason: str | None
    reason: str | None = None
    lambda_1_se: float | None = None
    frame_lambda_1: tuple[float | None, ...] = ()
    frame_range: float | None = None
    lambda_1_low: float | None = None
    lambda_1_high: float | None = None
    interval_rule: str | None = None


@dataclass(frozen=True)
class LambdaInterval:
    """``λ_1 ± half_width`` and what the half-width is made of (:func:`lambda_interval`)."""

    center: float
    se: float | None
    frame_range: float | None
    t: float | None
    half_width: float
    low: float
    high: float
    rule: str


@dataclass(frozen=True)
class TrajectoryStats:
    """What one pass over sequences gathers (internal to the ODE analysis).

    Attributes:
        exponents: ``(B, k)`` per-sequence exponents, sorted, ``-inf`` for collapsed ones.
        frame_exponents: ``(B, frames − 1)`` per-sequence growth rates of the extra
            starting vectors (``-inf`` for collapsed ones), ``None`` when the run stopped.
        hidden_n, hidden_sum, hidden_outer: streamed moments of ``h`` after warm-up.
        gate_n, gate_sum, gate_log_sum: count, ``Σ(1 − g)`` and ``Σ ln g`` of the step gate.
        jacobian_sum, jacobian_n: sum and count of full Jacobians at sampled points.
        reason: why the pass stopped early, else ``None``.
    """

    exponents: Tensor | None
    hidden_n: int
    hidden_sum: Tensor
    hidden_outer: Tensor
    gate_n: int
    gate_sum: float
    gate_log_sum: float
    jacobian_sum: Tensor | None
    jacobian_n: int
    reason: str | None
    frame_exponents: Tensor | None = None


def default_warmup(steps: int) -> int:
    """Warm-up steps: ``max(T // 10, min(20, T // 2))`` (20 for ``T = 200``, half of short runs)."""
    return max(steps // 10, min(20, steps // 2))


def trajectory_pass(
    fmap: StepMap,
    inputs: Tensor,
    *,
    k: int,
    warmup: int,
    seed: int = 0,
    jacobian_points: int = 0,
    frames: int = 1,
) -> TrajectoryStats:
    """Drive the map from the zero state and gather exponents, moments and Jacobians.

    Args:
        fmap: the one-step map.
        inputs: ``(T, B, d_in)`` float64, in the cell's own time order.
        k: how many leading exponents (``1 ≤ k ≤ D``).
        warmup: steps excluded from every average (``0 ≤ warmup < T``).
        seed: seeds the random orthonormal ``Q_0``.
        jacobian_points: full Jacobians to average at evenly spaced (step, sample) points
            after warm-up (0: none).
        frames: starting frames (``≥ 1``). The first is ``Q_0``; each further one is a
            random unit vector drawn after ``Q_0`` from the same seeded generator, carried
            alongside ``Q`` in the same Jacobian-vector products and renormalised alone.
    """
    steps, batch = inputs.shape[0], inputs.shape[1]
    d, h = fmap.state_size, fmap.out_size
    if not (1 <= k <= d and 0 <= warmup < steps and frames >= 1):
        raise ValueError(
            f"need 1 ≤ k ≤ {d}, 0 ≤ warmup < {steps} and frames ≥ 1, "
            f"got k={k}, warmup={warmup}, frames={frames}"
        )
    gen = torch.Generator().manual_seed(seed)
    q0 = torch.linalg.qr(torch.randn(d, k, generator=gen, dtype=torch.float64))[0]
    q = q0.expand(batch, d, k).clone()
    v0 = torch.randn(d, frames - 1, generator=gen, dtype=torch.float64)
    v = (v0 / torch.linalg.vector_norm(v0, dim=0)).expand(batch, d, frames - 1).clone()
    v_log = torch.zeros(batch, frames - 1, dtype=torch.float64)
    v_collapsed = torch.zeros(batch, frames - 1, dtype=torch.bool)
    s = torch.zeros(batch, d, dtype=torch.float64)
    log_sum = torch.zeros(batch, k, dtype=torch.float64)
    collapsed = torch.zeros(batch, k, dtype=torch.bool)
    h_sum = torch.zeros(h, dtype=torch.float64)
    h_outer = torch.zeros(h, h, dtype=torch.float64)
    gate_n, gate_sum, gate_log = 0, 0.0, 0.0
    n_pts = min(jacobian_points, (steps - warmup) * batch)
    picks = set(np.unique(np.linspace(0, (steps - warmup) * batch - 1, n_pts).round().astype(int)))
    j_sum = torch.zeros(d, d, dtype=torch.float64) if n_pts else None
    reason = None
    for t in range(steps):
        x = inputs[t]
        counted = t >= warmup
        if counted and fmap.gate is not None:
            with torch.no_grad():
                g = fmap.gate(s, x)
            gate_n += g.numel()
            gate_sum += float((1.0 - g).sum())
            gate_log += float(torch.log(g.clamp_min(1e-300)).sum())
        if counted and j_sum is not None:
            rows = [b for b in range(batch) if (t - warmup) * batch + b in picks]
            if rows:
                j_sum += fmap.jacobian(s[rows], x[rows]).detach().sum(0)
        z = fmap.tangent(s, x, torch.cat([q, v], dim=2) if frames > 1 else q).detach()
        z, w = z[..., :k], z[..., k:]
        with torch.no_grad():
            s = fmap.step(s, x)
        if not (torch.isfinite(s).all() and torch.isfinite(z).all() and torch.isfinite(w).all()):
            reason = f"state became non-finite at step {t}"
            break
        growth = torch.linalg.vector_norm(w, dim=1)
        v = w / growth.clamp_min(1e-300).unsqueeze(1)
        if counted:
            v_collapsed |= growth == 0
            v_log += torch.log(growth.clamp_min(1e-300))
        q, r = torch.linalg.qr(z)
        diag = torch.diagonal(r, dim1=-2, dim2=-1)
        sign = torch.where(diag < 0, -1.0, 1.0).to(torch.float64)
        q = q * sign.unsqueeze(-2)
        if counted:
            a = diag.abs()
            collapsed |= a == 0
            log_sum += torch.log(a.clamp_min(1e-300))
            hs = s[:, :h]
            h_sum += hs.sum(0)
            h_outer += hs.T @ hs
    n_counted = steps - warmup
    exps = v_exps = None
    if reason is None:
        exps = torch.where(collapsed, -math.inf, log_sum / n_counted)
        exps = exps.sort(dim=1, descending=True).values
        v_exps = torch.where(v_collapsed, -math.inf, v_log / n_counted)
    return TrajectoryStats(
        exponents=exps,
        hidden_n=n_counted * batch if reason is None else 0,
        hidden_sum=h_sum,
        hidden_outer=h_outer,
        gate_n=gate_n,
        gate_sum=gate_sum,
        gate_log_sum=gate_log,
        jacobian_sum=j_sum,
        jacobian_n=len(picks),
        reason=reason,
        frame_exponents=v_exps,
    )


def kaplan_yorke(
    exponents: tuple[float | None, ...] | list[float | None], state_size: int
) -> tuple[float | None, str | None]:
    """Kaplan–Yorke dimension ``j + S_j / |λ_{j+1}|`` from exponents sorted descending.

    ``j`` is the largest index with ``S_j = Σ_{i≤j} λ_i ≥ 0``; ``None`` entries count as
    ``-∞``. All-negative spectra give 0. When every partial sum is non-negative the answer
    is ``D`` if the spectrum is complete, else ``None`` (the truncated spectrum cannot tell).

    Returns:
        The dimension, or ``None`` and the reason.
    """
    vals = [-math.inf if v is None else float(v) for v in exponents]
    if not vals:
        return None, "no exponents"
    if vals[0] < 0:
        return 0.0, None
    partial = 0.0
    for j, lam in enumerate(vals):
        if partial + lam < 0:
            return (float(j) if lam == -math.inf else j + partial / abs(lam)), None
        partial += lam
    if len(vals) == state_size:
        return float(state_size), None
    return None, f"the {len(vals)} leading exponents still sum to ≥ 0 (spectrum truncated)"


def participation_ratio(cov_eigenvalues: Tensor) -> tuple[float | None, str | None]:
    """``(Σσ)²/Σσ²`` of covariance eigenvalues (negatives from rounding clipped to 0).

    Scale-free, so it is computed on ``σ/max σ``: eigenvalues of states that grew large
    (an expanding recurrence) would overflow ``Σσ²`` otherwise.
    """
    ev = cov_eigenvalues.to(torch.float64).clamp_min(0.0)
    if not bool(torch.isfinite(ev).all()):
        return None, "hidden-state moments overflowed"
    top = float(ev.max()) if ev.numel() else 0.0
    if top == 0.0:
        return None, "hidden states do not vary"
    ev = ev / top
    return float(ev.sum()) ** 2 / float((ev**2).sum()), None


def state_participation_ratio(states: Tensor) -> tuple[float | None, str | None]:
    """Participation ratio of the covariance of ``(N, H)`` states."""
    x = states.to(torch.float64)
    if x.shape[0] < 2:
        return None, "fewer than two states"
    cov = torch.cov(x.T, correction=0).reshape(x.shape[1], x.shape[1])
    return participation_ratio(torch.linalg.eigvalsh(cov))


def lambda_interval(
    per_sequence: np.ndarray,
    frame_values: list[float | None],
    *,
    confidence: float = 0.95,
    floor: float = 1e-3,
    single_floor: float = 0.1,
) -> LambdaInterval | None:
    """The interval ``λ_1 ± h`` around ``λ_1 = mean_b λ_1^(b)`` (docs/ode.md "Verdict").

    With ``B ≥ 2`` sequences ``h = max(t·SE + R_F, floor)``: ``SE = sd(λ_1^(b))/√B``
    (``ddof = 1``), ``t`` the two-sided ``confidence`` quantile of Student's t with
    ``B − 1`` degrees of freedom, and ``R_F`` the range (max − min) of ``λ_1`` over the
    starting frames (0 with one frame). The frames shift every sequence alike, so their
    spread is not in ``SE`` and is added to it, whole. With one sequence there is no SE:
    ``h = max(R_F, single_floor)``.

    Args:
        per_sequence: ``λ_1`` of each sequence in the reported frame.
        frame_values: ``λ_1`` of each starting frame, the reported one first; ``None``
            entries (collapsed vectors) are left out of ``R_F``.
        confidence: coverage of the t-interval, in ``(0, 1)``.
        floor: the least half-width with ``B ≥ 2`` (numerical resolution).
        single_floor: the least half-width with ``B = 1``.

    Returns:
        The interval, or ``None`` when a per-sequence value is not finite.
    """
    e = np.asarray(per_sequence, dtype=np.float64)
    if e.size == 0 or not np.isfinite(e).all():
        return None
    center = float(e.mean())
    finite = [f for f in frame_values if f is not None and math.isfinite(f)]
    spread = float(max(finite) - min(finite)) if len(finite) > 1 else None
    r_f = spread or 0.0
    frames = f"range over {len(finite)} frames R_F = {r_f:.3g}" if spread is not None else (
        "one frame: R_F = 0")
    if e.size > 1:
        from scipy.stats import t as student_t

        se = float(e.std(ddof=1)) / math.sqrt(e.size)
        t = float(student_t.ppf(0.5 + confidence / 2, e.size - 1))
        half = max(t * se + r_f, floor)
        rule = (
            f"λ_1 ± max(t·SE + R_F, {floor:g}) with t = t_{0.5 + confidence / 2:g},{e.size - 1} "
            f"= {t:.4g}, SE = {se:.3g} over {e.size} sequences, {frames} → ±{half:.3g}"
        )
    else:
        se = t = None
        half = max(r_f, single_floor)
        rule = (
            f"one sequence, no standard error: λ_1 ± max(R_F, {single_floor:g}) "
            f"(single-sequence band), {frames} → ±{half:.3g}"
        )
    return LambdaInterval(center, se, spread, t, half, center - half, center + half, rule)


def interval_evidence(lyap: LyapunovResult, confidence: float, single_floor: float) -> str:
    """What a verdict from ``λ_1``'s interval rests on, in words."""
    frames = sum(f is not None for f in lyap.frame_lambda_1)
    if lyap.sequences > 1:
        return (
            f"λ_1 along {lyap.sequences} probe sequences, {frames} starting frame(s): "
            f"{confidence:g} t-interval over the sequences widened by the frame range"
        )
    return (
        f"λ_1 along one probe sequence, {frames} starting frame(s): no standard error, so "
        f"the interval is the frame range, at least the single-sequence band {single_floor:g}"
    )


def lyapunov_result(
    stats: TrajectoryStats,
    *,
    drive: str,
    steps: int,
    warmup: int,
    k: int,
    state_size: int,
    confidence: float = 0.95,
    floor: float = 1e-3,
    single_floor: float = 0.1,
) -> tuple[LyapunovResult, LambdaInterval | None]:
    """Average per-sequence exponents and finish the moments into a record.

    ``confidence``, ``floor`` and ``single_floor`` set ``λ_1``'s interval
    (:func:`lambda_interval`), returned too (``None`` without ``λ_1``) so a verdict can
    use its exact half-width.
    """
    batch = 0 if stats.exponents is None else stats.exponents.shape[0]
    if stats.exponents is None:
        return LyapunovResult(
            drive,
            batch,
            steps,
            warmup,
            k,
            state_size,
            (),
            (),
            None,
            None,
            None,
            "no exponents",
            None,
            "no states",
            stats.reason,
        ), None
    e = stats.exponents.numpy()
    means: list[float | None] = []
    spread: list[float | None] = []
    for i in range(e.shape[1]):
        col = e[:, i]
        if not np.isfinite(col).all():
            means.append(None)
            spread.append(None)
            continue
        means.append(float(col.mean()))
        spread.append(float(col.std(ddof=1)) if len(col) > 1 else None)
    ky, ky_reason = kaplan_yorke(means, state_size)
    n = stats.hidden_n
    mean_h = stats.hidden_sum / n
    cov = stats.hidden_outer / n - torch.outer(mean_h, mean_h)
    if torch.isfinite(cov).all():
        pr, pr_reason = participation_ratio(torch.linalg.eigvalsh((cov + cov.T) / 2))
    else:
        pr, pr_reason = None, "hidden-state moments overflowed"
    frame_values: list[float | None] = [means[0]]
    if stats.frame_exponents is not None:
        for col in stats.frame_exponents.numpy().T:
            frame_values.append(float(col.mean()) if np.isfinite(col).all() else None)
    iv = lambda_interval(
        e[:, 0], frame_values, confidence=confidence, floor=floor, single_floor=single_floor
    )
    missing = sum(m is None for m in means)
    total = None if missing else float(sum(means))  # type: ignore[arg-type]
    why = stats.reason
    if why is None and missing:
        why = (f"{missing} of {len(means)} exponents are −∞ in some sequence: the tangent "
               "directions collapsed (the Jacobian product lost rank)")
    result = LyapunovResult(
        drive=drive,
        sequences=batch,
        steps=steps,
        warmup=warmup,
        k=k,
        state_size=state_size,
        exponents=tuple(means),
        spread=tuple(spread),
        lambda_1=means[0],
        total=total,
        kaplan_yorke=ky,
        kaplan_yorke_reason=ky_reason,
        participation_ratio=pr,
        participation_reason=pr_reason,
        reason=why,
        lambda_1_se=None if iv is None else iv.se,
        frame_lambda_1=tuple(frame_values),
        frame_range=None if iv is None else iv.frame_range,
        lambda_1_low=None if iv is None else iv.low,
        lambda_1_high=None if iv is None else iv.high,
        interval_rule=None if iv is None else iv.rule,
    )
    return result, iv
