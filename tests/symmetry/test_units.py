"""Hidden units: planted dead / half-dead / duplicate units, blocked search vs brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from symtool.symmetry.records import SymmetrySettings
from symtool.symmetry.units import (
    analyse_units,
    balance,
    duplicate_search,
    linear_pair,
    screen_columns,
    unit_vectors,
)

SETTINGS = SymmetrySettings()


def _unit_rows(n: int, d_in: int, d_out: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random units whose incoming and outgoing parts both have norm exactly 1."""
    g = torch.Generator().manual_seed(seed)
    inc = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    out = torch.randn(n, d_out, generator=g, dtype=torch.float64)
    return inc / inc.norm(dim=1, keepdim=True), out / out.norm(dim=1, keepdim=True)


def _analyse(inc: torch.Tensor, out: torch.Tensor, activation: str = "relu",
             settings: SymmetrySettings = SETTINGS):
    return analyse_units(inc, out, incoming="a", outgoing="b", kind="linear", width=1,
                         source="auto", activation=activation, settings=settings)


def _planted() -> tuple[torch.Tensor, torch.Tensor]:
    """40 units: 3 and 17 zero, 30 and 31 at ν = 5e-3, 5 half-dead out, 6 half-dead in,
    10 = 2 exactly, 11 ≈ 2, 20 = 7 rescaled by 3, 25 = −8."""
    inc, out = _unit_rows(40, 12, 9, seed=1)
    for i in (3, 17):
        inc[i], out[i] = 0.0, 0.0
    for i in (30, 31):
        inc[i] *= 5e-3
        out[i] *= 5e-3
    out[5] = 0.0
    inc[6] = 0.0
    inc[10], out[10] = inc[2], out[2]
    inc[11], out[11] = inc[2] + 1e-4, out[2] - 1e-4
    inc[20], out[20] = 3.0 * inc[7], out[7] / 3.0
    inc[25], out[25] = -inc[8], -out[8]
    return inc, out


def test_planted_dead_units_are_counted_exactly_at_every_threshold():
    rec = _analyse(*_planted())
    by_tau = {d.tau: d for d in rec.dead}
    # ν of units 30/31 is 5e-3 exactly (max ‖θ‖ is sqrt(2) · 3 for unit 20: use ratios).
    assert by_tau[1e-2].dead == 4 and rec.dead_units == (3, 17, 30, 31)
    assert by_tau[1e-3].dead == 2
    assert by_tau[1e-2].half_dead_out == 1 and by_tau[1e-2].half_dead_in == 1
    assert rec.reason is None and rec.units == 40


def test_planted_duplicates_under_relu_include_rescaled_but_not_flipped():
    rec = _analyse(*_planted(), activation="relu")
    assert rec.balanced and not rec.sign_symmetric
    assert rec.clusters == ((2, 10, 11), (7, 20))
    main = next(d for d in rec.duplicates if d.tau == 1e-2)
    assert main.pairs == 4 and main.clusters == 2 and main.clustered_units == 5
    assert rec.independent_units == 36 - 5 + 2
    exact = next(p for p in rec.pairs if (p.i, p.j) == (2, 10))
    assert exact.distance == 0.0 and not exact.flipped
    assert rec.pairs[0].distance <= rec.pairs[-1].distance


def test_sign_flipped_duplicates_only_under_odd_activation():
    rec = _analyse(*_planted(), activation="tanh")
    assert rec.sign_symmetric and not rec.balanced
    assert rec.clusters == ((2, 10, 11), (8, 25))
    flipped = next(p for p in rec.pairs if (p.i, p.j) == (8, 25))
    assert flipped.flipped and flipped.distance == 0.0
    assert _analyse(*_planted(), activation="gelu").clusters == ((2, 10, 11),)


def test_gaussian_units_have_no_dead_or_duplicate_units():
    g = torch.Generator().manual_seed(5)
    inc = torch.randn(600, 65, generator=g, dtype=torch.float64)
    out = torch.randn(600, 40, generator=g, dtype=torch.float64)
    for act in ("relu", "tanh", "identity"):
        rec = _analyse(inc, out, activation=act)
        assert all(d.dead == d.half_dead_in == d.half_dead_out == 0 for d in rec.dead)
        assert all(d.pairs == 0 for d in rec.duplicates)
        assert rec.independent_units == 600


def test_balance_equalises_parts_and_keeps_zero_parts():
    inc, out = _unit_rows(6, 4, 3, seed=2)
    inc[0] *= 9.0
    out[1] = 0.0
    bi, bo = balance(inc, out)
    assert torch.allclose(bi[0].norm(), bo[0].norm()) and torch.allclose(bi[0].norm(),
                                                                         torch.tensor(3.0).double())
    assert torch.equal(bi[1], inc[1]) and torch.equal(bo[1], out[1])


