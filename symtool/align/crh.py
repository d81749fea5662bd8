"""The six CRH relations, their rotation nulls, the cross-term check and ``--verify``.

docs/theory.md §3 (relations, alignment score, spectrum-preserving null and its exact
moments, cross-term), section 1 (the exact identities ``H_b = W H_a Wᵀ`` and
``G_a = Wᵀ G_b W`` behind ``--verify``) and section 7 (float64; non-finite input gives a
failed record, never NaN).

Prepare a layer's matrices once with :func:`layer_spectra` (float64, symmetrised; ``H`` and
``Z`` decomposed, as PAH needs) and hand the result to both :func:`relations` and
:func:`symtool.align.pah.powers`; both compute it themselves when not given one. The null of
every relation is exact (:mod:`symtool.align.null`: traces, no decomposition), so ``G`` and
the cross terms are decomposed only for the optional sampled null (``null_samples > 0``).
:func:`score_pair` scores one further pair the same way (the NFA scores of
:mod:`symtool.align.agop`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from symtool.align.bases import gram_pair_range, moment_spectrum, symmetric64
from symtool.align.moments import LayerMatrices
from symtool.align.null import ZERO_SPREAD, ExactNull, Invariants, invariants, null_from_invariants
from symtool.align.score import HaarBank, NullStats, alignment, check_metric, rotation_nulls
from symtool.errors import AnalysisError, UsageError
from symtool.linalg import Spectrum, all_finite, spectrum
from symtool.triangles import scaled_sym

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

_DECOMPOSED = frozenset({"H_a", "H_b"})
"""Moments :func:`layer_spectra` decomposes: PAH fits in the bases of Z and H (Z's come from
:func:`symtool.align.bases.gram_pair_range`). ``G`` and the cross terms are used as matrices
only (alignment scores, exact nulls, PAH targets); the sampled null decomposes them on
demand. A ``G`` kept as rows (fewer than its width) gets its eigenvalues (no vectors: no fit
reads a basis of ``G``) from the ``r × r`` Gram matrix of its rows
(:func:`symtool.align.bases.moment_spectrum`): they spare a rotated null's ``d × d``
product."""


@dataclass(frozen=True, eq=False)
class LayerSpectra:
    """A layer's float64 matrices, with the eigendecompositions PAH needs (not a report record).

    Attributes:
        H_a, G_a, Z_a, H_b, G_b, Z_b: spectra of the moments and of ``Z_a = WᵀW``,
            ``Z_b = WWᵀ``; ``None`` when the matrix is not decomposed (``G``: never here) or
            could not be.
        X_a, X_b: spectra of the cross terms ``−sym C_a`` and ``−sym C_b`` (``None``: they
            are not decomposed here).
        reasons: ``(name, why)`` for every matrix that is unusable.
        dense: ``name → sym(M)`` in float64 for every usable matrix, decomposed or not.
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
    dense: dict[str, Tensor] = field(default_factory=dict)

    def get(self, name: str) -> Spectrum | None:
        """The spectrum called ``name`` (one of :data:`MATRIX_NAMES`), if decomposed."""
        if name not in MATRIX_NAMES:
            raise KeyError(name)
        return getattr(self, name)

    def matrix(self, name: str) -> Tensor | None:
        """The float64 symmetric matrix called ``name``, or ``None`` when it is unusable."""
        if name not in MATRIX_NAMES:
            raise KeyError(name)
        spec = self.get(name)
        return spec.matrix if spec is not None else self.dense.get(name)

    def reason(self, name: str) -> str | None:
        """Why ``name`` is unusable, or ``None`` if it is usable."""
        for key, why in self.reasons:
            if key == name:
                return why
        return None


