"""Checkpoint sequences: planted events, hysteresis, mode-learned timeline, imbalance law."""

from __future__ import annotations

import math

import pytest
import torch

from symtool.errors import UsageError
from symtool.symmetry.analysis import analyse_symmetry
from symtool.symmetry.records import SymmetrySettings
from symtool.symmetry.timeline import analyse_sequence

_G = torch.Generator().manual_seed(0)
_U, _ = torch.linalg.qr(torch.randn(12, 12, generator=_G, dtype=torch.float64))
_V, _ = torch.linalg.qr(torch.randn(10, 10, generator=_G, dtype=torch.float64))


def _layer(sigma: list[float]) -> dict[str, torch.Tensor]:
    """One 12 × 10 layer with singular values ``sigma`` along fixed directions."""
    s = torch.tensor(sigma, dtype=torch.float64)
    return {"a.weight": _U[:, : len(sigma)] @ torch.diag(s) @ _V[:, : len(sigma)].T}


def _sequence(states: list[dict[str, torch.Tensor]], steps: list[int] | None = None,
              settings: SymmetrySettings | None = None):
    steps = steps if steps is not None else list(range(len(states)))
    return [(s, analyse_symmetry(sd, settings)) for s, sd in zip(steps, states, strict=True)]


def _events(seq, quantity: str) -> list[tuple[int, int, int, str]]:
    return [(e.step, e.before, e.after, e.label) for e in seq.events if e.quantity == quantity]


def test_modes_switching_on_give_breaking_events_and_learned_steps():
    steps = list(range(0, 110, 10))
    states = []
    for t in steps:
        s2 = 0.5 if t >= 30 else 1e-4
        s3 = 0.3 if t >= 60 else 1e-4
        s4 = 0.5 if t == 80 else 1e-4  # a one-checkpoint blip: no event
        states.append(_layer([1.0, s2, s3, s4]))
    seq = analyse_sequence(_sequence(states, steps)[::-1])  # order does not matter
    assert seq.steps == tuple(steps)
    (rank,) = [s for s in seq.series if s.quantity == "rank"]
    assert rank.values == (1, 1, 1, 2, 2, 2, 3, 3, 4, 3, 3)
    assert _events(seq, "rank") == [(30, 1, 2, "breaking"), (60, 2, 3, "breaking")]
    assert [(m.mode, m.step) for m in seq.modes] == [(2, 30), (3, 60), (4, 80)]


def test_hysteresis_ignores_wobbles_between_tau_and_three_tau():
    ratios = [0.008, 0.008, 0.012, 0.012, 0.008, 0.008, 0.05, 0.05, 0.012, 0.012, 0.005, 0.005]
    results = _sequence([_layer([1.0, r]) for r in ratios])
    seq = analyse_sequence(results)
    assert _events(seq, "rank") == [(6, 1, 2, "breaking"), (10, 2, 1, "restoration")]
    (rank,) = seq.series
    assert rank.hysteretic == (1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 1, 1)
    plain = analyse_sequence(results, hysteresis=1.0)
    assert [e[0] for e in _events(plain, "rank")] == [2, 4, 6, 10]


def _units(t: int) -> dict[str, torch.Tensor]:
    """6 units: 0 and 1 die at step 40, 3 copies 2 from step 70, 1 revives at step 100."""
    g = torch.Generator().manual_seed(3)
    w1, w2 = torch.randn(6, 5, generator=g), torch.randn(4, 6, generator=g)
    dead = [0, 1] if 40 <= t < 100 else [0] if t >= 100 else []
    for i in dead:
        w1[i], w2[:, i] = 1e-5 * w1[i], 1e-5 * w2[:, i]
    if t >= 70:
        w1[3], w2[:, 3] = w1[2], w2[:, 2]
    return {"fc1.weight": w1, "fc2.weight": w2}


def test_dying_merging_and_reviving_units_give_labelled_events():
    steps = list(range(0, 120, 10))
    seq = analyse_sequence(_sequence([_units(t) for t in steps], steps))
    assert _events(seq, "dead") == [(40, 0, 2, "restoration"), (100, 2, 1, "breaking")]
    assert _events(seq, "independent") == [(40, 6, 4, "restoration"), (70, 4, 3, "restoration"),
                                           (100, 3, 4, "breaking")]


def test_imbalance_decay_rate_and_conservation():
    g = torch.Generator().manual_seed(4)
    w1, b1, w2 = torch.randn(8, 5, generator=g), torch.randn(8, generator=g), torch.randn(3, 8,
                                                                                          generator=g)
    w1[:4] *= 2.0  # make imbalances clearly non-zero
    lam = 0.01
    steps = list(range(0, 220, 20))
    decaying = [(t, analyse_symmetry({"fc1.weight": w1 * math.exp(-lam * t),
                                      "fc1.bias": b1 * math.exp(-lam * t),
                                      "fc2.weight": w2 * math.exp(-lam * t)})) for t in steps]
    (trend,) = analyse_sequence(decaying).imbalance
    assert trend.law == "decaying" and trend.rate == pytest.approx(lam, rel=1e-6)
    assert trend.r2 == pytest.approx(1.0) and trend.label == "law: SGD with L2 only"
    still = [(t, analyse_symmetry({"fc1.weight": w1, "fc2.weight": w2})) for t in steps[:3]]
    (trend,) = analyse_sequence(still).imbalance
    assert trend.law == "conserved" and trend.drift == 0.0


