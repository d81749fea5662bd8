"""Settings and result records of the parameter-symmetry analysis.

docs/theory.md §5 (what each number means) and section 7 (float64, no NaN in a record).
Every record is a small frozen dataclass of plain values; a number that cannot be computed
is ``None`` with the reason in ``reason``. The analyses live in ``symmetry.py`` (rank,
softmax, subspaces, the whole checkpoint), ``units.py`` (hidden units), ``heads.py``
(attention heads) and ``timeline.py`` (checkpoint sequences).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from symtool.activations import NAMES as ACTIVATIONS
from symtool.errors import UsageError


def _check_taus(name: str, taus: tuple[float, ...], default: float, errors: list[str]) -> None:
    """Collect problems with a threshold list and its default into ``errors``."""
    if not taus:
        errors.append(f"{name}: at least one threshold is needed")
    for tau in taus:
        if not (isinstance(tau, (int, float)) and 0.0 < tau < 1.0):
            errors.append(f"{name}: threshold {tau!r} is not in (0, 1)")
    if not any(math.isclose(default, t, rel_tol=1e-9) for t in taus):
        errors.append(f"{name}: default {default!r} is not one of {list(taus)}")


@dataclass(frozen=True)
class SymmetrySettings:
    """Thresholds and switches of the symmetry analysis, recorded in every result.

    The headline thresholds are docs/theory.md's defaults; the lists also carry ``3τ`` and
    ``1e-1`` because the sequence rules (hysteresis ``τ``/``3τ``, "mode learned" at
    ``1e-1``) read them from the per-checkpoint records.

    Attributes:
        rank_taus: ``σ_k/σ_1`` thresholds at which numerical rank is counted.
        rank_tau: the headline rank threshold (time series, subspaces).
        dead_taus: ``ν_i`` thresholds at which dead units/heads are counted.
        dead_tau: the headline dead threshold; dead units are left out of the duplicate
            search and listed by index.
        dup_taus: ``d_ij`` thresholds at which duplicate pairs and clusters are counted.
        dup_tau: the headline duplicate threshold (clusters and pairs listed).
        activation: activation of every unit pair unless a pair names its own.
        block: rows per block of the blocked Gram products.
        max_pairs: most duplicate pairs listed per layer (closest first).
        keep_vectors: also store all singular values and per-unit imbalances.
    """

    rank_taus: tuple[float, ...] = (1e-1, 3e-2, 1e-2, 1e-3)
    rank_tau: float = 1e-2
    dead_taus: tuple[float, ...] = (1e-1, 3e-2, 1e-2, 1e-3)
    dead_tau: float = 1e-2
    dup_taus: tuple[float, ...] = (1e-1, 3e-2, 1e-2)
    dup_tau: float = 1e-2
    activation: str = "relu"
    block: int = 512
    max_pairs: int = 1000
    keep_vectors: bool = False

    def __post_init__(self) -> None:
        """Validate every field at once and raise one :class:`UsageError` listing all."""
        for name in ("rank_taus", "dead_taus", "dup_taus"):
            object.__setattr__(self, name, tuple(float(t) for t in getattr(self, name)))
        errors: list[str] = []
        _check_taus("rank_taus", self.rank_taus, self.rank_tau, errors)
        _check_taus("dead_taus", self.dead_taus, self.dead_tau, errors)
        _check_taus("dup_taus", self.dup_taus, self.dup_tau, errors)
        if self.activation not in ACTIVATIONS:
            errors.append(f"activation {self.activation!r} is not one of {list(ACTIVATIONS)}")
        if self.block < 1:
            errors.append(f"block must be >= 1, got {self.block}")
        if self.max_pairs < 0:
            errors.append(f"max_pairs must be >= 0, got {self.max_pairs}")
        if errors:
            raise UsageError("bad symmetry settings: " + "; ".join(errors))

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def threshold_lists(
        cls, *, dead: float | None = None, dup: float | None = None, rank: float | None = None
    ) -> dict[str, tuple[float, ...]]:
        """The default threshold lists with a user's headline thresholds (and 3× each, for
        the sequence's hysteresis) added; ``None`` leaves a list at its default."""
        fields = cls.__dataclass_fields__

        def grown(name: str, extra: float | None) -> tuple[float, ...]:
            taus: tuple[float, ...] = fields[name].default  # type: ignore[assignment]
            if extra is None:
                return taus
            return tuple(sorted({*taus, float(extra), min(3 * float(extra), 1.0)}, reverse=True))

        return {
            "dead_taus": grown("dead_taus", dead),
            "dup_taus": grown("dup_taus", dup),
            "rank_taus": grown("rank_taus", rank),
        }


