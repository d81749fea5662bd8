"""Attention heads: rank of the QK and OV pairs, dead heads, duplicate heads.

docs/theory.md §5 (attention QK / OV, per head a linear pair). Head ``h`` owns rows
``h·d_head … (h+1)·d_head − 1`` of ``W_q``, ``W_k``, ``W_v`` (``d_head × d_model`` blocks)
and the same columns of ``W_o`` (``d_model × d_head``). The pair kernels are

* ``K_QK = W_q,h W_q,hᵀ + W_k,h W_k,hᵀ`` and ``K_OV = W_v,h W_v,hᵀ + W_o,hᵀ W_o,h``
  (both ``d_head × d_head``).

``K = M Mᵀ`` with ``M = [W_q,h | W_k,h]`` (resp. ``[W_v,h | W_o,hᵀ]``), so the singular values
of ``M`` are ``sqrt(eig K)``: ranks use the same ``σ_k/σ_1 > max(τ, floor)`` rule as a layer,
with the floor ``max(d_head, columns of M)·eps``. Grouped-query attention (fewer K/V rows)
maps query head ``h`` to key/value head ``h // (heads / kv_heads)``.

Dead heads compare the norms of the heads' raw parameters; duplicate heads compare what
each head computes (:func:`head_gram`), so internal reparametrisations do not hide them.
"""

from __future__ import annotations

import torch

from symtool.linalg import all_finite, gram
from symtool.symmetry.layout import AttentionSpec
from symtool.symmetry.records import AttentionRecord, HeadRecord, SymmetrySettings
from symtool.symmetry.units import dead_counts, duplicates_from_gram, rank_counts

Tensor = torch.Tensor


def _block_sums(a: Tensor, b: Tensor, heads: int, dh: int) -> Tensor:
    """``S[h, g] = Σ_{i,j} a[h·dh + i, g·dh + j] · b[h·dh + i, g·dh + j]``."""
    return (a * b).reshape(heads, dh, heads, dh).sum(dim=(1, 3))


def _bilinear(a: Tensor, x: Tensor, heads: int, dh: int) -> Tensor:
    """``S[h, g] = x_hᵀ A_{hg} x_g`` for the ``dh × dh`` blocks ``A_{hg}`` of ``a``."""
    return torch.einsum("ha,hagb,gb->hg", x, a.reshape(heads, dh, heads, dh), x)


def head_gram(
    qh: Tensor, kh: Tensor, vh: Tensor, oh: Tensor | None, bq: Tensor | None, bv: Tensor | None
) -> Tensor:
    """Gram matrix of what each head computes, for the duplicate-head search.

    Head ``h``'s attention logits depend on its weights only through ``W_q,hᵀ W_k,h`` and
    ``W_k,hᵀ b_q,h`` (the key bias and ``b_qᵀb_k`` shift every logit of a query alike and
    cancel in the softmax), and its output only through ``W_o,h W_v,h`` and ``W_o,h b_v,h``.
    These are unchanged by the head's internal symmetries ``W_q → A W_q``, ``W_k → A⁻ᵀ W_k``
    and ``W_v → B W_v``, ``W_o → W_o B⁻¹`` (rotations, rescalings, sign flips), so heads
    that compute the same function match whatever parametrisation they ended in. The
    ``d × d`` products are never formed: ``⟨W_q,hᵀW_k,h, W_q,gᵀW_k,g⟩ = ⟨W_q,h W_q,gᵀ,
    W_k,h W_k,gᵀ⟩`` sums ``d_head × d_head`` blocks of ``QQᵀ ∘ KKᵀ`` (and likewise for OV),
    ``O(d·(H·d_head)²)`` work. Without ``W_o`` the raw ``W_v`` rows and ``b_v`` stand in
    for the OV part.

    Args:
        qh, kh, vh: ``H × d_head × d`` per-head rows (k, v already expanded to query heads).
        oh: ``H × d_head × d_out``, head ``h``'s columns of ``W_o`` transposed, or None.
        bq, bv: ``H × d_head`` query and value biases, or None.

    Returns:
        ``H × H`` float64 Gram matrix of the heads' invariants.
    """
    heads, dh = qh.shape[0], qh.shape[1]
    qf, kf, vf = (t.reshape(heads * dh, -1).to(torch.float64) for t in (qh, kh, vh))
    kk, vv = gram(kf.T), gram(vf.T)
    g = _block_sums(gram(qf.T), kk, heads, dh)
    if bq is not None:
        g = g + _bilinear(kk, bq.to(torch.float64), heads, dh)
    if oh is not None:
        oo = gram(oh.reshape(heads * dh, -1).to(torch.float64).T)
        g = g + _block_sums(oo, vv, heads, dh)
        if bv is not None:
            g = g + _bilinear(oo, bv.to(torch.float64), heads, dh)
    else:
        g = g + vv.reshape(heads, dh, heads, dh).diagonal(dim1=1, dim2=3).sum(-1)
        if bv is not None:
            bvf = bv.to(torch.float64)
            g = g + bvf @ bvf.T
    return g


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
    qk_s, qk_r = rank_counts(torch.cat([qh, kh], dim=2), eps, taus)
    ov_s, ov_r = None, None
    oh = None
    if o is not None:
        oh = o.T.reshape(heads, dh, o.shape[0])  # row block h of oᵀ = columns of head h
        ov_s, ov_r = rank_counts(torch.cat([vh, oh], dim=2), eps, taus)
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
    bq = None if biases[0] is None else biases[0].reshape(heads, dh)
    bv = None if biases[2] is None else biases[2].reshape(-1, dh)[group]
    invariants = head_gram(qh, kh, vh, oh, bq, bv)
    found = duplicates_from_gram(
        invariants[alive][:, alive],
        settings.dup_taus,
        settings.dup_tau,
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
