"""The neural feature ansatz (NFA): a layer's ``Z_a = WᵀW`` against the AGOP of the network output.

docs/theory.md §3 ("Neural feature ansatz"); Radhakrishnan, Beaglehole, Pandit, Belkin,
*Mechanism for feature learning in neural networks and backpropagation-free machine
learning models*, Science 2024, arXiv:2212.13881.

:class:`AgopSums` streams ``S = Σ g_b g_bᵀ`` (float64, ``d_out × d_out``) over the extra
backward passes of one layer: ``g_b`` is the gradient of one output coordinate (``exact``:
one pass per coordinate) or of one Gaussian projection of the output (``projection``:
``R`` passes) with respect to the layer's output ``b``. Then ``AGOP_b = S/(n·R)`` (``R = 1``
when exact) and, in the local convention of ``G_a``, ``AGOP_a = Wᵀ AGOP_b W``. :func:`nfa`
scores ``α(Z_a, AGOP_a)`` (``NFA``) and ``α(Z_a, AGOP_a^{1/2})`` (``NFA_sqrt``) with the
exact Haar null of the six relations, and reports the estimator's relative error
(0 when exact; a plug-in upper estimate for projections, derived in docs/theory.md §3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from symtool.align import crh
from symtool.align.bases import symmetric64
from symtool.align.null import invariants
from symtool.errors import AnalysisError
from symtool.linalg import add_gram_, all_finite, gram
from symtool.report.files import to_jsonable
from symtool.triangles import full_from_lower

Tensor = torch.Tensor
F64 = torch.float64
METHODS = ("exact", "projection")

NFA_FORMULA = "Z_a ~ AGOP_a"
NFA_SQRT_FORMULA = "Z_a ~ AGOP_a^1/2"


class AgopSums:
    """Streaming float64 Σ g_b g_bᵀ (d_out × d_out) over the extra backward passes of one
    layer, with what the error estimate of the projection estimator needs.

    Per batch: :meth:`rows` (the batch's sample rows), then one :meth:`add` per pass (the
    gradient rows of that pass, in the same row order every pass), then :meth:`end_batch`.
    For the projection estimator ``add`` also takes ``W`` and accumulates, per independent
    unit ``s`` (a sample: its rows share the Gaussian vectors), ``T_s = Σ_r Σ_{i∈s} ‖g_{r,i}W‖²``;
    ``end_batch`` adds ``Σ_s T_s²`` into ``Q`` (docs/theory.md §3).

    Args:
        method: ``"exact"`` (one pass per output coordinate) or ``"projection"``.
        passes: passes per batch: output coordinates (exact) or projections ``R``.
        outputs: output coordinates per sample, for the record (default: ``passes`` when
            exact, unknown when projected).
    """

    def __init__(self, method: str, passes: int, *, outputs: int | None = None) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown AGOP method {method!r}; expected one of {METHODS}")
        if passes < 1:
            raise ValueError(f"passes must be ≥ 1, got {passes}")
        self.method = method
        self.passes = int(passes)
        self.outputs = outputs if outputs is not None or method == "projection" else passes
        self._S: Tensor | None = None  # lower triangle of Σ g_b g_bᵀ
        self._n: Tensor | None = None  # () int64: sample rows
        self._Q: Tensor | None = None  # () float64: Σ_s T_s² (projection)
        self._t: Tensor | None = None  # per-row Σ_r ‖g_{r,i} W‖² of the open batch
        self._pending_n = 0  # rows told before the sums exist
        self._batch_rows: int | None = None
        self._groups = 0
        self._seen = 0
        self._no_w = False

    # ----------------------------------------------------------------- state
    @property
    def allocated(self) -> bool:
        """Whether the sums exist (after the first pass or :meth:`allocate`)."""
        return self._S is not None

    @property
    def n(self) -> int:
        """Sample rows told so far (:meth:`rows`)."""
        return 0 if self._n is None else int(self._n.item())

    def allocate(self, d_out: int, device: torch.device | str = "cpu") -> None:
        """Create zero sums (first pass, or a process without data before an all-reduce)."""
        if self._S is not None:
            if d_out != self._S.shape[0]:
                raise ValueError(f"gradients of width {d_out} do not fit {self._S.shape[0]}")
            return
        self._S = torch.zeros(d_out, d_out, dtype=F64, device=device)
        self._n = torch.full((), self._pending_n, dtype=torch.int64, device=device)
        self._pending_n = 0
        self._Q = torch.zeros((), dtype=F64, device=device)

    # ----------------------------------------------------------------- streaming
    def rows(self, n: int, *, samples: int | None = None) -> None:
        """Open a batch of ``n`` sample rows (once per batch, before its passes).

        ``samples``: how many independent samples those rows come from (rows of a sample
        consecutive, ``n/samples`` each, as a ``(B, T, d)`` batch flattens); default: every
        row is its own sample. Only the projection error estimate uses it.
        """
        if self._batch_rows is not None:
            raise ValueError("rows() called twice without end_batch()")
        if n < 0 or (samples is not None and (samples < 1 or n % samples)):
            raise ValueError(f"{n} rows do not split into {samples} samples")
        self._batch_rows = int(n)
        self._groups = n if samples is None else int(samples)
        self._seen = 0
        self._t = None
        if self._n is not None:
            self._n += n
        else:
            self._pending_n += n

    def add(self, g_b: Tensor, W: Tensor | None = None) -> None:
        """One pass's gradient rows ``g_b`` (``rows × d_out``, any float dtype and device) for
        the open batch; ``W`` (``d_out × d_in``): the layer weight, needed by the projection
        error estimate (ignored when exact)."""
        if self._batch_rows is None:
            raise ValueError("add() before rows(): tell the batch's row count first")
        if g_b.ndim != 2 or g_b.shape[0] != self._batch_rows:
            raise ValueError(
                f"need {self._batch_rows} gradient rows × d_out, got {tuple(g_b.shape)}"
            )
        self.allocate(g_b.shape[1], g_b.device)
        assert self._S is not None
        self._seen += 1
        if self._seen > self.passes:
            raise ValueError(f"more than {self.passes} passes in one batch")
        g = g_b.detach().to(F64)
        add_gram_(self._S, g)
        if self.method != "projection":
            return
        if W is None:
            self._no_w = True
            return
        ga = g @ W.detach().to(device=g.device, dtype=F64).reshape(W.shape[0], -1)
        t = (ga * ga).sum(dim=1)
        self._t = t if self._t is None else self._t + t

    def end_batch(self) -> None:
        """Close the open batch (checks it had every pass; adds its ``Σ_s T_s²``)."""
        if self._batch_rows is None:
            raise ValueError("end_batch() without rows()")
        if self._batch_rows > 0 and self._seen != self.passes:
            raise ValueError(f"batch had {self._seen} passes, expected {self.passes}")
        if self._t is not None and self._batch_rows > 0:
            assert self._Q is not None
            T = self._t.reshape(self._groups, -1).sum(dim=1)
            self._Q += (T * T).sum()
        self._batch_rows, self._t = None, None

    # ----------------------------------------------------------------- merging
    def merge(self, other: AgopSums) -> None:
        """Add another shard's sums into these (same method and passes)."""
        if (other.method, other.passes) != (self.method, self.passes):
            raise ValueError("cannot merge AGOP sums of different methods or passes")
        if not other.allocated:
            return
        assert other._S is not None and other._n is not None and other._Q is not None
        self.allocate(other._S.shape[0], other._S.device)
        for dst, src in zip(self.tensors(), other.tensors(), strict=True):
            dst += src.to(dst.device)
        self._no_w |= other._no_w

    def tensors(self) -> list[Tensor]:
        """The sums (``n``, ``S``, ``Q``) as live tensors, for an in-place all-reduce."""
        if not self.allocated:
            raise ValueError("no sums yet; call allocate() first")
        assert self._S is not None and self._n is not None and self._Q is not None
        return [self._n, self._S, self._Q]


