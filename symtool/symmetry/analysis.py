"""Parameter symmetries read from weights alone: rank, dead/identical units, heads, softmax.

docs/theory.md §5 (the table of symmetries and their measures) and section 7 (float64,
no NaN in a record). One checkpoint's state dict goes in, a :class:`SymmetryResult` of
small frozen records comes out; :func:`symmetry_subspaces` returns the broken/restored
bases for saving, and :func:`symtool.symmetry.timeline.analyse_sequence` reads a sequence
of results.

Conventions fixed here where docs/theory.md is silent (user-facing text in docs/symmetry.md):

* numerical rank counts ``σ_k/σ_1 > max(τ, max(m,n)·eps)`` with ``eps`` of the precision the
  decomposition runs in (float64, :data:`COMPUTE_DTYPE`), not of the stored dtype: weights
  stored in bfloat16/float16 are widened first, and their storage rounding is not a floor;
* excess nullity against a Gaussian uses the Marchenko–Pastur expected rank of a Gaussian
  matrix of the same shape at the same cut (analytic, deterministic; the norm cancels);
* excess nullity against the reference is ``rank_ref − rank`` per threshold, per layer name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache

import torch
from scipy.integrate import quad

from symtool.linalg import all_finite, singular_values
from symtool.symmetry.heads import analyse_heads
from symtool.symmetry.layout import Layout, LinearMap, PairLike, discover, layer_bias, layer_matrix
from symtool.symmetry.records import (
    AttentionRecord,
    DeadAt,
    DuplicatesAt,
    Event,
    HeadRecord,
    ImbalanceStats,
    ImbalanceTrend,
    LayerRank,
    LinearPairRecord,
    ModeLearned,
    RankAt,
    SequenceResult,
    Series,
    SkippedTensor,
    SoftmaxRecord,
    SymmetryResult,
    SymmetrySettings,
    TauCount,
    UnitPair,
    UnitsRecord,
)
from symtool.symmetry.timeline import analyse_sequence
from symtool.symmetry.units import analyse_units, duplicate_search, unit_vectors

Tensor = torch.Tensor

__all__ = [
    "SUBSPACE_SIDES",
    "AttentionRecord",
    "DeadAt",
    "DuplicatesAt",
    "Event",
    "HeadRecord",
    "ImbalanceStats",
    "ImbalanceTrend",
    "LayerRank",
    "Layout",
    "LinearPairRecord",
    "ModeLearned",
    "RankAt",
    "SequenceResult",
    "Series",
    "SkippedTensor",
    "SoftmaxRecord",
    "SymmetryResult",
    "SymmetrySettings",
    "TauCount",
    "UnitPair",
    "UnitsRecord",
    "analyse_rank",
    "analyse_sequence",
    "analyse_symmetry",
    "discover",
    "duplicate_search",
    "gaussian_rank",
    "softmax_translation",
    "symmetry_subspaces",
]

SUBSPACE_SIDES = ("in.broken", "in.restored", "out.broken", "out.restored")
"""Suffixes of the keys :func:`symmetry_subspaces` returns."""


@lru_cache(maxsize=4096)
def gaussian_rank(m: int, n: int, cut: float) -> float:
    """Expected numerical rank of an ``m × n`` Gaussian matrix at ``σ_k/σ_1 > cut``.

    Marchenko–Pastur with ratio ``c = min/max``: singular values (in units of
    ``sqrt(max(m, n))``) have density ``sqrt((λ₊ − s²)(s² − λ₋)) / (π c s)`` on
    ``[1 − √c, 1 + √c]`` with ``λ± = (1 ± √c)²``, and ``σ_1`` sits at the upper edge.

    Args:
        m, n: the shape.
        cut: threshold on ``σ_k/σ_1``.

    Returns:
        ``min(m, n) · P(s > cut·(1 + √c))``, a fraction.
    """
    k = min(m, n)
    if k == 0:
        return 0.0
    c = k / max(m, n)
    lo, hi = 1.0 - math.sqrt(c), 1.0 + math.sqrt(c)
    x = cut * hi
    if x <= lo:
        return float(k)
    if x >= hi:
        return 0.0
    lam_p, lam_m = hi * hi, lo * lo

    def density(s: float) -> float:
        if s <= 0.0:  # only reached for square matrices (c = 1), where g(0) = 2/π
            return 2.0 / math.pi
        return math.sqrt(max(0.0, (lam_p - s * s) * (s * s - lam_m))) / (math.pi * c * s)

    below, _ = quad(density, lo, x, limit=200)
    return float(k * max(0.0, 1.0 - below))


COMPUTE_DTYPE = torch.float64
"""Every matrix is widened to this dtype before its decomposition; its ``eps`` sets the floor."""

ENTROPY_TOL = 1e-10
"""Relative error of the effective rank above which ranks use ``svdvals``, not the Gram
matrix (:func:`symtool.linalg.singular_values`)."""


def analyse_rank(
    w: Tensor,
    *,
    name: str = "",
    kind: str = "linear",
    dtype: torch.dtype | None = None,
    taus: Sequence[float] = (1e-1, 3e-2, 1e-2, 1e-3),
    reference: LayerRank | None = None,
    keep_vectors: bool = False,
) -> LayerRank:
    """Rank, effective rank, stable rank and excess nullity of one matrix.

    Args:
        w: ``d_out × d_in`` weight (any float dtype; widened to float64 and analysed there).
        name, kind: copied into the record.
        dtype: the checkpoint's stored dtype, recorded in the record (default ``w.dtype``).
            It does not set the floor: that is ``max(m, n)·eps`` of float64, the precision of
            the decomposition (docs/symmetry.md, "Half-precision checkpoints").
        taus: thresholds on ``σ_k/σ_1``.
        reference: the same layer in the reference checkpoint, for excess nullity.
        keep_vectors: store all singular values.

    Returns:
        The record; ``reason`` set for non-finite or zero matrices.
    """
    dtype = dtype or w.dtype
    m, n = int(w.shape[0]), int(w.shape[1])
    floor = max(m, n) * float(torch.finfo(COMPUTE_DTYPE).eps)
    head = dict(name=name, shape=(m, n), kind=kind, dtype=str(dtype).replace("torch.", ""),
                floor=floor)
    w = w.detach().to(device="cpu", dtype=COMPUTE_DTYPE)
    if not all_finite(w):
        return LayerRank(**head, sigma_max=None, frobenius=None, ranks=(), effective_rank=None,
                         stable_rank=None, reason="non-finite weights")
    cuts = [max(float(t), floor) for t in taus]
    sigma = singular_values(w, exact=keep_vectors, cuts=cuts, entropy_tol=ENTROPY_TOL)
    frob = float(torch.linalg.matrix_norm(w))
    s1 = float(sigma[0]) if sigma.numel() else 0.0
    if s1 <= 0.0:
        return LayerRank(**head, sigma_max=0.0, frobenius=0.0, ranks=(), effective_rank=None,
                         stable_rank=None, reason="zero matrix")
    ratio = sigma / s1
    ref = {}
    if reference is not None and reference.reason is None and reference.shape == (m, n):
        ref = {r.tau: r.rank for r in reference.ranks}
    ranks = []
    for tau, cut in zip(taus, cuts, strict=True):
        rank = int((ratio > cut).sum())
        g = gaussian_rank(m, n, cut)
        ranks.append(RankAt(float(tau), rank, floor > tau, g, g - rank,
                            ref[tau] - rank if tau in ref else None))
    p = sigma / sigma.sum()
    p = p[p > 0]
    eff = float(torch.exp(-(p * p.log()).sum()))
    return LayerRank(
        **head,
        sigma_max=s1,
        frobenius=frob,
        ranks=tuple(ranks),
        effective_rank=eff,
        stable_rank=frob * frob / (s1 * s1),
        singular_values=tuple(sigma.tolist()) if keep_vectors else None,
    )


def softmax_translation(w: Tensor, bias: Tensor | None = None, *, layer: str = "") -> SoftmaxRecord:
    """Softmax logit-translation measure of a classifier ``W_out`` (``K × d``).

    Returns:
        ``‖1ᵀ W_out‖ / (√K ‖W_out‖_F)`` (0 when every column has zero mean over classes),
        the same for the bias, and the random-rows level ``1/√K``.
    """
    w = w.detach().to(device="cpu", dtype=torch.float64).reshape(w.shape[0], -1)
    k = int(w.shape[0])
    head = dict(layer=layer, classes=k)
    if k < 2:
        return SoftmaxRecord(**head, translation=None, bias_translation=None,
                             gaussian_level=None, reason="fewer than two classes")
    tensors = [w] + ([bias] if bias is not None else [])
    if not all(all_finite(t) for t in tensors):
        return SoftmaxRecord(**head, translation=None, bias_translation=None,
                             gaussian_level=None, reason="non-finite weights")
    frob = float(w.norm())
    level = 1.0 / math.sqrt(k)
    if frob == 0.0:
        return SoftmaxRecord(**head, translation=None, bias_translation=None,
                             gaussian_level=level, reason="zero matrix")
    trans = float(w.sum(0).norm()) / (math.sqrt(k) * frob)
    bt = None
    if bias is not None:
        b = bias.detach().to(torch.float64).reshape(-1)
        nb = float(b.norm())
        bt = abs(float(b.sum())) / (math.sqrt(k) * nb) if nb > 0 else None
    return SoftmaxRecord(**head, translation=trans, bias_translation=bt, gaussian_level=level)


def _eps(lm: LinearMap) -> float:
    """Machine epsilon of the precision the layer is analysed in (float64, whatever it was
    stored in: :func:`layer_matrix` widens it, and bfloat16 rounding is not structure)."""
    return float(torch.finfo(COMPUTE_DTYPE).eps)


def analyse_symmetry(
    state: Mapping[str, Tensor],
    settings: SymmetrySettings | None = None,
    *,
    pairs: Sequence[PairLike] | None = None,
    heads: int | None = None,
    classifier: str | None = None,
    reference: SymmetryResult | None = None,
    layout: Layout | None = None,
    mlp_activation: str | None = None,
) -> SymmetryResult:
    """Analyse every parameter symmetry of one checkpoint.

    Args:
        state: the state dict (tensors on any device; read as float64 on the CPU).
        settings: thresholds and switches (defaults: docs/theory.md's).
        pairs: explicit unit pairs ``(incoming, outgoing[, activation])``; None: automatic.
        heads: attention heads per block; None skips the per-head analysis.
        classifier: classifier layer for the softmax record (None: automatic, "": none).
        reference: the first checkpoint's result, for excess nullity over it.
        layout: a layout from :func:`discover` to reuse (then ``pairs`` and
            ``classifier`` are ignored).
        mlp_activation: activation of transformer MLP pairs (from a model config);
            None: ``settings.activation``.

    Returns:
        Rank per layer, units per pair, heads per attention block, the softmax record and
        what was skipped.

    Raises:
        UsageError: bad settings, pairs or classifier.
    """
    settings = settings or SymmetrySettings()
    if layout is None:
        layout = discover(state, pairs=pairs, activation=settings.activation,
                          classifier=classifier, mlp_activation=mlp_activation)
    refs = {r.name: r for r in reference.layers} if reference is not None else {}
    layers = tuple(
        analyse_rank(layer_matrix(state, lm), name=lm.name, kind=lm.kind, dtype=lm.dtype,
                     taus=settings.rank_taus, reference=refs.get(lm.name),
                     keep_vectors=settings.keep_vectors)
        for lm in layout.layers
    )
    units = []
    for spec in layout.pairs:
        a, b = layout.layer(spec.incoming), layout.layer(spec.outgoing)
        inc, out = unit_vectors(layer_matrix(state, a), layer_bias(state, a),
                                layer_matrix(state, b), spec.width)
        units.append(analyse_units(inc, out, incoming=a.name, outgoing=b.name, kind=spec.kind,
                                   width=spec.width, source=spec.source,
                                   activation=spec.activation, settings=settings,
                                   eps=max(_eps(a), _eps(b))))
    attention = []
    for spec in layout.attention:
        q, k, v = (layout.layer(n) for n in (spec.q, spec.k, spec.v))
        o = None if spec.o is None else layer_matrix(state, layout.layer(spec.o))
        attention.append(analyse_heads(
            spec, layer_matrix(state, q), layer_matrix(state, k), layer_matrix(state, v), o,
            (layer_bias(state, q), layer_bias(state, k), layer_bias(state, v)),
            heads=heads, eps=_eps(q), settings=settings))
    softmax = None
    if layout.classifier is not None:
        bias = state[layout.classifier_bias] if layout.classifier_bias else None
        softmax = softmax_translation(state[layout.classifier], bias,
                                      layer=layout.classifier_name or layout.classifier)
    return SymmetryResult(layers, tuple(units), tuple(attention), softmax, layout.skipped,
                          settings)


def symmetry_subspaces(
    state: Mapping[str, Tensor],
    *,
    tau: float = 1e-2,
    layers: Sequence[str] | None = None,
    max_side: int = 8192,
    dtype: torch.dtype = torch.float64,
    layout: Layout | None = None,
) -> dict[str, Tensor]:
    """Orthonormal bases of the broken and restored subspaces of every layer.

    The broken subspace is spanned by the singular vectors with ``σ_k/σ_1 > max(τ,
    floor)`` (the same cut as the rank at ``τ``); the restored one is its orthogonal
    complement. Keys (columns are the basis vectors):

    * ``{layer}.in.broken`` (``d_in × r``), ``{layer}.in.restored`` (``d_in × (d_in − r)``):
      right singular vectors, the input side;
    * ``{layer}.out.broken`` (``d_out × r``), ``{layer}.out.restored``
      (``d_out × (d_out − r)``): left singular vectors, the output side.

    Zero-width bases are included (shape ``d × 0``). A restored basis on a side with more
    than ``max_side`` dimensions that exceeds ``min(d_out, d_in)`` is omitted (it would be
    huge); layers with non-finite or zero weights are omitted.

    Args:
        state: the state dict.
        tau: threshold on ``σ_k/σ_1``.
        layers: layer names to include (default: all analysed layers).
        max_side: largest side for which a full (square) basis is computed.
        dtype: dtype of the returned bases (the SVD is float64).
        layout: a layout from :func:`discover` to reuse.

    Returns:
        ``{key: basis}`` as described.
    """
    layout = layout or discover(state)
    wanted = None if layers is None else set(layers)
    out: dict[str, Tensor] = {}
    for lm in layout.layers:
        if wanted is not None and lm.name not in wanted:
            continue
        w = layer_matrix(state, lm)
        if not all_finite(w):
            continue
        m, n = w.shape
        full = max(m, n) <= max_side
        u, s, vh = torch.linalg.svd(w, full_matrices=full)
        if s.numel() == 0 or float(s[0]) <= 0.0:
            continue
        floor = max(m, n) * _eps(lm)
        r = int((s / s[0] > max(tau, floor)).sum())
        v = vh.T
        out[f"{lm.name}.in.broken"] = v[:, :r].to(dtype).contiguous()
        out[f"{lm.name}.out.broken"] = u[:, :r].to(dtype).contiguous()
        if v.shape[1] == n:
            out[f"{lm.name}.in.restored"] = v[:, r:].to(dtype).contiguous()
        if u.shape[1] == m:
            out[f"{lm.name}.out.restored"] = u[:, r:].to(dtype).contiguous()
    return out