def layer_spectra(m: LayerMatrices, *, cross: bool = True, metric: str = "pearson") -> LayerSpectra:
    """A layer's matrices in float64, ``H`` and ``Z`` decomposed once (what PAH needs).

    ``H_a``, ``H_b``: eigenvectors (PAH bases). ``Z_a``, ``Z_b``: both from one ``eigh``
    (:func:`symtool.linalg.gram_pair`). ``G`` and the cross terms: symmetrised float64
    matrices only; nothing of theirs needs a spectrum unless a sampled null is asked for.

    Args:
        m: the layer's finished matrices.
        cross: also prepare ``−sym C_a`` and ``−sym C_b`` (for the cross-term check).
        metric: the alignment metric (kept for the signature; the exact null needs no
            spectrum of any fixed matrix).

    Returns:
        :class:`LayerSpectra`; a matrix that is non-finite or fails ``eigh`` is unusable
        with its reason recorded, the others are still computed.
    """
    check_metric(metric)
    W = m.W.to(torch.float64)
    raw: dict[str, Tensor] = {"H_a": m.H_a, "G_a": m.G_a, "H_b": m.H_b, "G_b": m.G_b}
    if cross:  # X_s = −sym C_s, formed in one sum (bitwise what sym(−C_s) gives)
        for x, C in (("X_a", m.C_a), ("X_b", m.C_b)):
            C64 = C.detach().to(torch.float64)
            raw[x] = scaled_sym(C64, -0.5)
    out: dict[str, Spectrum | None] = dict.fromkeys(MATRIX_NAMES)
    dense: dict[str, Tensor] = {}
    reasons: list[tuple[str, str]] = []
    factors = m.factors or {}
    for name, M in raw.items():
        # H and G come mirrored from finish (m.symmetric), X_s as formed above
        exact = (m.symmetric or name in ("X_a", "X_b")) and M.dtype == torch.float64
        M64 = M.detach() if exact else symmetric64(M)
        if not all_finite(M64):
            reasons.append((name, f"{_LABEL.get(name, name)}: matrix has non-finite entries"))
            continue
        if name not in _DECOMPOSED and name not in factors:
            dense[name] = M64
            continue
        try:
            # H: the range's eigenvectors (from the rows when fewer than d, an r × r
            # problem); a G with a row factor: its eigenvalues only, next to nothing
            out[name] = moment_spectrum(
                M64, factors.get(name), checked=True, vectors=name in _DECOMPOSED
            )
        except AnalysisError as exc:
            reasons.append((name, f"{_LABEL.get(name, name)}: {exc.message}"))
    if not all_finite(W):
        reasons += [("Z_a", "W has non-finite entries"), ("Z_b", "W has non-finite entries")]
    else:
        try:
            out["Z_a"], out["Z_b"] = gram_pair_range(W)
        except AnalysisError as exc:
            reasons += [("Z_a", f"Z_a: {exc.message}"), ("Z_b", f"Z_b: {exc.message}")]
    return LayerSpectra(**out, reasons=tuple(reasons), dense=dense)


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
class SampledNull:
    """The sampled Haar null of one relation (``--null-samples K``), a check on the exact one.

    Attributes:
        mean: mean of ``α(first, Q second Qᵀ)`` over the defined rotated samples.
        std: their sample standard deviation (ddof = 1).
        z: ``(α − mean)/std``.
        rotations: how many rotated samples had a defined score.
        reason: why a field is ``None``, else ``None``.
    """

    mean: float | None
    std: float | None
    z: float | None
    rotations: int
    reason: str | None = None


@dataclass(frozen=True)
class Relation:
    """One alignment relation ``first ~ second`` with its rotation null.

    Attributes:
        id: relation id (``f-RGA`` … ``b-RWA``, or ``f-CROSS``/``b-CROSS``).
        formula: the relation written out, e.g. ``"H_a ~ G_a"``.
        side: ``"a"`` (input) or ``"b"`` (output).
        alpha: alignment score ``α(first, second)``.
        null_mean: mean of ``α(first, Q second Qᵀ)`` over Haar ``Q`` (exact, no sampling).
        null_std: its standard deviation (of the Haar law itself).
        z: ``(alpha − null_mean)/null_std``.
        holds: ``alpha ≥`` threshold and ``z ≥`` threshold; ``None`` when either is undefined.
        reason: why a field is ``None`` (or the relation failed), else ``None``.
        null_method: how the null was computed: ``"exact"`` (closed form), ``"quadrature"``
            (fixed deterministic rule, ``d ≤ 64``), ``"series"`` (fourth-order moment
            series) or ``"none"`` (undefined).
        null_error: bound on the error of ``null_mean`` and of ``null_std``, in units of
            ``null_std`` (0 for ``"exact"``); ``None`` when the null has no spread.
        borderline: ``z`` is within its own uncertainty of the z threshold, so ``holds`` could
            flip within ``null_error``; ``None`` when ``holds`` is.
        sampled_null: the sampled Haar null (``--null-samples K > 0``), a check on the exact
            one; ``None`` when not asked for.
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
    null_method: str = "none"
    null_error: float | None = None
    borderline: bool | None = None
    sampled_null: SampledNull | None = None


@dataclass(frozen=True)
class LayerAlignment:
    """The CRH result of one layer.

    Attributes:
        relations: the six relations, in the order of :data:`RELATIONS`.
        cross: the cross-term checks ``−sym C_a ~ Z_a`` and ``−sym C_b ~ Z_b``.
        metric: ``"pearson"`` or ``"cosine"``.
        null_samples: number K of Haar rotations of the optional sampled null (0: none).
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
    invariants_of: Callable[[str], Invariants],
) -> tuple[str, Tensor, Tensor, float | None] | Relation:
    """The score of one relation, or its failed record when a matrix is missing.

    The matrices' own sums and norms come from their :class:`Invariants` (computed once per
    matrix, and used again by the exact null), so the score reads the pair once."""
    formula = f"{_label(first)} ~ {_label(second)}"
    A, B = spectra.matrix(first), spectra.matrix(second)
    if A is None or B is None:
        missing = [why for name in (first, second) if (why := spectra.reason(name)) is not None]
        why = "; ".join(missing) if missing else "matrix not available"
        return Relation(rid, formula, side, None, None, None, None, None, f"failed: {why}")
    ia, ib = invariants_of(first), invariants_of(second)
    known = ((ia.frob_sq, ia.total, ia.centred_sq), (ib.frob_sq, ib.total, ib.centred_sq))
    return formula, A, B, alignment(A, B, metric, assume_finite=True, known=known)