@dataclass(frozen=True)
class TauCount:
    """A count at one threshold."""

    tau: float
    count: int


@dataclass(frozen=True)
class RankAt:
    """Numerical rank of one layer at one threshold.

    Attributes:
        tau: the threshold on ``σ_k/σ_1``.
        rank: ``#{k : σ_k/σ_1 > max(τ, floor)}``.
        floored: the dtype floor ``max(m,n)·eps``, not ``τ``, set the cut.
        gaussian_rank: expected rank of a Gaussian matrix of the same shape at the same
            cut (Marchenko–Pastur; a fraction).
        excess_nullity_gaussian: ``gaussian_rank − rank``; ≈ 0 for random weights.
        excess_nullity_reference: reference rank − rank (the first checkpoint), or None.
    """

    tau: float
    rank: int
    floored: bool
    gaussian_rank: float
    excess_nullity_gaussian: float
    excess_nullity_reference: int | None


@dataclass(frozen=True)
class LayerRank:
    """Rotation symmetry of one linear map (docs/theory.md §5, "Rank").

    Attributes:
        name: layer name (weight key without ``.weight``; split attention adds
            ``.q``/``.k``/``.v``).
        shape: ``(d_out, d_in)`` as analysed (conv: ``C_out × C_in·k``).
        kind: ``linear``, ``conv``, ``conv1d`` (GPT-2 transposed layout) or ``attention``.
        dtype: the checkpoint dtype of the weight.
        floor: the dtype floor ``max(m, n)·eps`` as a ratio ``σ/σ_1``.
        sigma_max: ``σ_1``.
        frobenius: ``‖W‖_F``.
        ranks: numerical rank at every threshold of the settings.
        effective_rank: ``exp(−Σ p_k log p_k)`` with ``p_k = σ_k / Σσ``.
        stable_rank: ``‖W‖_F² / σ_1²``.
        singular_values: all ``σ_k`` (descending) when ``keep_vectors``.
        reason: why numbers are missing (non-finite weights, zero matrix), else None.
    """

    name: str
    shape: tuple[int, int]
    kind: str
    dtype: str
    floor: float
    sigma_max: float | None
    frobenius: float | None
    ranks: tuple[RankAt, ...]
    effective_rank: float | None
    stable_rank: float | None
    singular_values: tuple[float, ...] | None = None
    reason: str | None = None


@dataclass(frozen=True)
class DeadAt:
    """Dead and half-dead units (or heads) at one threshold.

    Attributes:
        tau: threshold on ``ν_i = ‖θ_i‖ / max_j ‖θ_j‖``.
        dead: units with ``ν_i < τ``.
        half_dead_in: not dead, incoming part ``(w_i, b_i)`` below ``τ`` of its own
            maximum while the outgoing part is not.
        half_dead_out: not dead, outgoing part ``u_i`` below ``τ`` of its own maximum while
            the incoming part is not.
    """

    tau: float
    dead: int
    half_dead_in: int
    half_dead_out: int