def test_imbalance_is_input_norm_squared_minus_output_norm_squared():
    inc, out = _unit_rows(5, 3, 4, seed=3)
    inc[2] *= 2.0
    rec = _analyse(inc, out, settings=SymmetrySettings(keep_vectors=True))
    assert rec.imbalances == pytest.approx([0.0, 0.0, 3.0, 0.0, 0.0], abs=1e-12)
    assert rec.imbalance.mean == pytest.approx(0.6) and rec.imbalance.max == pytest.approx(3.0)


def test_non_finite_and_zero_units_give_reasons():
    inc, out = _unit_rows(4, 3, 2, seed=4)
    inc[1, 0] = float("nan")
    assert _analyse(inc, out).reason == "non-finite weights"
    assert _analyse(torch.zeros(3, 2), torch.zeros(3, 2)).reason == "all units are zero"


def _brute_distances(x: torch.Tensor, sign: bool) -> dict[tuple[int, int], float]:
    """Obviously correct reference: ``d_ij`` for every pair by a loop over pairs."""
    rows = [[float(v) for v in row] for row in x.tolist()]
    d = {}
    for i, j in itertools.combinations(range(len(rows)), 2):
        a, b = rows[i], rows[j]
        s = sum(v * v for v in a) + sum(v * v for v in b)
        if s == 0:
            continue
        dij = 2 * sum((p - q) ** 2 for p, q in zip(a, b, strict=True)) / s
        if sign:
            dij = min(dij, 2 * sum((p + q) ** 2 for p, q in zip(a, b, strict=True)) / s)
        d[(i, j)] = dij
    return d


