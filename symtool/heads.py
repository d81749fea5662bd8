"""Attention heads: rank of the QK and OV pairs, dead heads, duplicate heads.

theory.md section 5 (attention QK / OV, per head a linear pair). Head ``h`` owns rows
``h·d_head … (h+1)·d_head − 1`` of ``W_q``, ``W_k``, ``W_v`` (``d_head × d_model`` blocks)
and the same columns of ``W_o`` (``d_model × d_head``). The pair kernels are

* ``K_QK = W_q,h W_q,hᵀ + W_k,h W_k,hᵀ`` and ``K_OV = W_v,h W_v,hᵀ + W_o,hᵀ W_o,h``
  (both ``d_head × d_head``).

``K = M Mᵀ`` with ``M = [W_q,h | W_k,h]`` (resp. ``[W_v,h | W_o,hᵀ]``), so the singular values
of ``M`` are ``sqrt(eig K)``: ranks use the same ``σ_k/σ_1 > max(τ, floor)`` rule as a layer,
with the floor ``max(d_head, columns of M)·eps``. Grouped-query attention (fewer K/V rows)
maps query head ``h`` to key/value head ``h // (heads / kv_heads)``.
"""

from __future__ import annotations

import torch

from symtool.linalg import all_finite, singular_values
from symtool.symrecords import AttentionRecord, HeadRecord, SymmetrySettings, TauCount
from symtool.units import dead_counts, duplicate_search
from symtool.wiring import AttentionSpec

Tensor = torch.Tensor


def _ranks(m: Tensor, eps: float, taus: tuple[float, ...]) -> tuple[Tensor, list[list[TauCount]]]:
    """Batched ``σ_1`` and ranks at every threshold of ``H × r × c`` matrices."""
    floor = max(m.shape[1], m.shape[2]) * eps
    sigma = singular_values(m, cuts=[max(t, floor) for t in taus])
    s1 = sigma[:, 0]
    out = []
    for h in range(m.shape[0]):
        if s1[h] <= 0:
            out.append([TauCount(t, 0) for t in taus])
            continue
        ratio = sigma[h] / s1[h]
        out.append([TauCount(t, int((ratio > max(t, floor)).sum())) for t in taus])
    return s1, out


def _split(w: Tensor, groups: int) -> Tensor:
    """``(groups·r) × c`` → ``groups × r × c``."""
    return w.reshape(groups, w.shape[0] // groups, w.shape[1])


def analyse_heads(
    spec: AttentionSpec,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor | None,
    biases: tuple[Tensor | None, Tensor | None, Tensor | None],
    *,
    heads: int | None,
    eps: float,
    settings: SymmetrySettings,
) -> AttentionRecord:
    """Per-head QK/OV ranks, dead heads and duplicate heads of one attention block.

    Args:
        spec: names of the block's maps.
        q, k, v: float64 projections, ``rows × d_model`` (rows = heads·d_head for q).
        o: float64 output projection ``d_model × heads·d_head``, or None.
        biases: q, k, v biases (or None); part of the flattened head parameters.
        heads: number of query heads; None skips the head analysis.
        eps: machine epsilon of the checkpoint dtype (rank floor).
        settings: thresholds.

    Returns:
        The record; ``reason`` says why heads were not analysed.
    """
    base = dict(
        name=spec.name, layout=spec.layout, q=spec.q, k=spec.k, v=spec.v, o=spec.o, heads=heads
    )
    if heads is None:
        return AttentionRecord(**base, reason="number of heads not given")
    problems = []
    if heads < 1 or q.shape[0] % heads:
        problems.append(f"{q.shape[0]} query rows do not split into {heads} heads")
    else:
        dh = q.shape[0] // heads
        if k.shape[0] % dh or v.shape[0] != k.shape[0] or heads % max(1, k.shape[0] // dh):
            problems.append(f"key/value rows {k.shape[0]}/{v.shape[0]} do not fit d_head {dh}")
        if o is not None and o.shape[1] != q.shape[0]:
            problems.append(f"output projection has {o.shape[1]} columns, not {q.shape[0]}")
    if problems:
        return AttentionRecord(**base, reason="; ".join(problems))
    mats = [q, k, v] + ([o] if o is not None else [])
    mats += [b for b in biases if b is not None]
    if not all(all_finite(t) for t in mats):
        return AttentionRecord(**base, reason="non-finite weights")
    kv = k.shape[0] // dh
    group = torch.arange(heads) // (heads // kv)
    qh, kh, vh = _split(q, heads), _split(k, kv)[group], _split(v, kv)[group]
    taus = settings.rank_taus
    qk_s, qk_r = _ranks(torch.cat([qh, kh], dim=2), eps, taus)
    ov_s, ov_r = None, None
    oh = None
    if o is not None:
        oh = o.T.reshape(heads, dh, o.shape[0])  # row block h of oᵀ = columns of head h
        ov_s, ov_r = _ranks(torch.cat([vh, oh], dim=2), eps, taus)
    parts = [qh, kh, vh] + ([oh] if oh is not None else [])
    flat = [p.reshape(heads, -1) for p in parts]
    for b, which in zip(biases, (None, group, group), strict=True):
        if b is not None:
            bb = b.reshape(-1, dh)
            flat.append(bb if which is None else bb[which])
    theta = torch.cat(flat, dim=1)
    norms = theta.norm(dim=1)
    if not bool((norms > 0).any()):
        return AttentionRecord(**base, kv_heads=kv, head_dim=dh, reason="all heads are zero")
    dead, nu = dead_counts(norms, None, settings.dead_taus)
    alive = torch.nonzero(nu >= settings.dead_tau).flatten()
    found = duplicate_search(
        theta[alive],
        settings.dup_taus,
        settings.dup_tau,
        block=settings.block,
        max_pairs=settings.max_pairs,
        index=alive.tolist(),
    )
    records = tuple(
        HeadRecord(
            index=h,
            norm_ratio=float(nu[h]),
            qk_sigma=float(qk_s[h]),
            qk_ranks=tuple(qk_r[h]),
            ov_sigma=None if ov_s is None else float(ov_s[h]),
            ov_ranks=() if ov_r is None else tuple(ov_r[h]),
        )
        for h in range(heads)
    )
    return AttentionRecord(
        **base,
        kv_heads=kv,
        head_dim=dh,
        head_records=records,
        dead=dead,
        dead_heads=tuple(int(i) for i in torch.nonzero(nu < settings.dead_tau).flatten()),
        duplicates=found.at,
        clusters=found.clusters,
        pairs=found.pairs,
    )