@dataclass(frozen=True)
class DuplicatesAt:
    """Identical units at one threshold on ``d_ij``, among units alive at ``dead_tau``.

    Attributes:
        tau: the threshold.
        pairs: unordered pairs with ``d_ij < τ``.
        clusters: single-linkage clusters with at least two members.
        clustered_units: units in those clusters.
        independent: alive units after merging each cluster into one.
    """

    tau: float
    pairs: int
    clusters: int
    clustered_units: int
    independent: int


@dataclass(frozen=True)
class UnitPair:
    """One duplicate pair: ``i < j``, its ``d_ij`` and whether ``θ_j`` was sign-flipped."""

    i: int
    j: int
    distance: float
    flipped: bool


@dataclass(frozen=True)
class ImbalanceStats:
    """Summary of the per-unit imbalance ``‖w_i‖² + b_i² − ‖u_i‖²`` (all units)."""

    mean: float
    mean_abs: float
    std: float
    min: float
    max: float


@dataclass(frozen=True)
class LinearPairRecord:
    """Rotation symmetry of a linear pair (docs/theory.md §5): ``A → RA``, ``B → BRᵀ``.

    ``A`` (``h × (d_in + 1)``) holds the incoming rows with their bias, ``B`` the outgoing
    weight, whose columns for unit ``i`` are ``u_i``; so ``K = AAᵀ + BᵀB = ΘΘᵀ`` with ``Θ``
    the units' rows ``θ_i = [w_i, b_i, u_i]``, and K's eigenvalues are ``σ_k(Θ)²``.

    Attributes:
        sigma_max: ``σ_1(Θ)`` (``sqrt`` of K's largest eigenvalue).
        floor: ``max(h, p)·eps`` of the checkpoint dtype; a cut never goes below it.
        ranks: rank of K at every ``rank_taus``: how many ``σ_k/σ_1 > max(τ, floor)``,
            the directions the pair's rotation symmetry is broken along.
        imbalance_norm: ``‖AAᵀ − BᵀB‖_F``, whose diagonal is the per-unit imbalance; it is
            conserved by gradient flow without weight decay and decays like ``e^{−2λt}``
            under weight decay λ.
        k_norm: ``‖AAᵀ + BᵀB‖_F``, the scale ``imbalance_norm`` is compared with.
    """

    sigma_max: float
    floor: float
    ranks: tuple[TauCount, ...]
    imbalance_norm: float
    k_norm: float


@dataclass(frozen=True)
class UnitsRecord:
    """Hidden units between two layers (docs/theory.md §5, dead and identical units).

    Attributes:
        incoming: layer whose rows are ``w_i`` (and bias ``b_i``).
        outgoing: layer whose columns are ``u_i``.
        kind: ``linear``, ``conv`` or ``conv_to_linear``.
        width: outgoing columns per unit (conv kernel size, or flattened positions).
        source: ``auto`` (shapes chain) or ``explicit`` (caller's pair).
        activation: activation used for balancing/sign (see settings).
        balanced: units were balanced by ``s_i = sqrt(‖u_i‖/‖(w_i,b_i)‖)`` first.
        sign_symmetric: ``d_ij`` took the minimum over ``±θ_j``.
        units: number of hidden units.
        dead: dead/half-dead counts at every ``dead_taus``.
        dead_units: indices of units dead at ``dead_tau``.
        duplicates: pair and cluster counts at every ``dup_taus``.
        clusters: clusters (≥ 2 units) at ``dup_tau``, each sorted, listed by smallest member.
        independent_units: alive units after merging clusters at ``dup_tau``.
        pairs: closest duplicate pairs at ``dup_tau`` (at most ``max_pairs``).
        pairs_truncated: more pairs existed than were listed.
        imbalance: summary of ``‖w_i‖² + b_i² − ‖u_i‖²``.
        imbalances: the full per-unit vector when ``keep_vectors``.
        linear_pair: the pair's rotation measures, for the ``identity`` activation only.
        reason: why numbers are missing, else None.
    """

    incoming: str
    outgoing: str
    kind: str
    width: int
    source: str
    activation: str
    balanced: bool
    sign_symmetric: bool
    units: int
    dead: tuple[DeadAt, ...] = ()
    dead_units: tuple[int, ...] = ()
    duplicates: tuple[DuplicatesAt, ...] = ()
    clusters: tuple[tuple[int, ...], ...] = ()
    independent_units: int | None = None
    pairs: tuple[UnitPair, ...] = ()
    pairs_truncated: bool = False
    imbalance: ImbalanceStats | None = None
    imbalances: tuple[float, ...] | None = None
    linear_pair: LinearPairRecord | None = None
    reason: str | None = None


