"""Hidden units: dead and half-dead units, identical units, per-unit imbalance.

docs/theory.md §5 ("Dead units", "Identical units", "Checkable laws"). Unit ``i`` between
an incoming layer (row ``w_i``, bias ``b_i``) and an outgoing layer (columns ``u_i``) is
``θ_i = [w_i, b_i, u_i]`` (conv: flattened kernels). ``d_ij = 2‖θ_i − θ_j‖² / (‖θ_i‖² +
‖θ_j‖²)``; for positively homogeneous activations the units are balanced first, for odd
ones ``d_ij = min(d(θ_i, θ_j), d(θ_i, −θ_j))``.

The pairwise search is a blocked Gram product (:func:`duplicate_search`): a float32 screen
with a rigorous rounding margin, first on the columns of most relative energy (a lower
bound on ``d_ij``), then on all columns where that bound clears too few pairs, picks
candidate pairs, whose ``d_ij`` is then recomputed exactly in float64 from differences (or,
when a block has very many candidates, from a float64 Gram block). Clusters are
single-linkage components, merged block by block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from symtool.activations import HOMOGENEOUS, ODD
from symtool.linalg import all_finite, singular_values
from symtool.symmetry.records import (
    DeadAt,
    DuplicatesAt,
    ImbalanceStats,
    LinearPairRecord,
    SymmetrySettings,
    TauCount,
    UnitPair,
    UnitsRecord,
)

Tensor = torch.Tensor

_EPS32 = float(torch.finfo(torch.float32).eps)
_EXACT_LIMIT = 1 << 16
"""Candidates per block above which the block is recomputed as a float64 Gram product."""
_CHUNK_ELEMENTS = 1 << 23
"""Elements per chunk of the exact difference recomputation."""


@dataclass(frozen=True)
class DuplicateSearch:
    """Result of :func:`duplicate_search` (indices already mapped through ``index``).

    Attributes:
        at: counts at every threshold.
        clusters: clusters (≥ 2 members) at the main threshold, sorted, by smallest member.
        pairs: closest pairs below the main threshold, by ``(d, i, j)``.
        truncated: more pairs existed than ``max_pairs``.
    """

    at: tuple[DuplicatesAt, ...]
    clusters: tuple[tuple[int, ...], ...]
    pairs: tuple[UnitPair, ...]
    truncated: bool


def unit_vectors(
    incoming: Tensor, bias: Tensor | None, outgoing: Tensor, width: int = 1
) -> tuple[Tensor, Tensor]:
    """Split a layer pair into per-unit incoming and outgoing parts (float64).

    Args:
        incoming: ``n × d_in`` weight of the incoming layer (conv: flattened kernels).
        bias: the incoming layer's bias (``n``) or None.
        outgoing: ``d_out × (n·width)`` weight of the outgoing layer; unit ``i`` owns
            columns ``i·width … (i+1)·width − 1`` (conv kernels, flattened positions).
        width: columns per unit.

    Returns:
        ``(n × (d_in [+1]))`` rows ``[w_i, b_i]`` and ``(n × d_out·width)`` rows ``u_i``.
    """
    inc = incoming.to(torch.float64)
    if bias is not None:
        inc = torch.cat([inc, bias.to(torch.float64).reshape(-1, 1)], dim=1)
    n = inc.shape[0]
    out = outgoing.to(torch.float64).reshape(outgoing.shape[0], n, width)
    return inc, out.permute(1, 0, 2).reshape(n, -1)


def _merge(labels: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Union the components of ``labels`` (min-index representatives) with new edges."""
    n = labels.shape[0]
    src = np.concatenate([np.arange(n), rows])
    dst = np.concatenate([labels, cols])
    graph = coo_matrix((np.ones(src.shape[0], dtype=np.int8), (src, dst)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    rep = np.full(comp.max() + 1, n, dtype=np.int64)
    np.minimum.at(rep, comp, np.arange(n))
    return rep[comp]


def _exact(x: Tensor, norms2: Tensor, r: Tensor, c: Tensor, sign: bool) -> tuple[Tensor, Tensor]:
    """Exact float64 ``d`` (and whether ``−θ_j`` was closer) for pairs ``(r, c)``."""
    chunk = max(1, _CHUNK_ELEMENTS // max(1, x.shape[1]))
    ds, flips = [], []
    for s in range(0, r.shape[0], chunk):
        ri, ci = r[s : s + chunk], c[s : s + chunk]
        denom = norms2[ri] + norms2[ci]
        d = 2.0 * (x[ri] - x[ci]).pow(2).sum(1) / denom
        flip = torch.zeros_like(d, dtype=torch.bool)
        if sign:
            d_neg = 2.0 * (x[ri] + x[ci]).pow(2).sum(1) / denom
            flip = d_neg < d
            d = torch.where(flip, d_neg, d)
        ds.append(d)
        flips.append(flip)
    return torch.cat(ds), torch.cat(flips)


def _block_gram64(
    x: Tensor, norms2: Tensor, r0: int, r1: int, c0: int, c1: int, sign: bool, tmax: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``d`` below ``tmax`` of one block from a float64 Gram product (dense fallback)."""
    g = x[r0:r1] @ x[c0:c1].T
    s = norms2[r0:r1, None] + norms2[None, c0:c1]
    d = (2.0 - 4.0 * g / s).clamp_min(0.0)
    flip = torch.zeros_like(d, dtype=torch.bool)
    if sign:
        d_neg = (2.0 + 4.0 * g / s).clamp_min(0.0)
        flip = d_neg < d
        d = torch.where(flip, d_neg, d)
    mask = d < tmax
    if r0 == c0:
        mask &= torch.ones_like(mask).triu(1)
    r, c = mask.nonzero(as_tuple=True)
    return r + r0, c + c0, d[r, c], flip[r, c]


def screen_columns(x: Tensor, screen: int | None, tmax: float = 0.1) -> Tensor | None:
    """Columns of the partial screen: the ``m`` columns that hold the most of the rows'
    relative energy ``Σ_i x_ik² / ‖x_i‖²`` (relative, so a few large rows cannot choose;
    summed over at most about 1000 evenly spaced rows).

    ``screen=None`` picks ``m = max(64, ⌈p·max(1/8, 1.25·τ_max)⌉)``: unrelated rows then
    keep a lower bound near ``2m/p > τ_max`` and are dropped by the screen. None (no
    partial screen) when ``m`` is at least half the columns, where it saves too little.
    """
    p = x.shape[1]
    if screen is None:
        m = max(64, math.ceil(p * max(0.125, 1.25 * tmax)))
    else:
        m = int(screen)
    if m < 1 or 2 * m > p:
        return None
    sample = x[:: max(1, x.shape[0] // 512)]  # the choice only needs to be good, not exact
    norms = torch.linalg.vector_norm(sample, dim=1, keepdim=True)
    energy = torch.linalg.vector_norm(sample / torch.where(norms > 0, norms, 1.0), dim=0)
    return torch.topk(energy, m, sorted=False).indices.sort().values


def _screen(
    y: Tensor, b: Tensor, rows: slice, cols: slice, sign: bool
) -> tuple[Tensor, Tensor]:
    """Pairs of one block that the columns in ``y`` cannot rule out (float32; indices
    relative to the block).

    For any subset of the columns, ``‖θ_i − θ_j‖² ≥ a_i + a_j − 2 g_ij`` with ``a`` the
    rows' squared norms and ``g = ⟨y_i, y_j⟩`` on the subset (``|g_ij|`` bounds the
    sign-flipped distance too), so ``d_ij ≥ 2(a_i + a_j − 2 g_ij)/(s_i + s_j)``, ``s`` the
    full squared norms; on all columns the bound is ``d_ij`` itself. A pair survives when
    the bound is below the limit ``L``: ``2 g_ij > b_i + b_j`` with ``b = a − (L/2)·s``.
    """
    g = y[rows] @ y[cols].T
    if sign:
        g.abs_()
    mask = g.mul_(2.0).sub_(b[rows, None]).sub_(b[None, cols]) > 0
    if rows.start == cols.start:
        mask &= torch.ones_like(mask).triu(1)
    return mask.nonzero(as_tuple=True)


def duplicate_search(
    x: Tensor,
    taus: Sequence[float],
    main_tau: float,
    *,
    sign: bool = False,
    block: int = 512,
    max_pairs: int = 1000,
    index: Sequence[int] | None = None,
    exact_limit: int = _EXACT_LIMIT,
    screen: int | None = None,
) -> DuplicateSearch:
    """All pairs of rows with ``d_ij < τ``, and their single-linkage clusters.

    Rows with zero norm are never paired. Each block of pairs is screened with a float32
    Gram product over the columns of most relative energy (:func:`screen_columns`), which
    bounds ``d_ij`` from below (:func:`_screen`); a block where more than 1/128 of the
    pairs survive is screened again over all columns. Survivors are recomputed exactly
    in float64. Work is at least ``n²·m/2`` and at most ``n²·(p + m)/2`` for ``m``
    screened columns; memory is ``O(block·n)``.

    Args:
        x: ``n × p`` rows ``θ_i`` (already balanced if needed).
        taus: thresholds to count at.
        main_tau: threshold whose clusters and pairs are listed (must be in ``taus``).
        sign: compare with ``−θ_j`` too (odd activations).
        block: rows per block.
        max_pairs: most pairs listed.
        index: original index of every row (default ``0..n−1``).
        exact_limit: candidates per block above which a float64 Gram block is used.
        screen: columns of the first screen (default: see :func:`screen_columns`; all
            columns when that is at least half of them).

    Returns:
        Counts per threshold, clusters and closest pairs, in original indices.
    """
    x = x.to(torch.float64)
    n, p = x.shape
    taus = sorted({float(t) for t in taus} | {float(main_tau)})
    tmax = taus[-1]
    norms2 = torch.einsum("ij,ij->i", x, x)
    # d is scale-free: weights far from 1 are scaled by a power of two (exact) near the
    # largest norm, so the float32 screens neither overflow nor underflow
    top = float(norms2.max()) if n else 0.0
    k = round(0.5 * math.log2(top)) if top > 0 else 0
    unit, rel2 = (x, norms2) if abs(k) <= 40 else (x * 2.0**-k, norms2 * 2.0**-k * 2.0**-k)
    x32 = unit.float()
    cols = screen_columns(x32, screen, tmax)
    half = 0.5 * (tmax + (4.0 * (p + 2) + 32.0) * _EPS32)
    b_all = (rel2 * (1.0 - half)).float()
    if cols is None:
        y32, b32 = x32, b_all
    else:
        y32 = x32[:, cols].contiguous()
        part = unit[:, cols]
        b32 = (torch.einsum("ij,ij->i", part, part) - half * rel2).float()
    del unit
    found = _Found(n, taus, float(main_tau), max_pairs)
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        for c0 in range(r0, n, block):
            c1 = min(n, c0 + block)
            rows, cs = slice(r0, r1), slice(c0, c1)
            r, c = _screen(y32, b32, rows, cs, sign)
            if cols is not None and r.numel() * 128 > (r1 - r0) * (c1 - c0):
                r, c = _screen(x32, b_all, rows, cs, sign)
            if r.numel() == 0:
                continue
            if r.numel() <= exact_limit:
                r, c = r + r0, c + c0
                dd, ff = _exact(x, norms2, r, c, sign)
                ok = dd < tmax
                r, c, dd, ff = r[ok], c[ok], dd[ok], ff[ok]
            else:
                r, c, dd, ff = _block_gram64(x, norms2, r0, r1, c0, c1, sign, tmax)
            found.add(r, c, dd, ff)
    return found.result(index)


class _Found:
    """Pairs below the thresholds, gathered block by block: counts and single-linkage
    labels per threshold, and the closest pairs at the main one (at most ``max_pairs``,
    trimmed as they come so memory stays bounded)."""

    def __init__(self, n: int, taus: Sequence[float], main_tau: float, max_pairs: int) -> None:
        self.n, self.taus, self.main_tau, self.max_pairs = n, list(taus), main_tau, max_pairs
        self.labels = {t: np.arange(n) for t in self.taus}
        self.counts = dict.fromkeys(self.taus, 0)
        self.kept: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
        self.kept_n = 0

    def add(self, r: Tensor, c: Tensor, dd: Tensor, ff: Tensor) -> None:
        """Pairs ``(r, c)`` with distances ``dd`` (flipped ``ff``), all below ``max τ``."""
        for t in self.taus:
            m = dd < t
            k = int(m.sum())
            if k:
                self.counts[t] += k
                self.labels[t] = _merge(self.labels[t], r[m].numpy(), c[m].numpy())
        m = dd < self.main_tau
        if self.max_pairs and bool(m.any()):
            self.kept.append((dd[m], r[m], c[m], ff[m]))
            self.kept_n += int(m.sum())
            if self.kept_n > 4 * self.max_pairs:
                self.kept = [_top(self.kept, self.max_pairs)]
                self.kept_n = self.kept[0][0].numel()

    def result(self, index: Sequence[int] | None) -> DuplicateSearch:
        """Counts, clusters and pairs, rows mapped through ``index``."""
        n = self.n
        idx = np.arange(n) if index is None else np.asarray(index, dtype=np.int64)
        at = []
        clusters: tuple[tuple[int, ...], ...] = ()
        for t in sorted(self.taus, reverse=True):
            groups = _groups(self.labels[t], idx)
            clustered = sum(len(g) for g in groups)
            at.append(DuplicatesAt(t, self.counts[t], len(groups), clustered,
                                   n - clustered + len(groups)))
            if t == self.main_tau:
                clusters = groups
        pairs: list[UnitPair] = []
        if self.kept:
            d, r, c, f = _top(self.kept, self.max_pairs)
            for di, ri, ci, fi in zip(d.tolist(), r.tolist(), c.tolist(), f.tolist(),
                                      strict=True):
                a, b = sorted((int(idx[ri]), int(idx[ci])))
                pairs.append(UnitPair(a, b, float(di), bool(fi)))
        main_count = self.counts[self.main_tau]
        return DuplicateSearch(tuple(at), clusters, tuple(pairs), main_count > len(pairs))


def duplicates_from_gram(
    gram: Tensor,
    taus: Sequence[float],
    main_tau: float,
    *,
    max_pairs: int = 1000,
    index: Sequence[int] | None = None,
) -> DuplicateSearch:
    """:func:`duplicate_search` for rows known only through their float64 Gram matrix
    ``G_ij = ⟨θ_i, θ_j⟩`` (a few rows whose vectors would be large): ``d_ij = 2(G_ii + G_jj −
    2G_ij)/(G_ii + G_jj)``. Rows with ``G_ii = 0`` are never paired."""
    g = gram.to(torch.float64)
    n = g.shape[0]
    taus = sorted({float(t) for t in taus} | {float(main_tau)})
    found = _Found(n, taus, float(main_tau), max_pairs)
    diag = g.diagonal()
    tot = diag[:, None] + diag[None, :]
    d = (2.0 * (tot - 2.0 * g) / torch.where(tot > 0, tot, 1.0)).clamp_min(0.0)
    keep = (tot > 0) & (d < taus[-1]) & torch.ones(n, n, dtype=torch.bool).triu(1)
    r, c = keep.nonzero(as_tuple=True)
    found.add(r, c, d[r, c], torch.zeros(r.shape[0], dtype=torch.bool))
    return found.result(index)


def _top(
    kept: list[tuple[Tensor, Tensor, Tensor, Tensor]], k: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The ``k`` pairs with smallest ``(d, i, j)``."""
    d = torch.cat([e[0] for e in kept])
    r = torch.cat([e[1] for e in kept])
    c = torch.cat([e[2] for e in kept])
    f = torch.cat([e[3] for e in kept])
    order = torch.from_numpy(np.lexsort((c.numpy(), r.numpy(), d.numpy()))[:k])
    return d[order], r[order], c[order], f[order]


def _groups(labels: np.ndarray, idx: np.ndarray) -> tuple[tuple[int, ...], ...]:
    """Components with ≥ 2 members, in original indices, sorted by smallest member."""
    order = np.argsort(labels, kind="stable")
    lab = labels[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    sizes = np.diff(np.r_[starts, lab.shape[0]])
    out = [tuple(sorted(int(i) for i in idx[order[a : a + k]]))
           for a, k in zip(starts.tolist(), sizes.tolist(), strict=True) if k >= 2]
    return tuple(sorted(out))


def balance_scales(n_in: Tensor, n_out: Tensor) -> Tensor:
    """``s_i = sqrt(‖u_i‖/‖(w_i,b_i)‖)`` from the parts' norms (1 where a part is zero)."""
    ok = (n_in > 0) & (n_out > 0)
    return torch.where(ok, (n_out / torch.where(ok, n_in, 1.0)).sqrt(), torch.ones_like(n_in))


def balance(inc: Tensor, out: Tensor) -> tuple[Tensor, Tensor]:
    """Rescale unit ``i`` by ``s_i = sqrt(‖u_i‖/‖(w_i,b_i)‖)`` (incoming × s, outgoing / s).

    Afterwards both parts have norm ``sqrt(‖(w_i,b_i)‖·‖u_i‖)``. Units with a zero part are
    left unchanged.
    """
    s = balance_scales(inc.norm(dim=1), out.norm(dim=1))
    return inc * s[:, None], out / s[:, None]


def _search_rows(inc: Tensor, out: Tensor, alive: Tensor, scale: Tensor | None) -> Tensor:
    """``[w_i, b_i, u_i]`` of the live units, balanced by ``scale``, in one new tensor."""
    rows = alive if alive.numel() < inc.shape[0] else slice(None)
    x = torch.empty(alive.numel(), inc.shape[1] + out.shape[1], dtype=torch.float64)
    x_in, x_out = x[:, : inc.shape[1]], x[:, inc.shape[1] :]
    x_in.copy_(inc[rows])
    x_out.copy_(out[rows])
    if scale is not None:
        x_in.mul_(scale[rows, None])
        x_out.div_(scale[rows, None])
    return x


def dead_counts(
    n_in: Tensor, n_out: Tensor | None, taus: Sequence[float]
) -> tuple[tuple[DeadAt, ...], Tensor]:
    """Dead and half-dead counts at every threshold, and ``ν_i``.

    Args:
        n_in: norms of the incoming parts (or of whole heads when ``n_out`` is None).
        n_out: norms of the outgoing parts, or None (no half-dead split).
        taus: thresholds on the norm ratios.

    Returns:
        One :class:`DeadAt` per threshold (same order) and ``ν`` (float64).
    """
    total = n_in if n_out is None else (n_in.pow(2) + n_out.pow(2)).sqrt()
    nu = total / total.max()
    rel_in = n_in / n_in.max() if n_in.max() > 0 else torch.zeros_like(n_in)
    rel_out = None
    if n_out is not None:
        rel_out = n_out / n_out.max() if n_out.max() > 0 else torch.zeros_like(n_out)
    out = []
    for t in taus:
        dead = nu < t
        if rel_out is None:
            out.append(DeadAt(float(t), int(dead.sum()), 0, 0))
            continue
        small_in, small_out = rel_in < t, rel_out < t
        half_in = int((small_in & ~small_out & ~dead).sum())
        half_out = int((small_out & ~small_in & ~dead).sum())
        out.append(DeadAt(float(t), int(dead.sum()), half_in, half_out))
    return tuple(out), nu


def rank_counts(
    m: Tensor, eps: float, taus: Sequence[float]
) -> tuple[Tensor, list[list[TauCount]]]:
    """Batched ``σ_1`` and ranks (``σ_k/σ_1 > max(τ, floor)``) of ``B × r × c`` matrices,
    with the floor ``max(r, c)·eps`` (attention heads' pair kernels, linear pairs' K)."""
    floor = max(m.shape[1], m.shape[2]) * eps
    sigma = singular_values(m, cuts=[max(float(t), floor) for t in taus])
    s1 = sigma[:, 0]
    out = []
    for h in range(m.shape[0]):
        if s1[h] <= 0:
            out.append([TauCount(float(t), 0) for t in taus])
            continue
        ratio = sigma[h] / s1[h]
        out.append([TauCount(float(t), int((ratio > max(float(t), floor)).sum())) for t in taus])
    return s1, out


LINEAR = frozenset({"identity", "linear"})
"""Activations under which a unit pair has the full rotation symmetry ``A → RA, B → BRᵀ``."""


def linear_pair(
    inc: Tensor, out: Tensor, eps: float, taus: Sequence[float], block: int = 512
) -> LinearPairRecord:
    """Rotation measures of a linear pair from its units' parts (docs/theory.md §5).

    Args:
        inc: ``h × ·`` incoming parts ``[w_i, b_i]`` (rows of ``A``), float64.
        out: ``h × ·`` outgoing parts ``u_i`` (columns of ``B``), float64.
        eps: machine epsilon of the precision the ranks are computed in (float64; the
            stored dtype, e.g. bfloat16, does not set the floor).
        taus: thresholds on ``σ_k/σ_1``.
        block: rows of ``AAᵀ`` and ``BᵀB`` formed at a time.

    Returns:
        ``σ_1`` and ranks of ``Θ = [A | Bᵀ]`` (``K = ΘΘᵀ``), ``‖AAᵀ − BᵀB‖_F`` and
        ``‖AAᵀ + BᵀB‖_F``. The norms come from ``h × h`` products, ``block`` rows at a
        time (memory ``O(block·h)``), not from the smaller-side identity ``‖AᵀA‖² −
        2‖BA‖² + ‖BBᵀ‖²``, which cancels when the pair is nearly balanced.
    """
    theta = torch.cat([inc, out], dim=1)
    s1, (ranks,) = rank_counts(theta[None], eps, taus)
    imb2 = k2 = 0.0
    for r0 in range(0, inc.shape[0], block):
        aa, bb = inc[r0 : r0 + block] @ inc.T, out[r0 : r0 + block] @ out.T
        imb2 += float((aa - bb).pow(2).sum())
        k2 += float((aa + bb).pow(2).sum())
    return LinearPairRecord(sigma_max=float(s1[0]), floor=max(theta.shape) * eps,
                            ranks=tuple(ranks), imbalance_norm=math.sqrt(imb2),
                            k_norm=math.sqrt(k2))


def analyse_units(
    inc: Tensor,
    out: Tensor,
    *,
    incoming: str,
    outgoing: str,
    kind: str,
    width: int,
    source: str,
    activation: str,
    settings: SymmetrySettings,
    eps: float = float(torch.finfo(torch.float64).eps),
) -> UnitsRecord:
    """Dead, half-dead and duplicate units and imbalances of one unit pair, and for a
    linear pair (``identity``) its rotation measures (:func:`linear_pair`).

    Args:
        inc: ``n × ·`` incoming parts ``[w_i, b_i]`` (see :func:`unit_vectors`).
        out: ``n × ·`` outgoing parts ``u_i``.
        incoming, outgoing, kind, width, source: copied into the record.
        activation: decides balancing (positively homogeneous) and sign (odd), and
            whether the pair is linear.
        settings: thresholds.
        eps: machine epsilon of the precision the linear pair's ranks are computed in
            (float64; the floor of its ranks).

    Returns:
        The record; ``reason`` set (and numbers empty) for non-finite or all-zero weights.
    """
    balanced, signed = activation in HOMOGENEOUS, activation in ODD
    head = dict(incoming=incoming, outgoing=outgoing, kind=kind, width=width, source=source,
                activation=activation, balanced=balanced, sign_symmetric=signed,
                units=int(inc.shape[0]))
    if not (all_finite(inc) and all_finite(out)):
        return UnitsRecord(**head, reason="non-finite weights")
    n_in, n_out = inc.norm(dim=1), out.norm(dim=1)
    if not bool(((n_in > 0) | (n_out > 0)).any()):
        return UnitsRecord(**head, reason="all units are zero")
    dead, nu = dead_counts(n_in, n_out, settings.dead_taus)
    alive = torch.nonzero(nu >= settings.dead_tau).flatten()
    scale = balance_scales(n_in, n_out) if balanced else None
    found = duplicate_search(
        _search_rows(inc, out, alive, scale), settings.dup_taus, settings.dup_tau, sign=signed,
        block=settings.block, max_pairs=settings.max_pairs, index=alive.tolist(),
    )
    imb = n_in.pow(2) - n_out.pow(2)
    stats = ImbalanceStats(float(imb.mean()), float(imb.abs().mean()),
                           float(imb.std(unbiased=False)), float(imb.min()), float(imb.max()))
    main = next(a for a in found.at if a.tau == settings.dup_tau)
    return UnitsRecord(
        **head,
        dead=dead,
        dead_units=tuple(int(i) for i in torch.nonzero(nu < settings.dead_tau).flatten()),
        duplicates=found.at,
        clusters=found.clusters,
        independent_units=main.independent,
        pairs=found.pairs,
        pairs_truncated=found.truncated,
        imbalance=stats,
        imbalances=tuple(imb.tolist()) if settings.keep_vectors else None,
        linear_pair=linear_pair(inc, out, eps, settings.rank_taus, settings.block)
        if activation in LINEAR else None,
    )