def z_error(z: float, error: float) -> float:
    """How far ``z`` can be from its exact value when the null's mean and std are each known
    to within ``error · std``: ``(|z| + 1) · error/(1 − error)`` (docs/theory.md §3)."""
    if error >= 1.0:
        return math.inf
    return (abs(z) + 1.0) * error / (1.0 - error)


def _finish(
    rid: str,
    formula: str,
    side: str,
    alpha: float | None,
    null: ExactNull,
    metric: str,
    thresholds: Thresholds,
    sampled: NullStats | None,
) -> Relation:
    """The record of one scored relation, with its null and whether it holds."""
    reason = None
    z = None
    if alpha is None:
        what = "constant" if metric == "pearson" else "zero"
        reason = f"alignment undefined (a {what} matrix)"
    elif null.reason is not None:
        reason = null.reason
    if alpha is not None and null.mean is not None and null.std is not None:
        if null.std > ZERO_SPREAD:
            z = (alpha - null.mean) / null.std
        elif reason is None:
            reason = "null has zero spread (rotation-invariant pair)"
    holds = borderline = None
    if alpha is not None and z is not None:
        holds = alpha >= thresholds.alpha and z >= thresholds.z
        err = null.error_bound or 0.0
        borderline = abs(z - thresholds.z) <= z_error(z, err)
    error = null.error_bound if null.std is not None and null.std > ZERO_SPREAD else None
    check = None
    if sampled is not None:
        check = SampledNull(sampled.mean, sampled.std, sampled.z, sampled.samples, sampled.reason)
    return Relation(
        rid, formula, side, alpha, null.mean, null.std, z, holds, reason,
        null.method, error, borderline, check,
    )


def exact_nulls(
    pairs: list[tuple[str, str]],
    spectra: LayerSpectra,
    metric: str,
    invariants_of: Callable[[str], Invariants] | None = None,
) -> list[ExactNull]:
    """Exact Haar nulls of ``α(first, Q second Qᵀ)`` for ``(first, second)`` names.

    ``invariants_of``: the matrices' invariants by name (:func:`invariants_cache` over the
    same pairs, when the caller has one already).
    """
    get = invariants_of or invariants_cache(pairs, spectra, metric)
    return [null_from_invariants(get(a), get(b), metric) for a, b in pairs]


def invariants_cache(
    pairs: list[tuple[str, str]], spectra: LayerSpectra, metric: str
) -> Callable[[str], Invariants]:
    """A name → :class:`Invariants` function computing each matrix's invariants once.

    A matrix rotated in some pair (the second; Pearson only) gets the rotated side's extra
    traces too: from its eigenvalues when :func:`layer_spectra` decomposed it (``Z``
    always, ``H``, and ``G`` when it has fewer rows than its width), else from one product.
    """
    rotated = {second for _, second in pairs} if metric == "pearson" else set()
    cache: dict[str, Invariants] = {}

    def get(name: str) -> Invariants:
        if name not in cache:
            M = spectra.matrix(name)
            assert M is not None
            spec = spectra.get(name)
            cache[name] = invariants(
                M,
                rotated=name in rotated,
                eigenvalues=None if spec is None else spec.values,
                symmetric=True,  # sym(M) in float64, from layer_spectra
            )
        return cache[name]

    return get