@dataclass(frozen=True)
class HeadRecord:
    """One attention head (docs/theory.md §5, attention QK / OV).

    Attributes:
        index: head number.
        norm_ratio: ``‖θ_h‖ / max_g ‖θ_g‖`` over the flattened head parameters.
        qk_sigma: largest singular value of ``[W_q,h | W_k,h]`` (``= sqrt(λ_max(K_QK))``).
        qk_ranks: rank of ``K_QK`` at every ``rank_taus`` (on ``sqrt`` of its eigenvalues).
        ov_sigma: largest singular value of ``[W_v,h | W_o,hᵀ]``, None without ``W_o``.
        ov_ranks: rank of ``K_OV`` likewise, empty without ``W_o``.
    """

    index: int
    norm_ratio: float | None
    qk_sigma: float | None
    qk_ranks: tuple[TauCount, ...]
    ov_sigma: float | None
    ov_ranks: tuple[TauCount, ...]


@dataclass(frozen=True)
class AttentionRecord:
    """Heads of one attention block.

    Attributes:
        name: module prefix of the block.
        layout: ``fused`` (nn.MultiheadAttention / ``qkv``), ``gpt2`` (transposed
            ``c_attn``) or ``separate`` (q/k/v/o projections).
        q, k, v, o: names of the split linear maps (``o`` None when not found).
        heads: query heads (given by the caller).
        kv_heads: key/value heads (fewer than ``heads`` for grouped-query attention).
        head_dim: ``d_head``.
        head_records: one record per head.
        dead: dead heads at every ``dead_taus`` (``half_dead_*`` are 0: not defined).
        dead_heads: indices of heads dead at ``dead_tau``.
        duplicates: duplicate-head counts at every ``dup_taus``.
        clusters: clusters of duplicate heads at ``dup_tau``.
        pairs: duplicate head pairs at ``dup_tau``.
        reason: why heads were not analysed, else None.
    """

    name: str
    layout: str
    q: str
    k: str
    v: str
    o: str | None
    heads: int | None
    kv_heads: int | None = None
    head_dim: int | None = None
    head_records: tuple[HeadRecord, ...] = ()
    dead: tuple[DeadAt, ...] = ()
    dead_heads: tuple[int, ...] = ()
    duplicates: tuple[DuplicatesAt, ...] = ()
    clusters: tuple[tuple[int, ...], ...] = ()
    pairs: tuple[UnitPair, ...] = ()
    reason: str | None = None


@dataclass(frozen=True)
class SoftmaxRecord:
    """Softmax logit-translation symmetry of the classifier (docs/theory.md §5).

    Attributes:
        layer: the classifier layer (or tensor) used.
        classes: ``K``, rows of ``W_out``.
        translation: ``‖1ᵀ W_out‖ / (√K ‖W_out‖_F)``; 0 = fully restored.
        bias_translation: ``|1ᵀ b| / (√K ‖b‖)`` when the layer has a bias.
        gaussian_level: ``1/√K``, the value random rows give on average.
        reason: why the numbers are missing, else None.
    """

    layer: str | None
    classes: int | None
    translation: float | None
    bias_translation: float | None
    gaussian_level: float | None
    reason: str | None = None


