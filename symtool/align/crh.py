"""The six CRH relations, their rotation nulls, the cross-term check and ``--verify``.

docs/theory.md §3 (relations, alignment score, spectrum-preserving null, cross-term),
section 1 (the exact identities ``H_b = W H_a Wᵀ`` and ``G_a = Wᵀ G_b W`` behind
``--verify``) and section 7 (float64; non-finite input gives a failed record, never NaN).

Eigendecompose a layer's matrices once with :func:`layer_spectra` and hand the result to
both :func:`relations` and :func:`symtool.align.pah.powers`; both compute it themselves when not
given one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from symtool.align.bases import gram_pair_range, moment_spectrum
from symtool.align.moments import LayerMatrices
from symtool.align.score import HaarBank, NullStats, alignment, check_metric, rotation_nulls
from symtool.errors import AnalysisError, UsageError
from symtool.linalg import Spectrum, all_finite, spectrum

Tensor = torch.Tensor

MATRIX_NAMES = ("H_a", "G_a", "Z_a", "H_b", "G_b", "Z_b", "X_a", "X_b")
"""Names of the matrices a :class:`LayerSpectra` holds (``X_s = −sym C_s``)."""

RELATIONS: tuple[tuple[str, str, str, str], ...] = (
    ("f-RGA", "H_a", "G_a", "a"),
    ("f-GWA", "G_a", "Z_a", "a"),
    ("f-RWA", "H_a", "Z_a", "a"),
    ("b-RGA", "H_b", "G_b", "b"),
    ("b-GWA", "G_b", "Z_b", "b"),
    ("b-RWA", "H_b", "Z_b", "b"),
)
"""``(id, first, second, side)`` of the six relations ``first ~ second``."""

CROSS_TERMS: tuple[tuple[str, str, str, str], ...] = (
    ("f-CROSS", "X_a", "Z_a", "a"),
    ("b-CROSS", "X_b", "Z_b", "b"),
)
"""``(id, first, second, side)`` of the cross-term checks ``−sym C_s ~ Z_s``."""

_LABEL = {"X_a": "-sym C_a", "X_b": "-sym C_b"}

_NEED_VECTORS = frozenset({"H_a", "H_b"})
"""Moments whose eigenvectors are used: PAH fits in the bases of Z and H (Z's come from
:func:`symtool.linalg.gram_pair`). G and the cross terms are the fixed (first) matrix of a
null only, which needs their eigenvalues and ``c = Vᵀ1`` (Pearson), not their vectors."""


@dataclass(frozen=True, eq=False)
class LayerSpectra:
    """One float64 eigendecomposition of each matrix of a layer (not a report record).

    Attributes:
        H_a, G_a, Z_a, H_b, G_b, Z_b: spectra of the moments and of ``Z_a = WᵀW``,
            ``Z_b = WWᵀ``; ``None`` when the matrix could not be decomposed.
        X_a, X_b: spectra of the cross terms ``−sym C_a`` and ``−sym C_b`` (``None`` when
            not requested or not decomposable).
        reasons: ``(name, why)`` for every matrix that is ``None``.
    """

    H_a: Spectrum | None
    G_a: Spectrum | None
    Z_a: Spectrum | None
    H_b: Spectrum | None
    G_b: Spectrum | None
    Z_b: Spectrum | None
    X_a: Spectrum | None = None
    X_b: Spectrum | None = None
    reasons: tuple[tuple[str, str], ...] = ()

    def get(self, name: str) -> Spectrum | None:
        """The spectrum called ``name`` (one of :data:`MATRIX_NAMES`)."""
        if name not in MATRIX_NAMES:
            raise KeyError(name)
        return getattr(self, name)

    def reason(self, name: str) -> str | None:
        """Why ``name`` has no spectrum, or ``None`` if it has one."""
        for key, why in self.reasons:
            if key == name:
                return why
        return None


def layer_spectra(m: LayerMatrices, *, cross: bool = True, metric: str = "pearson") -> LayerSpectra:
    """Eigendecompose every matrix of a layer once (float64), each only as deep as needed.

    ``H_a``, ``H_b``: eigenvectors (PAH bases; fixed side of RGA and RWA). ``Z_a``, ``Z_b``:
    both from one ``eigh`` (:func:`symtool.linalg.gram_pair`). ``G`` and the cross terms:
    eigenvalues and, for the Pearson null where they are the fixed matrix, ``c = Vᵀ1``.

    Args:
        m: the layer's finished matrices.
        cross: also decompose ``−sym C_a`` and ``−sym C_b`` (for the cross-term null).
        metric: the alignment metric the nulls will use (cosine needs no ``c``).

    Returns:
        :class:`LayerSpectra`; a matrix that is non-finite or fails ``eigh`` is ``None``
        with its reason recorded, the others are still computed.
    """
    W = m.W.to(torch.float64)
    dense: dict[str, Tensor] = {"H_a": m.H_a, "G_a": m.G_a, "H_b": m.H_b, "G_b": m.G_b}
    if cross:
        dense["X_a"] = -m.C_a.to(torch.float64)
        dense["X_b"] = -m.C_b.to(torch.float64)
    out: dict[str, Spectrum | None] = {}
    reasons: list[tuple[str, str]] = []
    for name, M in dense.items():
        try:
            if name in _NEED_VECTORS:  # the range's eigenvectors: all PAH reads
                out[name] = moment_spectrum(M, (m.factors or {}).get(name))
            else:
                out[name] = spectrum(M, vectors=False, ones=metric == "pearson")
        except AnalysisError as exc:
            out[name] = None
            reasons.append((name, f"{_LABEL.get(name, name)}: {exc.message}"))
    out["Z_a"] = out["Z_b"] = None
    if not all_finite(W):
        reasons += [("Z_a", "W has non-finite entries"), ("Z_b", "W has non-finite entries")]
    else:
        try:
            out["Z_a"], out["Z_b"] = gram_pair_range(W)
        except AnalysisError as exc:
            reasons += [("Z_a", f"Z_a: {exc.message}"), ("Z_b", f"Z_b: {exc.message}")]
    return LayerSpectra(**out, reasons=tuple(reasons))


@dataclass(frozen=True)
class Thresholds:
    """When a relation "holds": ``α ≥ alpha`` and null ``z ≥ z`` (both required).

    Attributes:
        alpha: minimum alignment score (default 0.8).
        z: minimum null z-score (default 3.0).
    """

    alpha: float = 0.8
    z: float = 3.0

    def __post_init__(self) -> None:
        bad = []
        if not (math.isfinite(self.alpha) and -1.0 <= self.alpha <= 1.0):
            bad.append(f"alpha threshold must be in [-1, 1], got {self.alpha}")
        if not math.isfinite(self.z):
            bad.append(f"z threshold must be finite, got {self.z}")
        if bad:
            raise UsageError("; ".join(bad))


@dataclass(frozen=True)
class Relation:
    """One alignment relation ``first ~ second`` with its rotation null.

    Attributes:
        id: relation id (``f-RGA`` … ``b-RWA``, or ``f-CROSS``/``b-CROSS``).
        formula: the relation written out, e.g. ``"H_a ~ G_a"``.
        side: ``"a"`` (input) or ``"b"`` (output).
        alpha: alignment score ``α(first, second)``.
        null_mean: mean of ``α(first, Q second Qᵀ)`` over Haar ``Q``.
        null_std: its sample standard deviation.
        z: ``(alpha − null_mean)/null_std``.
        holds: ``alpha ≥`` threshold and ``z ≥`` threshold; ``None`` when either is undefined.
        reason: why a field is ``None`` (or the relation failed), else ``None``.
    """

    id: str
    formula: str
    side: str
    alpha: float | None
    null_mean: float | None
    null_std: float | None
    z: float | None
    holds: bool | None
    reason: str | None = None


@dataclass(frozen=True)
class LayerAlignment:
    """The CRH result of one layer.

    Attributes:
        relations: the six relations, in the order of :data:`RELATIONS`.
        cross: the cross-term checks ``−sym C_a ~ Z_a`` and ``−sym C_b ~ Z_b``.
        metric: ``"pearson"`` or ``"cosine"``.
        null_samples: number K of Haar rotations per null.
        thresholds: what "holds" required.
        recipe: the moment recipe the matrices came from.
    """

    relations: tuple[Relation, ...]
    cross: tuple[Relation, ...]
    metric: str
    null_samples: int
    thresholds: Thresholds
    recipe: str


def _label(name: str) -> str:
    return _LABEL.get(name, name)


def _relation(
    rid: str,
    first: str,
    second: str,
    side: str,
    spectra: LayerSpectra,
    metric: str,
) -> tuple[str, Spectrum, Spectrum, float | None] | Relation:
    """The score of one relation, or its failed record when a matrix is missing."""
    formula = f"{_label(first)} ~ {_label(second)}"
    A, B = spectra.get(first), spectra.get(second)
    if A is None or B is None:
        missing = [why for name in (first, second) if (why := spectra.reason(name)) is not None]
        why = "; ".join(missing) if missing else "matrix not available"
        return Relation(rid, formula, side, None, None, None, None, None, f"failed: {why}")
    return formula, A, B, alignment(A.matrix, B.matrix, metric, assume_finite=True)


def _finish(
    rid: str,
    formula: str,
    side: str,
    alpha: float | None,
    null: NullStats,
    metric: str,
    thresholds: Thresholds,
) -> Relation:
    """The record of one scored relation, with its null and whether it holds."""
    reason = None
    if alpha is None:
        what = "constant" if metric == "pearson" else "zero"
        reason = f"alignment undefined (a {what} matrix)"
    elif null.reason is not None:
        reason = null.reason
    holds = None
    if alpha is not None and null.z is not None:
        holds = alpha >= thresholds.alpha and null.z >= thresholds.z
    return Relation(rid, formula, side, alpha, null.mean, null.std, null.z, holds, reason)


def relations(
    m: LayerMatrices,
    *,
    spectra: LayerSpectra | None = None,
    metric: str = "pearson",
    null_samples: int = 16,
    bank: HaarBank | None = None,
    thresholds: Thresholds | None = None,
) -> LayerAlignment:
    """Score the six CRH relations and the two cross terms of one layer (docs/theory.md §3).

    Args:
        m: the layer's finished matrices.
        spectra: the layer's spectra from :func:`layer_spectra` (computed here if ``None``;
            pass them in to share one ``eigh`` per matrix with the PAH fit).
        metric: ``"pearson"`` (default) or ``"cosine"``.
        null_samples: Haar rotations per null (default 16; 0 disables the null, so
            ``holds`` is ``None``).
        bank: the run's shared :class:`HaarBank` (a fresh seed-0 bank if ``None``).
        thresholds: what "holds" requires (default ``α ≥ 0.8`` and ``z ≥ 3``).

    Returns:
        :class:`LayerAlignment`; relations over non-finite or undecomposable matrices are
        recorded as failed with the reason.
    """
    check_metric(metric)
    if null_samples < 0:
        raise UsageError(f"null samples must be ≥ 0, got {null_samples}")
    thresholds = Thresholds() if thresholds is None else thresholds
    bank = HaarBank(seed=0, samples=null_samples) if bank is None else bank
    if spectra is None:
        spectra = layer_spectra(m, cross=True, metric=metric)
    specs = RELATIONS + CROSS_TERMS
    scored = [_relation(*spec, spectra, metric) for spec in specs]
    pending = [s for s in scored if not isinstance(s, Relation)]
    nulls = iter(
        rotation_nulls(
            [(A, B, alpha) for _, A, B, alpha in pending],
            bank=bank,
            samples=null_samples,
            metric=metric,
        )
    )
    done = [
        s
        if isinstance(s, Relation)
        else _finish(rid, s[0], side, s[3], next(nulls), metric, thresholds)
        for (rid, _, _, side), s in zip(specs, scored, strict=True)
    ]
    n = len(RELATIONS)
    return LayerAlignment(
        tuple(done[:n]), tuple(done[n:]), metric, null_samples, thresholds, m.recipe
    )


@dataclass(frozen=True)
class Verification:
    """``--verify``: relative errors of the exact raw-moment identities (docs/theory.md §1).

    Attributes:
        h_b_error: ``‖H_b − W H_a Wᵀ‖_F / ‖H_b‖_F`` on raw moments.
        g_a_error: ``‖G_a − Wᵀ G_b W‖_F / ‖G_a‖_F`` on raw moments.
        reason: why an error is ``None``, else ``None``.
    """

    h_b_error: float | None
    g_a_error: float | None
    reason: str | None = None


def _rel_error(lhs: Tensor, rhs: Tensor, name: str) -> tuple[float | None, str | None]:
    if not (all_finite(lhs) and all_finite(rhs)):
        return None, f"{name}: non-finite entries"
    norm = float(torch.linalg.matrix_norm(lhs))
    if norm == 0.0:
        return None, f"{name} is zero"
    return float(torch.linalg.matrix_norm(lhs - rhs)) / norm, None


def verify(m: LayerMatrices) -> Verification:
    """Check ``H_b = W H_a Wᵀ`` and ``G_a = Wᵀ G_b W`` on the raw moments.

    Both identities are exact for raw moments with the local ``g_a``, so their relative
    errors (float64 round-off, ~1e-12) test hooks, axes and scaling end to end.

    Args:
        m: finished matrices with ``m.raw`` holding ``H_a``, ``G_a``, ``H_b``, ``G_b``.

    Returns:
        :class:`Verification`; errors are ``None`` with a reason when the raw moments are
        missing, non-finite or zero.
    """
    if m.raw is None:
        return Verification(None, None, "raw moments were not accumulated (use --verify)")
    missing = [k for k in ("H_a", "G_a", "H_b", "G_b") if k not in m.raw]
    if missing:
        return Verification(None, None, f"raw moments missing: {', '.join(missing)}")
    W = m.W.to(torch.float64)
    raw = {k: v.to(dtype=torch.float64, device=W.device) for k, v in m.raw.items()}
    h_err, h_why = _rel_error(raw["H_b"], W @ raw["H_a"] @ W.T, "H_b")
    g_err, g_why = _rel_error(raw["G_a"], W.T @ raw["G_b"] @ W, "G_a")
    why = "; ".join(r for r in (h_why, g_why) if r is not None) or None
    return Verification(h_err, g_err, why)