def test_deep_linear_network_learns_modes_in_order_of_strength():
    """Two-layer linear net from small init under GD: modes break one at a time."""
    torch.manual_seed(0)
    d = 8
    u, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    target = u @ torch.diag(torch.tensor([4.0, 2.0, 1.0, 0.5] + [0.0] * 4,
                                         dtype=torch.float64)) @ v.T
    w1 = torch.randn(d, d, dtype=torch.float64) * 1e-3
    w2 = torch.randn(d, d, dtype=torch.float64) * 1e-3
    settings = SymmetrySettings(activation="identity")
    results = []
    for step in range(601):
        if step % 10 == 0:
            results.append((step, analyse_symmetry({"l1.weight": w1.clone(),
                                                    "l2.weight": w2.clone()}, settings)))
        err = w2 @ w1 - target
        w1, w2 = w1 - 0.05 * w2.T @ err, w2 - 0.05 * err @ w1.T
    seq = analyse_sequence(results)
    learned = [(m.mode, m.step) for m in seq.modes if m.layer == "l1"]
    assert [k for k, _ in learned] == [3, 4] and learned[0][1] < learned[1][1]
    breaking = [(e.before, e.after) for e in seq.events
                if e.layer == "l1" and e.label == "breaking"]
    assert breaking == [(2, 3), (3, 4)]
    (rank,) = [s for s in seq.series if s.layer == "l1" and s.quantity == "rank"]
    assert rank.values[-1] == 4


def test_sequence_input_errors():
    res = analyse_symmetry(_layer([1.0]))
    with pytest.raises(UsageError):
        analyse_sequence([])
    with pytest.raises(UsageError, match="repeated"):
        analyse_sequence([(1, res), (1, res)])
    short = analyse_sequence([(0, res)], persist=1)
    assert short.events == () and short.notes == ()
    no_hyst = analyse_sequence([(0, analyse_symmetry(_layer([1.0]), SymmetrySettings(
        rank_taus=(1e-2,))))])
    assert any("no hysteresis" in n for n in no_hyst.notes)


def test_imbalance_law_needs_a_rescaling_symmetry():
    # docs/theory.md §5: the law follows from (w, b, u) → (c·w, c·b, u/c), which tanh units lack
    g = torch.Generator().manual_seed(5)
    w1, w2 = torch.randn(8, 5, generator=g), torch.randn(3, 8, generator=g)
    tanh = SymmetrySettings(activation="tanh")
    seq = [(t, analyse_symmetry({"fc1.weight": w1 * math.exp(-0.01 * t),
                                 "fc2.weight": w2 * math.exp(-0.01 * t)}, tanh))
           for t in (0, 20, 40)]
    (trend,) = analyse_sequence(seq).imbalance
    assert trend.law is None and trend.rate is None
    assert "no rescaling symmetry" in (trend.reason or "") and "tanh" in (trend.reason or "")
    # the per-checkpoint imbalances are still reported
    units = seq[0][1].units[0]
    assert units.imbalance is not None and units.imbalance.mean_abs > 0


def test_linear_pair_matrix_imbalance_law():
    """docs/theory.md §5: for a linear pair, AAᵀ − BᵀB is conserved by gradient descent without
    weight decay (up to O(lr²)) and decays like e^{−2λt} with it."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(64, 5, generator=g, dtype=torch.float64)
    target = torch.randn(5, 3, generator=g, dtype=torch.float64) * 0.5
    y = x @ target
    identity = SymmetrySettings(activation="identity")
    lr = 0.02

    def train(wd: float) -> list:
        w1 = torch.randn(8, 5, generator=g, dtype=torch.float64) * 0.5
        b1 = torch.randn(8, generator=g, dtype=torch.float64) * 0.5
        w2 = torch.randn(3, 8, generator=g, dtype=torch.float64) * 0.5
        out = []
        for step in range(301):
            if step % 30 == 0:
                out.append((step, analyse_symmetry(
                    {"fc1.weight": w1.clone(), "fc1.bias": b1.clone(), "fc2.weight": w2.clone()},
                    identity)))
            err = ((x @ w1.T + b1) @ w2.T - y) / x.shape[0]  # d(½ mean ‖·‖²)/d output
            hid = x @ w1.T + b1
            gw2, gh = err.T @ hid, err @ w2
            gw1, gb1 = gh.T @ x, gh.sum(0)
            w1, b1, w2 = (w1 - lr * (gw1 + wd * w1), b1 - lr * (gb1 + wd * b1),
                          w2 - lr * (gw2 + wd * w2))
        return out

    plain = analyse_sequence(train(0.0)).imbalance
    assert [t.quantity for t in plain] == ["units", "matrix"]
    matrix = plain[1]
    assert matrix.law == "conserved" and matrix.drift < 1e-2
    first = train(0.0)[0][1].units[0].linear_pair
    assert first is not None and first.imbalance_norm > 0.1 * first.k_norm  # not trivially 0
    decayed = analyse_sequence(train(0.1)).imbalance[1]
    assert decayed.law == "decaying"
    assert decayed.rate == pytest.approx(lr * 0.1, rel=0.05)  # λ per step = lr · wd
    # exact e^{−2λt}: A and B scaled by e^{−λt}
    w1, w2 = torch.randn(8, 5, generator=g), torch.randn(3, 8, generator=g)
    planted = [(t, analyse_symmetry({"fc1.weight": w1 * math.exp(-0.01 * t),
                                     "fc2.weight": w2 * math.exp(-0.01 * t)}, identity))
               for t in (0, 20, 40, 60)]
    exact = analyse_sequence(planted).imbalance[1]
    assert exact.quantity == "matrix" and exact.rate == pytest.approx(0.01, rel=1e-6)
    assert exact.r2 == pytest.approx(1.0)
    # pairs without the rotation symmetry get no matrix trend
    relu = [(t, analyse_symmetry({"fc1.weight": w1, "fc2.weight": w2})) for t in (0, 20)]
    assert [t.quantity for t in analyse_sequence(relu).imbalance] == ["units"]
