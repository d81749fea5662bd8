"""Full symmetric matrices from triangles and transposes, strip by strip.

Gram sums are accumulated as lower triangles (:func:`symtool.linalg.add_gram_`), and a few
matrices are symmetrised or shifted by a rank-one term once finished. Done on the whole
matrix, each of these reads ``S`` transposed with a stride of ``d`` and allocates ``d × d``
temporaries; in strips of ``_MIRROR_BLOCK`` rows the transposed read stays in cache and no
temporary is larger than a strip (2–3× faster at ``d`` = 1024–4608 on one thread,
bench/analysis_costs.py). Every entry is computed by the same operations as the
whole-matrix expression, so results are identical, and exactly symmetric.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


_MIRROR_BLOCK = 128
"""Rows per strip (a strip's transposed read stays in cache)."""


def full_from_lower(S: Tensor) -> Tensor:
    """The symmetric matrix whose lower triangle ``S`` holds (what
    :func:`symtool.linalg.add_gram_` fills); ``S`` itself is left alone."""
    return mirror_lower_(S.clone())


def sub_outer_(S: Tensor, u: Tensor) -> Tensor:
    """``S −= u uᵀ`` in place, strip by strip: no ``d × d`` temporary, and entry for entry
    ``S − outer(u, u)`` (so a symmetric ``S`` stays exactly symmetric, which a fused
    ``addr_`` does not guarantee)."""
    for i in range(0, S.shape[0], _MIRROR_BLOCK):
        e = min(i + _MIRROR_BLOCK, S.shape[0])
        S[i:e].sub_(torch.outer(u[i:e], u))
    return S


def scaled_sym(C: Tensor, scale: float) -> Tensor:
    """``scale·(C + Cᵀ)`` for a square ``C`` (one sum and one product per entry: exactly
    symmetric)."""
    d = C.shape[0]
    out = torch.empty_like(C)
    for i in range(0, d, _MIRROR_BLOCK):
        e = min(i + _MIRROR_BLOCK, d)
        torch.add(C[i:e], C[:, i:e].mT, out=out[i:e]).mul_(scale)
    return out


def mirror_lower_(S: Tensor) -> Tensor:
    """Overwrite ``S``'s strict upper triangle with the transpose of its lower one, in place
    (the lower triangle is left as it is: entries copied, not recomputed). A batch
    ``(..., d, d)`` is mirrored matrix by matrix."""
    if S.ndim > 2:
        for M in S.view(-1, *S.shape[-2:]):
            mirror_lower_(M)
        return S
    d = S.shape[0]
    for i in range(0, d, _MIRROR_BLOCK):
        e = min(i + _MIRROR_BLOCK, d)
        blk = S[i:e, i:e]
        blk.copy_(torch.tril(blk) + torch.tril(blk, -1).mT)
        if e < d:
            S[i:e, e:].copy_(S[e:, i:e].mT)
    return S