@dataclass(frozen=True)
class SkippedTensor:
    """A tensor that was not analysed, with its shape and the reason (the symmetry
    analysis reads tensors, not modules; see :class:`symtool.inputs.models.Skipped`)."""

    name: str
    shape: tuple[int, ...]
    reason: str


@dataclass(frozen=True)
class SymmetryResult:
    """Everything the symmetry analysis found in one checkpoint.

    Attributes:
        layers: rank record per linear map, in state-dict order.
        units: one record per unit pair.
        attention: one record per attention block.
        softmax: the classifier's translation record (None when there is no classifier).
        skipped: tensors not analysed, with reasons.
        settings: the settings used.
    """

    layers: tuple[LayerRank, ...]
    units: tuple[UnitsRecord, ...]
    attention: tuple[AttentionRecord, ...]
    softmax: SoftmaxRecord | None
    skipped: tuple[SkippedTensor, ...]
    settings: SymmetrySettings = field(default_factory=SymmetrySettings)


@dataclass(frozen=True)
class Series:
    """One quantity of one layer across checkpoints.

    Attributes:
        layer: layer name (units and heads: the incoming layer / attention block).
        quantity: ``rank``, ``dead``, ``independent``, ``dead_heads`` or
            ``independent_heads``.
        steps: checkpoint steps, ascending.
        values: the quantity at its headline threshold (None where it failed).
        hysteretic: the same after the hysteresis rule (None where it failed).
    """

    layer: str
    quantity: str
    steps: tuple[int, ...]
    values: tuple[int | None, ...]
    hysteretic: tuple[int | None, ...]


@dataclass(frozen=True)
class Event:
    """A persistent change of a series (docs/theory.md §5, across a sequence).

    Attributes:
        layer: as in :class:`Series`.
        quantity: as in :class:`Series`.
        step: first checkpoint step at the new level.
        before: level before.
        after: level after.
        label: ``breaking`` (residual symmetry shrinks) or ``restoration`` (it grows).
    """

    layer: str
    quantity: str
    step: int
    before: int
    after: int
    label: str


@dataclass(frozen=True)
class ModeLearned:
    """Step where ``σ_k/σ_1`` first went from below 1e-2 to above 1e-1."""

    layer: str
    mode: int
    step: int


@dataclass(frozen=True)
class ImbalanceTrend:
    """Fit of the log of an imbalance against step for one unit pair.

    ``quantity`` names what is fitted: ``units``, the per-unit imbalance ``C_i = ‖w_i‖² +
    b_i² − ‖u_i‖²`` through ``mean_i |C_i|`` (every pair with a rescaling symmetry); or
    ``matrix``, ``‖AAᵀ − BᵀB‖_F`` of a linear pair (an extra trend for those pairs).

    Attributes:
        layer: incoming layer of the pair.
        points: checkpoints used.
        slope: fitted ``d log(value) / d step``.
        rate: ``λ = −slope/2``, the decay rate in ``value ∝ e^{−2λ·step}``.
        r2: coefficient of determination of the fit.
        drift: largest relative change from the first point (``units``: of ``mean C`` or
            ``mean|C|``; ``matrix``: of the norm).
        ratio: the value at the last point over the first.
        law: ``conserved``, ``decaying`` or ``neither``.
        label: always ``law: SGD with L2 only`` (the law holds only there).
        reason: why no fit was made, else None.
        quantity: ``units`` or ``matrix``.
    """

    layer: str
    points: int
    slope: float | None
    rate: float | None
    r2: float | None
    drift: float | None
    ratio: float | None
    law: str | None
    label: str = "law: SGD with L2 only"
    reason: str | None = None
    quantity: str = "units"


@dataclass(frozen=True)
class SequenceResult:
    """Time series, events, learning timeline and imbalance laws over checkpoints."""

    steps: tuple[int, ...]
    series: tuple[Series, ...]
    events: tuple[Event, ...]
    modes: tuple[ModeLearned, ...]
    imbalance: tuple[ImbalanceTrend, ...]
    notes: tuple[str, ...] = ()