# ----------------------------------------------------------------------- results


def agop_matrices(sums: AgopSums, W: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``AGOP_a``, ``AGOP_a^{1/2}`` (``d_in × d_in``) and ``AGOP_a``'s eigenvalues (ascending),
    float64.

    ``AGOP_b = S/(n·R)`` is eigendecomposed (``d_out × d_out``) with eigenvalues below zero
    (round-off of a Gram matrix) clipped to 0, giving ``F = AGOP_b^{1/2}``; then
    ``K = F W`` (``d_out × d_in``), ``AGOP_a = KᵀK`` and, from the SVD ``K = U Σ Pᵀ``,
    ``AGOP_a^{1/2} = P Σ Pᵀ``: no ``d_in × d_in`` eigendecomposition.

    Raises:
        AnalysisError: no rows, non-finite gradients or weight, or a shape mismatch.
    """
    if not sums.allocated or sums.n == 0:
        raise AnalysisError("no sample rows reached the AGOP passes")
    assert sums._S is not None
    W64 = W.detach().to(device=sums._S.device, dtype=F64)
    W64 = W64.reshape(W64.shape[0], -1)
    if W64.shape[0] != sums._S.shape[0]:
        d = sums._S.shape[0]
        raise AnalysisError(f"W of shape {tuple(W64.shape)} does not fit AGOP_b of width {d}")
    if not all_finite(sums._S):
        raise AnalysisError("non-finite output gradients in the AGOP passes")
    if not all_finite(W64):
        raise AnalysisError("W has non-finite entries")
    scale = sums.n * (sums.passes if sums.method == "projection" else 1)
    B = full_from_lower(sums._S) / scale
    lam, V = torch.linalg.eigh(B)
    F = V.mT * lam.clamp(min=0.0).sqrt()[:, None]  # FᵀF = V diag(λ₊) Vᵀ
    K = F @ W64
    A = gram(K)
    _, sig, Ph = torch.linalg.svd(K, full_matrices=False)
    root = (Ph.mT * sig) @ Ph
    root = 0.5 * (root + root.mT)
    d_in = W64.shape[1]
    values = torch.zeros(d_in, dtype=F64, device=K.device)
    values[: sig.numel()] = sig * sig
    return A, root, values.sort().values  # ascending, as eigvalsh (the null's rule reads them)


@dataclass(frozen=True)
class Nfa:
    """The NFA scores of one layer (docs/theory.md §3).

    Attributes:
        relations: ``NFA`` (``α(Z_a, AGOP_a)``) and ``NFA_sqrt`` (``α(Z_a, AGOP_a^{1/2})``),
            records like the six relations (failed records when the AGOP is unavailable).
        method: ``"exact"`` or ``"projection"``.
        outputs: output coordinates per sample (``None`` when not known).
        projections: ``R`` when projected, else ``None``.
        error: estimated relative Frobenius error of ``AGOP_a`` (0.0 when exact).
        reason: why the AGOP or its error is unavailable, else ``None``.
        status: ``"ok"``, or ``"failed"`` when the AGOP could not be formed.
    """

    relations: tuple[crh.Relation, crh.Relation]
    method: str
    outputs: int | None
    projections: int | None
    error: float | None
    reason: str | None
    status: str = "ok"

    def record(self) -> dict[str, Any]:
        """The report's ``nfa`` object, without ``f_gwa_alpha`` (added by the run)."""
        rels = {}
        for r in self.relations:
            d = to_jsonable(r)
            d.pop("id")
            rels[r.id] = d
        return {
            "status": self.status,
            "reason": self.reason,
            "relations": rels,
            "agop": {
                "method": self.method,
                "outputs": self.outputs,
                "projections": self.projections,
                "error": self.error,
            },
        }


def projection_error(sums: AgopSums, agop_a: Tensor) -> tuple[float | None, str | None]:
    """Plug-in upper estimate of ``‖Â_a − A_a‖_F/‖Â_a‖_F`` for the projection estimator:
    ``√(2Q/R³)/(n‖Â_a‖_F)``, ``Q = Σ_s T_s²`` (docs/theory.md §3); 0.0 when exact."""
    if sums.method == "exact":
        return 0.0, None
    if sums._no_w:
        return None, "error estimate unavailable: a projection pass came without W"
    assert sums._Q is not None
    norm = float(torch.linalg.matrix_norm(agop_a))
    if norm == 0.0:
        return None, "AGOP_a is zero: relative error undefined"
    R = sums.passes
    err = math.sqrt(2.0 * float(sums._Q) / R**3) / (sums.n * norm)
    return (err, None) if math.isfinite(err) else (None, "error estimate is not finite")


def nfa(
    sums: AgopSums,
    W: Tensor,
    *,
    Z: Tensor | None = None,
    metric: str = "pearson",
    thresholds: crh.Thresholds | None = None,
) -> Nfa:
    """Score ``Z_a = WᵀW`` against ``AGOP_a`` and ``AGOP_a^{1/2}`` (docs/theory.md §3).

    Args:
        sums: the layer's streamed :class:`AgopSums`.
        W: the layer weight ``d_out × d_in`` (conv: reshaped kernel).
        Z: ``Z_a = WᵀW`` in float64 when the caller has it (``LayerSpectra``'s), else
            formed here.
        metric: ``"pearson"`` (default) or ``"cosine"``.
        thresholds: what "holds" requires (default ``α ≥ 0.8`` and ``z ≥ 3``).

    Returns:
        :class:`Nfa`; when the AGOP cannot be formed, failed relation records with the reason.
    """
    R = sums.passes if sums.method == "projection" else None
    try:
        A, root, values = agop_matrices(sums, W)
    except AnalysisError as exc:
        why = f"failed: {exc.message}"
        fail = (
            crh.Relation("NFA", NFA_FORMULA, "a", None, None, None, None, None, why),
            crh.Relation("NFA_sqrt", NFA_SQRT_FORMULA, "a", None, None, None, None, None, why),
        )
        return Nfa(fail, sums.method, sums.outputs, R, None, exc.message, "failed")
    if Z is None:
        W64 = W.detach().to(device=A.device, dtype=F64)
        Z = gram(W64.reshape(W64.shape[0], -1))
    Z = symmetric64(Z)
    error, why = projection_error(sums, A)
    fixed = invariants(Z, rotated=False, symmetric=True) if all_finite(Z) else None
    rels = (
        crh.score_pair("NFA", NFA_FORMULA, "a", Z, A, metric=metric, thresholds=thresholds,
                       eigenvalues=values, fixed=fixed),
        crh.score_pair("NFA_sqrt", NFA_SQRT_FORMULA, "a", Z, root, metric=metric,
                       thresholds=thresholds, eigenvalues=values.clamp(min=0.0).sqrt(),
                       fixed=fixed),
    )
    return Nfa(rels, sums.method, sums.outputs, R, error, why)