def score_pair(
    rid: str,
    formula: str,
    side: str,
    A: Tensor,
    B: Tensor,
    *,
    metric: str = "pearson",
    thresholds: Thresholds | None = None,
    eigenvalues: Tensor | None = None,
    fixed: Invariants | None = None,
) -> Relation:
    """α(A, B) with the exact Haar null of α(A, Q B Qᵀ), as a Relation (same record as the six).

    For scores beside the six relations (NFA, docs/theory.md §3): ``A`` fixed, ``B`` rotated,
    both symmetrised in float64; ``eigenvalues``: ``B``'s, when known (spares the null's
    ``O(d³)`` step); ``fixed``: ``A``'s invariants, when one ``A`` is scored against several
    ``B``. A non-finite matrix gives a failed record with the reason.
    """
    check_metric(metric)
    thresholds = Thresholds() if thresholds is None else thresholds
    A64, B64 = symmetric64(A), symmetric64(B)
    bad = [name for name, M in (("A", A64), ("B", B64)) if not all_finite(M)]
    if bad:
        why = f"failed: non-finite entries in {' and '.join(bad)}"
        return Relation(rid, formula, side, None, None, None, None, None, why)
    alpha = alignment(A64, B64, metric, assume_finite=True)
    ia = invariants(A64, rotated=False, symmetric=True) if fixed is None else fixed
    ib = invariants(B64, rotated=metric == "pearson", eigenvalues=eigenvalues, symmetric=True)
    null = null_from_invariants(ia, ib, metric)
    return _finish(rid, formula, side, alpha, null, metric, thresholds, None)


def _sampled_nulls(
    pending: list[tuple[str, str, float | None]],
    spectra: LayerSpectra,
    *,
    bank: HaarBank,
    samples: int,
    metric: str,
) -> list[NullStats]:
    """The sampled Haar null of each ``(first, second, α)``: spectra decomposed on demand."""
    specs: dict[str, Spectrum] = {}

    def get(name: str) -> Spectrum:
        spec = spectra.get(name)
        if spec is None or (metric == "pearson" and spec.ones is None):  # G: values only
            spec = specs.get(name)
            if spec is None:
                M = spectra.matrix(name)
                assert M is not None
                spec = specs[name] = spectrum(M, vectors=False, ones=metric == "pearson")
        return spec

    try:
        pairs = [(get(a), get(b), alpha) for a, b, alpha in pending]
    except AnalysisError as exc:
        return [NullStats(None, None, None, 0, f"sampled null: {exc.message}") for _ in pending]
    return rotation_nulls(pairs, bank=bank, samples=samples, metric=metric)


def relations(
    m: LayerMatrices,
    *,
    spectra: LayerSpectra | None = None,
    metric: str = "pearson",
    null_samples: int = 0,
    bank: HaarBank | None = None,
    thresholds: Thresholds | None = None,
) -> LayerAlignment:
    """Score the six CRH relations and the two cross terms of one layer (docs/theory.md §3).

    Args:
        m: the layer's finished matrices.
        spectra: the layer's matrices from :func:`layer_spectra` (computed here if ``None``;
            pass them in to share one ``eigh`` per matrix with the PAH fit).
        metric: ``"pearson"`` (default) or ``"cosine"``.
        null_samples: Haar rotations of the optional sampled null (default 0: only the exact
            null, which decides ``z`` and ``holds`` either way).
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
    if spectra is None:
        spectra = layer_spectra(m, cross=True, metric=metric)
    specs = RELATIONS + CROSS_TERMS
    available = [
        (first, second)
        for _, first, second, _ in specs
        if spectra.matrix(first) is not None and spectra.matrix(second) is not None
    ]
    invariants_of = invariants_cache(available, spectra, metric)
    scored = [_relation(*spec, spectra, metric, invariants_of) for spec in specs]
    pending = [
        (first, second, s[3])
        for (_, first, second, _), s in zip(specs, scored, strict=True)
        if not isinstance(s, Relation)
    ]
    exact = iter(
        exact_nulls([(a, b) for a, b, _ in pending], spectra, metric, invariants_of)
    )
    sampled: list[NullStats | None] = [None] * len(pending)
    if null_samples > 0:
        bank = HaarBank(seed=0, samples=null_samples) if bank is None else bank
        sampled = list(
            _sampled_nulls(pending, spectra, bank=bank, samples=null_samples, metric=metric)
        )
    sampled_it = iter(sampled)
    done = [
        s
        if isinstance(s, Relation)
        else _finish(rid, s[0], side, s[3], next(exact), metric, thresholds, next(sampled_it))
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
