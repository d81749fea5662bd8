"""Symmetry breaking and restoration across a checkpoint sequence.

docs/theory.md §5 ("Across a checkpoint sequence", "Checkable laws"). From per-checkpoint
:class:`SymmetryResult` records this builds per-layer time series (rank at ``rank_tau``,
dead units, independent units; dead and independent heads), applies hysteresis, finds
persistent changes (events) labelled *breaking* or *restoration*, the "mode k learned"
timeline, and fits the imbalance law.

Hysteresis on counts. Every series has a count at its threshold ``τ`` and at ``3τ``; a
quantity enters its symmetric state below ``τ`` and leaves it above ``3τ``, so the
hysteretic count is clamped: ``h_t = min(max(h_{t−1}, lo_t), hi_t)`` with

* rank: ``lo = rank(3τ)``, ``hi = rank(τ)`` (a mode counts as broken once above ``3τ`` and
  stops once below ``τ``; modes are identified by their order ``k``);
* dead units: ``lo = dead(τ)``, ``hi = dead(3τ)``;
* independent units: ``lo = independent(3τ)``, ``hi = independent(τ)``.

An event is a change of ``h`` to a new level that holds for at least ``persist``
consecutive checkpoints (shorter excursions are ignored); its step is the first checkpoint
at the new level.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from symtool.errors import UsageError
from symtool.symmetry.records import (
    AttentionRecord,
    DeadAt,
    DuplicatesAt,
    Event,
    ImbalanceTrend,
    LayerRank,
    ModeLearned,
    SequenceResult,
    Series,
    SymmetryResult,
    UnitsRecord,
)

_UP_IS_BREAKING = {
    "rank": True,
    "dead": False,
    "independent": True,
    "dead_heads": False,
    "independent_heads": True,
}
"""Whether an increase of the quantity means a symmetry broke (else it was restored)."""

Bounds = tuple[int, int, int]
"""(value at τ, lower clamp, upper clamp) of one series point."""


def _find(items: Sequence, tau: float) -> object | None:
    """The item of a per-threshold tuple whose ``tau`` is ``tau``."""
    return next((x for x in items if math.isclose(x.tau, tau, rel_tol=1e-9)), None)


def _has(taus: Sequence[float], tau: float) -> bool:
    """Whether ``tau`` is one of ``taus``."""
    return any(math.isclose(t, tau, rel_tol=1e-9) for t in taus)


def _rank_bounds(rec: LayerRank, tau: float, k: float) -> Bounds | None:
    at, at3 = _find(rec.ranks, tau), _find(rec.ranks, k * tau)
    if rec.reason is not None or at is None:
        return None
    lo = at.rank if at3 is None else at3.rank
    return at.rank, lo, at.rank


def _dead_bounds(dead: Sequence[DeadAt], tau: float, k: float) -> Bounds | None:
    at, at3 = _find(dead, tau), _find(dead, k * tau)
    if at is None:
        return None
    return at.dead, at.dead, at.dead if at3 is None else at3.dead


def _dup_bounds(dups: Sequence[DuplicatesAt], tau: float, k: float) -> Bounds | None:
    at, at3 = _find(dups, tau), _find(dups, k * tau)
    if at is None:
        return None
    return at.independent, at.independent if at3 is None else at3.independent, at.independent


def _hysteresis(points: Sequence[Bounds | None]) -> list[int | None]:
    """Clamp each point into its bounds starting from the previous state."""
    state, out = None, []
    for p in points:
        if p is None:
            out.append(None)
            continue
        value, lo, hi = p
        state = value if state is None else min(max(state, lo), hi)
        out.append(state)
    return out


def _events(layer: str, quantity: str, steps: Sequence[int], h: Sequence[int | None],
            persist: int) -> list[Event]:
    """Persistent level changes of a hysteretic series."""
    pts = [(s, v) for s, v in zip(steps, h, strict=True) if v is not None]
    runs: list[list] = []  # [value, first step, length]
    for s, v in pts:
        if runs and runs[-1][0] == v:
            runs[-1][2] += 1
        else:
            runs.append([v, s, 1])
    if not runs:
        return []
    level, events = runs[0][0], []
    for value, step, length in runs[1:]:
        if length >= persist and value != level:
            up = value > level
            label = "breaking" if up == _UP_IS_BREAKING[quantity] else "restoration"
            events.append(Event(layer, quantity, step, level, value, label))
            level = value
    return events


def _modes(layer: str, steps: Sequence[int], recs: Sequence[LayerRank | None]) -> list[ModeLearned]:
    """Steps where ``σ_k/σ_1`` first goes from below 1e-2 to above 1e-1, per ``k``."""
    low: list[int | None] = []
    high: list[int | None] = []
    for rec in recs:
        a = None if rec is None or rec.reason else _find(rec.ranks, 1e-2)
        b = None if rec is None or rec.reason else _find(rec.ranks, 1e-1)
        low.append(None if a is None else a.rank)
        high.append(None if b is None else b.rank)
    top = max((h for h in high if h is not None), default=0)
    out = []
    for k in range(1, top + 1):
        below = next((i for i, r in enumerate(low) if r is not None and r < k), None)
        if below is None:
            continue
        hit = next((i for i in range(below + 1, len(high))
                    if high[i] is not None and high[i] >= k), None)
        if hit is not None:
            out.append(ModeLearned(layer, k, steps[hit]))
    return out


def _no_fit(layer: str, points: int, reason: str, quantity: str) -> ImbalanceTrend:
    return ImbalanceTrend(layer, points, None, None, None, None, None, None, reason=reason,
                          quantity=quantity)


def _law(layer: str, quantity: str, pts: Sequence[tuple[int, float]],
         drift: Callable[[], float], decay_ratio: float, conserved_tol: float,
         min_r2: float) -> ImbalanceTrend:
    """Fit ``log value`` against step and classify the law; no fit with fewer than two
    points or a zero value. ``drift`` is called only when every value is positive."""
    if len(pts) < 2:
        return _no_fit(layer, len(pts), "fewer than 2 checkpoints with imbalances", quantity)
    if any(v <= 0.0 for _, v in pts):
        return _no_fit(layer, len(pts), "zero imbalance at some checkpoint (log undefined)",
                       quantity)
    t = np.array([s for s, _ in pts], dtype=np.float64)
    y = np.log(np.array([v for _, v in pts], dtype=np.float64))
    slope, icpt = np.polyfit(t, y, 1)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    ss_res = float(((y - (slope * t + icpt)) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else None
    ratio = pts[-1][1] / pts[0][1]
    d = drift()
    if d <= conserved_tol:
        law = "conserved"
    elif slope < 0 and ratio <= decay_ratio and r2 is not None and r2 >= min_r2:
        law = "decaying"
    else:
        law = "neither"
    return ImbalanceTrend(layer, len(pts), float(slope), float(-slope / 2.0), r2, float(d),
                          float(ratio), law, quantity=quantity)


def _imbalance(layer: str, steps: Sequence[int], recs: Sequence[UnitsRecord | None],
               conserved_tol: float, decay_ratio: float, min_r2: float) -> ImbalanceTrend:
    """Fit ``log mean|C|`` against step and classify the law."""
    pts = [(s, r.imbalance) for s, r in zip(steps, recs, strict=True)
           if r is not None and r.imbalance is not None]
    acts = sorted({r.activation for r in recs if r is not None and not r.balanced})
    if len(pts) >= 2 and acts:  # docs/theory.md §5: the law comes from the rescaling symmetry
        return _no_fit(layer, len(pts), f"activation {', '.join(map(str, acts))} has no "
                       "rescaling symmetry, so the imbalance law does not apply", "units")

    def drift() -> float:
        first = pts[0][1]
        return max(max(abs(im.mean - first.mean), abs(im.mean_abs - first.mean_abs))
                   for _, im in pts) / first.mean_abs

    return _law(layer, "units", [(s, im.mean_abs) for s, im in pts], drift, decay_ratio,
                conserved_tol, min_r2)


def _matrix_imbalance(layer: str, steps: Sequence[int], recs: Sequence[UnitsRecord | None],
                      conserved_tol: float, decay_ratio: float,
                      min_r2: float) -> ImbalanceTrend | None:
    """Fit ``log ‖AAᵀ − BᵀB‖_F`` of a linear pair against step (None: not a linear pair)."""
    pts = [(s, r.linear_pair.imbalance_norm) for s, r in zip(steps, recs, strict=True)
           if r is not None and r.linear_pair is not None]
    if not pts:
        return None
    return _law(layer, "matrix", pts,
                lambda: max(abs(v - pts[0][1]) for _, v in pts) / pts[0][1],
                decay_ratio, conserved_tol, min_r2)


def _collect(ordered: Sequence[tuple[int, SymmetryResult]],
             get: Callable[[SymmetryResult], dict[str, object]]) -> dict[str, list]:
    """``{name: [record or None per checkpoint]}`` in order of first appearance."""
    out: dict[str, list] = {}
    for i, (_, res) in enumerate(ordered):
        for name, rec in get(res).items():
            out.setdefault(name, [None] * len(ordered))[i] = rec
    return out


def analyse_sequence(
    results: Sequence[tuple[int, SymmetryResult]],
    *,
    persist: int = 2,
    hysteresis: float = 3.0,
    conserved_tol: float = 0.05,
    decay_ratio: float = 0.5,
    min_r2: float = 0.9,
) -> SequenceResult:
    """Series, events, mode-learned timeline and imbalance laws of a checkpoint sequence.

    Args:
        results: ``(step, result)`` per checkpoint, any order (sorted by step here).
        persist: checkpoints a new level must hold to count as an event.
        hysteresis: leave factor (enter below ``τ``, leave above ``hysteresis·τ``).
        conserved_tol: largest relative drift of the imbalance called "conserved".
        decay_ratio: last/first ``mean|C|`` at most this (and a good fit) = "decaying".
        min_r2: smallest R² of the log-linear fit for "decaying".

    Returns:
        The sequence record; thresholds come from the first result's settings.

    Raises:
        UsageError: no results, repeated steps, or ``persist < 1``.
    """
    if not results:
        raise UsageError("no checkpoints to analyse as a sequence")
    if persist < 1:
        raise UsageError(f"persist must be >= 1, got {persist}")
    ordered = sorted(results, key=lambda p: p[0])
    steps = tuple(int(s) for s, _ in ordered)
    if len(set(steps)) != len(steps):
        raise UsageError("repeated checkpoint steps: " + ", ".join(
            str(s) for s in sorted({s for s in steps if steps.count(s) > 1})))
    cfg = ordered[0][1].settings
    notes = []
    for name, taus, tau in (("rank_taus", cfg.rank_taus, cfg.rank_tau),
                            ("dead_taus", cfg.dead_taus, cfg.dead_tau),
                            ("dup_taus", cfg.dup_taus, cfg.dup_tau)):
        if not _has(taus, hysteresis * tau):
            notes.append(f"{name} lacks {hysteresis:g}·{tau:g}: no hysteresis on that series")
    if not _has(cfg.rank_taus, 1e-1):
        notes.append("rank_taus lacks 1e-1: no mode-learned timeline")
    layers = _collect(ordered, lambda r: {x.name: x for x in r.layers})
    units = _collect(ordered, lambda r: {x.incoming: x for x in r.units})
    heads = _collect(ordered, lambda r: {x.name: x for x in r.attention})
    specs: list[tuple[str, str, list[Bounds | None]]] = []
    for name, recs in layers.items():
        specs.append((name, "rank", [None if r is None else _rank_bounds(r, cfg.rank_tau,
                                                                          hysteresis)
                                     for r in recs]))
    for name, recs in units.items():
        ok = [r if r is not None and r.reason is None else None for r in recs]
        specs.append((name, "dead", [None if r is None else _dead_bounds(r.dead, cfg.dead_tau,
                                                                          hysteresis)
                                     for r in ok]))
        specs.append((name, "independent", [None if r is None else _dup_bounds(
            r.duplicates, cfg.dup_tau, hysteresis) for r in ok]))
    for name, recs in heads.items():
        ok2: list[AttentionRecord | None] = [
            r if r is not None and r.reason is None else None for r in recs]
        specs.append((name, "dead_heads", [None if r is None else _dead_bounds(
            r.dead, cfg.dead_tau, hysteresis) for r in ok2]))
        specs.append((name, "independent_heads", [None if r is None else _dup_bounds(
            r.duplicates, cfg.dup_tau, hysteresis) for r in ok2]))
    series, events = [], []
    for name, quantity, bounds in specs:
        h = _hysteresis(bounds)
        values = tuple(None if b is None else b[0] for b in bounds)
        series.append(Series(name, quantity, steps, values, tuple(h)))
        events.extend(_events(name, quantity, steps, h, persist))
    events.sort(key=lambda e: steps.index(e.step))
    modes = [m for name, recs in layers.items() for m in _modes(name, steps, recs)]
    trends = []
    for name, recs in units.items():
        trends.append(_imbalance(name, steps, recs, conserved_tol, decay_ratio, min_r2))
        matrix = _matrix_imbalance(name, steps, recs, conserved_tol, decay_ratio, min_r2)
        if matrix is not None:
            trends.append(matrix)
    return SequenceResult(steps, tuple(series), tuple(events), tuple(modes), tuple(trends),
                          tuple(notes))