def _brute(d: dict[tuple[int, int], float], n: int, tau: float) -> tuple[set, list]:
    """Pairs below ``tau`` and their clusters by a plain union-find."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    pairs = {p for p, v in d.items() if v < tau}
    for i, j in sorted(pairs):
        a, b = find(i), find(j)
        parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return pairs, sorted(tuple(g) for g in groups.values() if len(g) > 1)


def _random_with_planted(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(150, 20, generator=g, dtype=torch.float64)
    for k in range(25):  # near copies at distances straddling every threshold
        src = int(torch.randint(0, 150, (1,), generator=g))
        scale = [0.0, 1e-3, 0.03, 0.06, 0.1, 0.2][k % 6]
        sgn = -1.0 if k % 4 == 0 else 1.0
        x[100 + k % 50] = sgn * (x[src] + scale * torch.randn(20, generator=g, dtype=torch.float64))
    x[149] = 0.0
    return x


_BRUTE: dict[bool, dict[tuple[int, int], float]] = {}


@pytest.mark.parametrize("sign", [False, True], ids=["plain", "signed"])
@pytest.mark.parametrize("block,exact_limit", [(7, 1 << 16), (32, 0), (1000, 1 << 16)],
                         ids=["tiny-blocks", "float64-gram", "one-block"])
def test_blocked_search_equals_brute_force(sign: bool, block: int, exact_limit: int):
    x = _random_with_planted(11)
    if sign not in _BRUTE:
        _BRUTE[sign] = _brute_distances(x, sign)
    dist = _BRUTE[sign]
    taus = (1e-1, 3e-2, 1e-2)
    found = duplicate_search(x, taus, 1e-1, sign=sign, block=block, max_pairs=10_000,
                             exact_limit=exact_limit)
    for at in found.at:
        pairs, groups = _brute(dist, x.shape[0], at.tau)
        assert at.pairs == len(pairs)
        assert at.clusters == len(groups)
        assert at.independent == 150 - sum(len(g) for g in groups) + len(groups)
        if at.tau == 1e-1:
            assert {(p.i, p.j) for p in found.pairs} == pairs
            assert list(found.clusters) == groups
    assert any(a.pairs > 0 for a in found.at)


def _dense_distances(x: torch.Tensor, sign: bool) -> torch.Tensor:
    """Reference ``d_ij`` for all pairs from float64 differences (``inf`` on the diagonal)."""
    diff = (x[:, None, :] - x[None, :, :]).pow(2).sum(-1)
    s = x.pow(2).sum(1)
    tot = s[:, None] + s[None, :]
    d = 2.0 * diff / tot
    if sign:
        d = torch.minimum(d, 2.0 * (x[:, None, :] + x[None, :, :]).pow(2).sum(-1) / tot)
    d = torch.where(tot > 0, d, torch.inf)
    return d.fill_diagonal_(torch.inf)


def _wide_with_planted(seed: int, p: int = 640) -> torch.Tensor:
    """200 wide rows: near copies at every threshold, copies that differ only in the
    low-energy columns a partial screen skips, rows equal on the screened columns but far
    apart elsewhere, sign flips and a zero row."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(200, p, generator=g, dtype=torch.float64)
    x[:, p // 2 :] *= 0.05  # the screen takes the first half's columns
    for k in range(30):
        src = int(torch.randint(0, 150, (1,), generator=g))
        scale = [0.0, 1e-3, 0.03, 0.06, 0.1, 0.2][k % 6]
        sgn = -1.0 if k % 4 == 0 else 1.0
        x[150 + k] = sgn * (x[src] + scale * torch.randn(p, generator=g, dtype=torch.float64))
    for k in range(10):  # differ only where the screen does not look: it must keep them
        x[180 + k] = x[k]
        x[180 + k, p // 2 :] += 0.2 * torch.randn(p - p // 2, generator=g, dtype=torch.float64)
    for k in range(9):  # agree where the screen looks, far apart elsewhere
        x[190 + k, : p // 2] = x[20 + k, : p // 2]
        x[190 + k, p // 2 :] = 40.0 * torch.randn(p - p // 2, generator=g, dtype=torch.float64)
    x[199] = 0.0
    return x


@pytest.mark.parametrize("sign", [False, True], ids=["plain", "signed"])
@pytest.mark.parametrize("screen,block", [(None, 64), (None, 1000), (8, 64), (320, 50)],
                         ids=["auto", "auto-one-block", "loose-screen", "half-columns"])
def test_partial_screen_search_equals_dense_reference(sign: bool, screen, block: int):
    x = _wide_with_planted(5)
    assert screen_columns(x, screen, 0.1) is not None or screen == 320
    d = _dense_distances(x, sign)
    taus = (1e-1, 3e-2, 1e-2, 1e-3)
    found = duplicate_search(x, taus, 1e-1, sign=sign, block=block, max_pairs=10_000,
                             screen=screen)
    dist = {(i, j): float(d[i, j]) for i in range(200) for j in range(i + 1, 200)
            if d[i, j] < 1e-1}
    for at in found.at:
        pairs, groups = _brute(dist, 200, at.tau)
        assert at.pairs == len(pairs)
        assert at.clusters == len(groups)
        if at.tau == 1e-1:
            assert {(p.i, p.j) for p in found.pairs} == pairs
            assert list(found.clusters) == groups
            for pair in found.pairs:
                assert pair.distance == pytest.approx(dist[(pair.i, pair.j)], rel=1e-12, abs=1e-300)
    assert {(k, 180 + k) for k in range(10)} <= {(p.i, p.j) for p in found.pairs}
    assert not {(20 + k, 190 + k) for k in range(9)} & {(p.i, p.j) for p in found.pairs}


@pytest.mark.parametrize("scale", [1e-30, 1e30], ids=["tiny", "huge"])
def test_search_is_scale_free_beyond_float32_range(scale: float):
    """Weights far outside float32's range (as float64) give the same pairs as at scale 1."""
    x = _wide_with_planted(7, p=320)
    ref = duplicate_search(x, (1e-1, 1e-2), 1e-1, sign=True, max_pairs=10_000)
    got = duplicate_search(x * scale, (1e-1, 1e-2), 1e-1, sign=True, max_pairs=10_000)
    assert ref.at == got.at and ref.clusters == got.clusters
    assert [(p.i, p.j) for p in ref.pairs] == [(p.i, p.j) for p in got.pairs]
    assert ref.at[0].pairs > 10


def test_screen_columns_take_the_largest_energy_and_skip_when_not_worth_it():
    x = torch.randn(50, 1000, dtype=torch.float64)
    x[:, 100:225] *= 10.0
    cols = screen_columns(x, None, 0.1)
    assert cols is not None and cols.tolist() == list(range(100, 225))  # ⌈1000/8⌉ = 125
    assert screen_columns(x, None, 0.5) is None  # would need 625 of 1000 columns
    assert screen_columns(x[:, :100], None, 0.1) is None  # 64 of 100: over half
    assert screen_columns(x, 10, 0.1).tolist() == sorted(screen_columns(x, 10, 0.1).tolist())


def test_single_linkage_chains_and_pair_cap():
    x = torch.zeros(3, 50, dtype=torch.float64)
    x[:, 0] = 10.0
    x[1, 1] = 0.8  # d(0,1) ≈ d(1,2) ≈ 0.0064, d(0,2) ≈ 0.025
    x[2, 1] = 1.6
    found = duplicate_search(x, (1e-2,), 1e-2, max_pairs=1)
    assert found.clusters == ((0, 1, 2),)
    assert found.at[0].pairs == 2 and len(found.pairs) == 1 and found.truncated


def test_search_maps_indices():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    found = duplicate_search(x, (1e-2,), 1e-2, index=[4, 9, 12])
    assert found.clusters == ((4, 12),) and (found.pairs[0].i, found.pairs[0].j) == (4, 12)


def test_unit_vectors_for_conv_and_flatten_columns():
    conv1, conv2 = torch.nn.Conv2d(3, 5, 3), torch.nn.Conv2d(5, 4, 2)
    inc, out = unit_vectors(conv1.weight.reshape(5, -1), conv1.bias,
                            conv2.weight.reshape(4, -1), width=4)
    for c in range(5):
        assert torch.equal(inc[c, :-1], conv1.weight[c].reshape(-1).double())
        assert inc[c, -1] == conv1.bias[c].double()
        assert torch.equal(out[c], conv2.weight[:, c].reshape(-1).double())
    # conv → flatten → linear: channel c owns the flattened positions c·HW … (c+1)·HW − 1
    fmap = torch.zeros(1, 5, 3, 3)
    fmap[0, 2] = 1.0
    cols = torch.nn.Flatten()(fmap)[0].nonzero().flatten()
    lin = torch.nn.Linear(45, 6)
    _, out = unit_vectors(conv1.weight.reshape(5, -1), None, lin.weight, width=9)
    assert torch.equal(out[2], lin.weight[:, cols].reshape(-1).double())


def test_imbalance_conserved_by_plain_gradient_descent():
    """d/dt(‖w_i‖² + b_i² − ‖u_i‖²) = 0 under gradient flow for ReLU: GD drifts O(lr²)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    x, y = torch.randn(64, 5), torch.randn(64, 3)
    net.double()
    x, y = x.double(), y.double()

    def imbalance() -> torch.Tensor:
        inc, out = unit_vectors(net[0].weight.detach(), net[0].bias.detach(),
                                net[2].weight.detach())
        return inc.pow(2).sum(1) - out.pow(2).sum(1)

    start = imbalance()
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    drift = (imbalance() - start).abs().max()
    moved = max(float((p.detach() - q).norm()) for p, q in zip(net.parameters(), before,
                                                                strict=True))
    assert moved > 1e-2
    assert drift < 1e-3 * moved


def test_linear_pair_measures_against_dense_reference():
    """K = AAᵀ + BᵀB = ΘΘᵀ of a planted rank-3 pair, and ‖AAᵀ − BᵀB‖_F, against numpy."""
    g = torch.Generator().manual_seed(8)
    u, _ = torch.linalg.qr(torch.randn(10, 3, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(11, 3, generator=g, dtype=torch.float64))
    theta = u @ torch.diag(torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64)) @ v.T
    w1, b1, w2 = theta[:, :6], theta[:, 6], theta[:, 7:].T  # A = [w1 | b1], Bᵀ = w2ᵀ
    inc, out = unit_vectors(w1, b1, w2)
    rec = _analyse(inc, out, activation="identity")
    a, b = torch.cat([w1, b1[:, None]], 1).numpy(), w2.numpy()
    k = a @ a.T + b.T @ b
    lam = np.linalg.eigvalsh(k)[::-1]
    pair = rec.linear_pair
    assert pair is not None
    assert pair.sigma_max == pytest.approx(math.sqrt(lam[0]), rel=1e-12)
    assert pair.sigma_max == pytest.approx(3.0, rel=1e-12)
    assert [(r.tau, r.count) for r in pair.ranks] == [(t, 3) for t in SETTINGS.rank_taus]
    assert pair.imbalance_norm == pytest.approx(np.linalg.norm(a @ a.T - b.T @ b), rel=1e-12)
    assert pair.k_norm == pytest.approx(np.linalg.norm(k), rel=1e-12)
    # its diagonal is the per-unit imbalance
    diag = np.diag(a @ a.T - b.T @ b)
    assert rec.imbalance.mean == pytest.approx(diag.mean(), rel=1e-12)
    assert pair.floor == 11 * float(torch.finfo(torch.float64).eps)
    small = linear_pair(inc, out, pair.floor / 11, SETTINGS.rank_taus, block=3)  # 4 blocks
    assert small.imbalance_norm == pytest.approx(pair.imbalance_norm, rel=1e-13)
    assert small.k_norm == pytest.approx(pair.k_norm, rel=1e-13)
    # only a linear pair has the rotation symmetry
    assert _analyse(inc, out, activation="relu").linear_pair is None
    assert _analyse(inc, out, activation="tanh").linear_pair is None
