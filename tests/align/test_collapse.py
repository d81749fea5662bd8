"""Tests for symtool.align.collapse: NC1–NC4 from streamed class sums against dense references."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from symtool.align.collapse import ClassSums, Collapse, finish, nearest_class, pinv_cutoff
from tests.reference import gen

F64 = torch.float64


def np_collapse(h: np.ndarray, y: np.ndarray, W: np.ndarray | None = None) -> dict[str, float]:
    """Textbook NC1–NC3: per-class loops, two-pass Σ_W, ``np.linalg.pinv`` of the centred means
    with the same cut-off (``Σ_B⁺ = C · B⁺ B⁺ᵀ``, ``B`` the means in a basis of 1^⊥)."""
    keep = y >= 0
    h, y = h[keep], y[keep]
    classes = np.unique(y)
    C, n, d = len(classes), len(y), h.shape[1]
    mu = np.stack([h[y == c].mean(axis=0) for c in classes])
    SW = np.zeros((d, d))
    for i, c in enumerate(classes):
        X = h[y == c] - mu[i]
        SW += X.T @ X
    SW /= n
    M = mu - mu.mean(axis=0)
    # Σ_B = MᵀM/C = BᵀB/C with B = QᵀM, Q an orthonormal basis of 1^⊥ (C × (C−1)): the
    # centring's round-off along 1 is projected out, as rank(Σ_B) ≤ C − 1 requires
    Q = np.linalg.qr(np.eye(C) - 1.0 / C)[0][:, : C - 1]
    Bp = np.linalg.pinv(Q.T @ M, rcond=max(C, d) * np.finfo(float).eps)
    SB_pinv = C * Bp @ Bp.T
    norms = np.linalg.norm(M, axis=1)
    cos = np.array(
        [M[a] @ M[b] / (norms[a] * norms[b]) for a in range(C) for b in range(C) if a != b]
    )
    out = {
        "nc1": float(np.trace(SW @ SB_pinv) / C),
        "equinorm": float(norms.std() / norms.mean()),
        "equiangularity": float(np.abs(cos + 1 / (C - 1)).mean()),
        "cos_mean": float(cos.mean()),
        "cos_std": float(cos.std()),
    }
    if W is not None:
        Wp = W[classes]
        out["nc3"] = float(
            np.linalg.norm(Wp / np.linalg.norm(Wp) - M / np.linalg.norm(M)) ** 2
        )
    return out


def _random(seed: int, n: int, d: int, C: int, offset: float = 0.0) -> tuple[torch.Tensor, ...]:
    g = gen(seed)
    centres = 2.0 * torch.randn(C, d, generator=g, dtype=F64)
    y = torch.randint(0, C, (n,), generator=g)
    spread = 0.5 + torch.rand(d, generator=g, dtype=F64)
    h = centres[y] + torch.randn(n, d, generator=g, dtype=F64) * spread
    return h + offset, y


def _close(col: Collapse, ref: dict[str, float], tol: float = 1e-10) -> None:
    for key, want in ref.items():
        got = getattr(col, key)
        assert got is not None, key
        assert got == pytest.approx(want, rel=tol, abs=tol), key


def _etf(C: int, d: int, seed: int) -> torch.Tensor:
    """``C`` centred means forming a simplex ETF in ``R^d`` (rows, unit norm)."""
    U = torch.linalg.qr(torch.randn(d, C, generator=gen(seed), dtype=F64))[0]
    E = torch.eye(C, dtype=F64) - 1.0 / C
    return (E @ U.T) * (C / (C - 1)) ** 0.5


@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_planted_collapse_is_exact(offset: float) -> None:
    C, d, per = 6, 10, 7
    M = 3.0 * _etf(C, d, seed=1)
    y = torch.arange(C).repeat_interleave(per)[torch.randperm(C * per, generator=gen(2))]
    h = M[y] + offset  # every row of class c is μ_c; a large common offset on top
    sums = ClassSums(C)
    for part in torch.split(torch.arange(len(y)), 9):
        sums.add(h[part], y[part])
    col = finish(sums, classifier=M)
    assert (col.classes, col.rows, col.ignored_rows) == (C, C * per, 0)
    assert col.nc1 == pytest.approx(0.0, abs=1e-10)
    assert col.equinorm == pytest.approx(0.0, abs=1e-10)
    assert col.equiangularity == pytest.approx(0.0, abs=1e-10)
    assert col.cos_mean == pytest.approx(-1.0 / (C - 1), abs=1e-10)
    assert col.cos_std == pytest.approx(0.0, abs=1e-10)
    assert col.nc3 == pytest.approx(0.0, abs=1e-10)
    assert col.reason is None
    assert torch.equal(nearest_class(h, col.means, col.present), y)
    # a classifier of a different scale is still self-dual; one for other classes is not
    assert finish(sums, classifier=5.0 * M).nc3 == pytest.approx(0.0, abs=1e-10)
    assert finish(sums, classifier=M.roll(1, dims=0)).nc3 > 0.5


@pytest.mark.parametrize(("seed", "n", "d", "C"), [(0, 200, 12, 5), (1, 150, 4, 9), (2, 60, 30, 3)])
def test_random_features_match_dense_reference(seed: int, n: int, d: int, C: int) -> None:
    h, y = _random(seed, n, d, C, offset=3.0)
    y[:7] = -100  # ignored rows
    W = torch.randn(C, d, generator=gen(seed + 10), dtype=F64)
    h = h.float()  # any float dtype: float32 rows, float64 sums
    sums = ClassSums()
    sums.add(h, y)
    col = finish(sums, classifier=W)
    h = h.double()
    ref = np_collapse(h.numpy(), y.numpy(), W.numpy())
    _close(col, ref)
    assert col.nc1 > 1e-2 and col.equiangularity > 1e-3 and col.nc3 > 1e-2
    assert (col.rows, col.ignored_rows) == (n - 7, 7)
    keep = y >= 0
    mus = np.stack([h[keep][y[keep] == c].numpy().mean(axis=0) for c in col.present.tolist()])
    np.testing.assert_allclose(col.means.numpy(), mus, rtol=1e-12, atol=1e-12)
    # NC4's rule against brute force
    dist = ((h[:, None, :] - col.means[None]) ** 2).sum(-1)
    assert torch.equal(nearest_class(h, col.means, col.present), col.present[dist.argmin(1)])


def test_large_common_offset_keeps_full_precision() -> None:
    """Sums about the first batch's mean: an offset of 1e6 costs nothing, where uncentred
    sums ``Σhhᵀ − Σ n_c μ_c μ_cᵀ`` lose ~12 digits of NC1 (7e-4 relative error here)."""
    h, y = _random(5, 300, 8, 4, offset=1e6)
    sums = ClassSums(4)
    for part in torch.split(torch.arange(300), 64):
        sums.add(h[part], y[part])
    ref = np_collapse(h.numpy() - 1e6, y.numpy())  # exact: the same rounded data, unshifted
    _close(finish(sums), ref)
    # the naive route really is that bad here (the test has teeth)
    naive = ClassSums(4, reference=torch.zeros(8, dtype=F64))
    naive.add(h, y)
    assert abs(finish(naive).nc1 - ref["nc1"]) > 1e-5 * ref["nc1"]


def test_batches_shards_and_all_reduce_equal_one_batch() -> None:
    h, y = _random(3, 240, 10, 6, offset=50.0)
    y[::11] = -1
    one = ClassSums()
    one.add(h, y)
    want = np_collapse(h.numpy(), y.numpy())
    # several batches, then shards with their own references merged
    shards = []
    for k, part in enumerate(torch.split(torch.arange(240), 50)):
        s = ClassSums()
        s.add(h[part] + 0.0, y[part])
        if k == 2:
            s.add(h[part][:0], y[part][:0])  # an empty batch changes nothing
        shards.append(s)
    merged = ClassSums()
    for s in shards:
        merged.merge(s)
    merged.merge(ClassSums())  # an empty shard changes nothing
    for col in (finish(one), finish(merged)):
        _close(col, want)
        assert (col.rows, col.ignored_rows, col.classes) == (one.n, one.ignored, 6)
    # two "processes" summing tensors() in place, after agreeing on a reference
    parts = [ClassSums(6), ClassSums(6)]
    parts[0].add(h[:100], y[:100])
    parts[1].add(h[100:], y[100:])
    barrier = threading.Barrier(2)
    slots: list[list[torch.Tensor]] = [[], []]

    def fake_all_reduce(rank: int, ts: list[torch.Tensor]) -> None:
        slots[rank] = [t.clone() for t in ts]
        barrier.wait()
        for t, a, b in zip(ts, slots[0], slots[1], strict=True):
            t.copy_(a + b)
        barrier.wait()

    threads = [
        threading.Thread(target=parts[r].all_reduce, args=(lambda ts, r=r: fake_all_reduce(r, ts),))
        for r in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in parts:
        _close(finish(p), want)
        assert (p.n, p.ignored) == (one.n, one.ignored)
    with pytest.raises(ValueError, match="fixed number"):
        one.tensors()


def test_degenerate_cases_give_reasons_not_nan() -> None:
    h, y = _random(4, 50, 5, 3)
    single = ClassSums()
    single.add(h, torch.zeros(50, dtype=torch.long))
    col = finish(single)
    assert col.classes == 1 and col.nc1 is None and col.equiangularity is None
    assert "at least 2" in col.reason
    same = ClassSums()
    same.add(torch.ones(50, 5, dtype=F64), y)
    col = finish(same)
    assert col.nc1 is None and col.equinorm is None and "zero" in col.reason
    empty = ClassSums()
    empty.add(h, torch.full((50,), -100))
    col = finish(empty)
    assert (col.rows, col.ignored_rows, col.reason) == (0, 50, "no labelled rows")
    bad = ClassSums()
    h2 = h.clone()
    h2[3, 1] = float("nan")
    bad.add(h2, y)
    col = finish(bad)
    assert col.reason == "non-finite features"
    assert all(v is None for v in (col.nc1, col.equinorm, col.equiangularity, col.nc3))
    ok = ClassSums()
    ok.add(h, y)
    col = finish(ok, classifier=torch.zeros(2, 5, dtype=F64))  # too few rows
    assert col.nc3 is None and "classifier" in col.reason and col.nc1 is not None
    assert set(col.record()) == {
        "reason", "classes", "rows", "ignored_rows", "nc1", "equinorm",
        "equiangularity", "cos_mean", "cos_std", "nc3",
    }
    with pytest.raises(ValueError, match="out of range"):
        ClassSums(2).add(h, y)


def test_absent_classes_and_cutoff() -> None:
    """Class ids with no rows are not classes; NC3 uses only the present classes' rows."""
    h, y = _random(6, 120, 7, 3)
    y = torch.tensor([0, 4, 9])[y]  # classes 0, 4, 9 of 10
    W = torch.randn(10, 7, generator=gen(7), dtype=F64)
    sums = ClassSums(10)
    sums.add(h, y)
    col = finish(sums, classifier=W)
    assert col.present.tolist() == [0, 4, 9] and col.classes == 3
    _close(col, np_collapse(h.numpy(), y.numpy(), W.numpy()))
    assert pinv_cutoff(3, 7) == 7 * np.finfo(float).eps
