"""Neural collapse (NC1–NC4) of one layer's input rows, from streamed class-wise sums.

docs/theory.md §3 ("Neural collapse"); Papyan, Han, Donoho, *Prevalence of neural collapse
during the terminal phase of deep learning training*, PNAS 2020, arXiv:2008.08186.

:class:`ClassSums` keeps, in float64, the per-class counts and sums ``Σ h`` (``C × d``) and
one total ``Σ h hᵀ`` (``d × d``): ``O(C·d + d²)`` memory, never a per-sample row. The rows
are taken relative to a reference point (the first batch's mean), so a large common offset
of the features does not cancel catastrophically in ``Σ_W = (S − Σ_c n_c μ_c μ_cᵀ)/n``.
:func:`finish` turns the sums into NC1, NC2 (equinorm, equiangularity, cosine spread) and,
given the classifier, NC3; :func:`nearest_class` is the rule NC4 compares predictions with
(the caller runs the second, forward-only pass).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from symtool.linalg import add_gram_, all_finite
from symtool.triangles import full_from_lower

Tensor = torch.Tensor
F64 = torch.float64


class ClassSums:
    """Streaming float64 sums for neural collapse of one layer's input rows: counts per class,
    Σh per class (C × d), total Σhhᵀ (d × d) and the ignored-row count. O(C·d + d²).

    Sums are of ``h − r`` for a reference point ``r`` (:attr:`reference`: the mean of the
    first batch's labelled rows, or ``reference=`` given): the statistics do not depend on
    ``r``, but the round-off of ``Σ_W`` does, through ``‖μ − r‖²/‖Σ_W‖`` (docs/theory.md §3).
    :meth:`merge` re-expresses the other sums about this reference (exact algebra); the
    in-place all-reduce of :meth:`tensors` needs one reference on every process
    (:meth:`all_reduce` agrees on one first, :meth:`rebase` moves to a given one).

    Args:
        n_classes: number of classes (labels ``0 … n_classes − 1``); ``None``: grows with
            the largest label seen (not possible with :meth:`tensors`).
        reference: the reference point ``r`` (``d``), if the caller wants a fixed one.
    """

    def __init__(self, n_classes: int | None = None, *, reference: Tensor | None = None) -> None:
        if n_classes is not None and n_classes < 1:
            raise ValueError(f"n_classes must be ≥ 1, got {n_classes}")
        self._fixed = n_classes is not None
        self._C = 0 if n_classes is None else int(n_classes)
        self._ref: Tensor | None = None if reference is None else reference.detach().to(F64)
        self._counts: Tensor | None = None  # (C,) int64
        self._sums: Tensor | None = None  # (C, d) float64: Σ (h − r) per class
        self._S: Tensor | None = None  # (d, d) float64, lower triangle: Σ (h − r)(h − r)ᵀ
        self._ignored: Tensor | None = None  # () int64

    # ----------------------------------------------------------------- state
    @property
    def allocated(self) -> bool:
        """Whether the sums exist (after the first batch or :meth:`allocate`)."""
        return self._S is not None

    @property
    def d(self) -> int | None:
        """Feature width, once known."""
        return None if self._S is None else int(self._S.shape[0])

    @property
    def n(self) -> int:
        """Labelled rows added so far."""
        return 0 if self._counts is None else int(self._counts.sum().item())

    @property
    def ignored(self) -> int:
        """Rows added with a negative label (not used)."""
        return 0 if self._ignored is None else int(self._ignored.item())

    @property
    def n_classes(self) -> int:
        """Number of class slots (fixed, or the largest label seen plus one)."""
        return self._C

    @property
    def reference(self) -> Tensor | None:
        """The reference point the sums are taken about (``None`` before any row)."""
        return self._ref

    def allocate(self, d: int, device: torch.device | str = "cpu") -> None:
        """Create zero sums of width ``d`` (first batch, or a process without data before an
        all-reduce)."""
        if self._S is not None:
            if d != self._S.shape[0]:
                raise ValueError(f"rows of width {d} do not fit sums of width {self._S.shape[0]}")
            return
        self._counts = torch.zeros(self._C, dtype=torch.int64, device=device)
        self._sums = torch.zeros(self._C, d, dtype=F64, device=device)
        self._S = torch.zeros(d, d, dtype=F64, device=device)
        self._ignored = torch.zeros((), dtype=torch.int64, device=device)
        if self._ref is not None:
            if self._ref.shape != (d,):
                raise ValueError(f"reference of shape {tuple(self._ref.shape)} for width {d}")
            self._ref = self._ref.to(device)

    def _grow(self, C: int) -> None:
        assert self._counts is not None and self._sums is not None
        extra = C - self._C
        if extra <= 0:
            return
        dev = self._counts.device
        self._counts = torch.cat([self._counts, torch.zeros(extra, dtype=torch.int64, device=dev)])
        self._sums = torch.cat([self._sums, self._sums.new_zeros(extra, self._sums.shape[1])])
        self._C = C

    # ----------------------------------------------------------------- streaming
    def add(self, h: Tensor, labels: Tensor) -> None:
        """Add rows ``h`` (``rows × d``, any float dtype and device) with integer ``labels``
        (``rows``); a label ``< 0`` marks a row to ignore (counted in :attr:`ignored`)."""
        if h.ndim != 2 or labels.shape != (h.shape[0],):
            raise ValueError(
                f"need rows × d features and one label per row, got {tuple(h.shape)} and "
                f"{tuple(labels.shape)}"
            )
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"labels must be integers, got {labels.dtype}")
        self.allocate(h.shape[1], h.device)
        assert self._ignored is not None and self._S is not None
        labels = labels.detach().to(device=h.device, dtype=torch.int64)
        keep = labels >= 0
        n_keep = int(keep.sum().item())
        self._ignored += labels.shape[0] - n_keep
        if n_keep == 0:
            return
        x = h.detach()[keep].to(F64)
        y = labels[keep]
        top = int(y.max().item()) + 1
        if top > self._C:
            if self._fixed:
                raise ValueError(f"label {top - 1} out of range for {self._C} classes")
            self._grow(top)
        assert self._counts is not None and self._sums is not None
        if self._ref is None:
            self._ref = x.mean(dim=0)
        x = x - self._ref.to(x.device)
        self._counts += torch.bincount(y, minlength=self._C)
        self._sums.index_add_(0, y, x)
        add_gram_(self._S, x)

    # ----------------------------------------------------------------- merging
    def rebase(self, reference: Tensor) -> None:
        """Express the sums about another reference point (exact algebra, float64): with
        ``δ = r_old − r_new``, ``Σ_c += n_c δ`` and ``S += δ sᵀ + s δᵀ + n δδᵀ``."""
        new = reference.detach().to(F64)
        if self._S is None or self._ref is None:
            self._ref = new if self._S is None else new.to(self._S.device)
            return
        assert self._counts is not None and self._sums is not None
        new = new.to(self._S.device)
        delta = self._ref - new
        s = self._sums.sum(dim=0)
        n = float(self._counts.sum())
        self._sums += self._counts.to(F64)[:, None] * delta
        # only the lower triangle of S is read: adding the full symmetric update keeps it
        self._S += torch.outer(delta, s) + torch.outer(s, delta) + n * torch.outer(delta, delta)
        self._ref = new

    def merge(self, other: ClassSums) -> None:
        """Add another shard's sums into these (its reference moved to this one's)."""
        if not other.allocated:
            return
        assert other._S is not None and other._counts is not None and other._sums is not None
        assert other._ignored is not None
        dev = self._S.device if self._S is not None else other._S.device
        self.allocate(other._S.shape[0], dev)
        assert self._counts is not None and self._sums is not None and self._S is not None
        assert self._ignored is not None
        if other._C > self._C:
            if self._fixed:
                raise ValueError(f"cannot merge {other._C} classes into {self._C}")
            self._grow(other._C)
        counts, sums, S = other._counts.to(dev), other._sums.to(dev), other._S.to(dev)
        if other._ref is not None:  # without one, the other's sums are zero
            if self._ref is None:  # and so are these: take the other's reference
                self._ref = other._ref.to(dev)
            delta = other._ref.to(dev) - self._ref
            s = sums.sum(dim=0)
            n = float(counts.sum())
            sums = sums + counts.to(F64)[:, None] * delta
            S = S + torch.outer(delta, s) + torch.outer(s, delta) + n * torch.outer(delta, delta)
        C = other._C
        self._counts[:C] += counts
        self._sums[:C] += sums
        self._S += S
        self._ignored += other._ignored.to(dev)

    def tensors(self) -> list[Tensor]:
        """The sums (counts, ignored count, class sums, ``S``) as live tensors, for an
        in-place all-reduce; every process must have the same :attr:`reference` first
        (:meth:`rebase`, or :meth:`all_reduce` which does both)."""
        if not self._fixed:
            raise ValueError("tensors() needs a fixed number of classes (ClassSums(n_classes))")
        if not self.allocated:
            raise ValueError("no sums yet; call allocate() first")
        assert self._counts is not None and self._ignored is not None
        assert self._sums is not None and self._S is not None
        return [self._counts, self._ignored, self._sums, self._S]

    def all_reduce(self, reduce_: Callable[[list[Tensor]], None]) -> None:
        """Sum these sums over processes with ``reduce_`` (an in-place all-reduce of a list
        of tensors, e.g. :func:`symtool.distributed.all_reduce_`), in two rounds: agree on a
        reference point (the mean of the processes' references), then add the sums about it.
        Every process must be :meth:`allocate`-d with the same width."""
        if not self.allocated:
            raise ValueError("no sums yet; call allocate() first")
        assert self._S is not None
        d = self._S.shape[0]
        has = torch.ones((), dtype=F64, device=self._S.device)
        ref = self._ref if self._ref is not None else torch.zeros(d, dtype=F64)
        if self._ref is None:
            has.zero_()
        ref = ref.to(self._S.device).clone()
        reduce_([ref, has])
        if float(has) > 0:
            self.rebase(ref / has)
        reduce_(self.tensors())


# ----------------------------------------------------------------------- results


@dataclass(frozen=True)
class Collapse:
    """Neural-collapse numbers of one layer (docs/theory.md §3).

    Attributes:
        classes: classes present among the labelled rows (``C``).
        rows: labelled rows used (``n``).
        ignored_rows: rows with a negative label.
        nc1: ``tr(Σ_W Σ_B⁺)/C``.
        equinorm: coefficient of variation (population std/mean) of ``‖μ_c − μ_G‖``.
        equiangularity: mean over ``c ≠ c'`` of ``|cos(μ_c − μ_G, μ_c' − μ_G) + 1/(C−1)|``.
        cos_mean, cos_std: mean and population std of those cosines.
        nc3: ``‖W/‖W‖_F − M/‖M‖_F‖_F²`` (classifier rows of the present classes; ``None``
            without a classifier).
        reason: why a number is ``None``, else ``None``.
        means: float64 ``C × d`` class means (for NC4), in the order of ``present``.
        present: int64 class ids of those rows.
    """

    classes: int
    rows: int
    ignored_rows: int
    nc1: float | None
    equinorm: float | None
    equiangularity: float | None
    cos_mean: float | None
    cos_std: float | None
    nc3: float | None
    reason: str | None
    means: Tensor = field(repr=False)
    present: Tensor = field(repr=False)

    def record(self) -> dict[str, Any]:
        """The report fields of the ``collapse`` object, except ``status``, ``nc4`` and
        ``classifier`` (added by the run)."""
        return {
            "reason": self.reason,
            "classes": self.classes,
            "rows": self.rows,
            "ignored_rows": self.ignored_rows,
            "nc1": self.nc1,
            "equinorm": self.equinorm,
            "equiangularity": self.equiangularity,
            "cos_mean": self.cos_mean,
            "cos_std": self.cos_std,
            "nc3": self.nc3,
        }


def pinv_cutoff(C: int, d: int) -> float:
    """Relative cut-off of the pseudo-inverse: singular values ``σ_j`` of the centred means
    ``M`` (``C × d``) count only when ``σ_j > max(C, d)·eps·σ_1`` (numpy's ``matrix_rank``
    rule; docs/theory.md §3)."""
    return max(C, d) * torch.finfo(F64).eps


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def finish(sums: ClassSums, classifier: Tensor | None = None) -> Collapse:
    """NC1, NC2 and (with ``classifier``) NC3 from the sums (docs/theory.md §3).

    Args:
        sums: the layer's streamed :class:`ClassSums`.
        classifier: the classifier's weight (``n_classes × d``, row ``c`` = class ``c``;
            bias ignored); only the rows of the classes present are used.

    Returns:
        :class:`Collapse`; numbers that are undefined (fewer than two classes, a zero
        between-class spread, non-finite features, a zero or mismatched classifier) are
        ``None`` with the reason, never NaN.
    """
    ignored = sums.ignored
    empty = torch.zeros(0, 0, dtype=F64)
    none = torch.zeros(0, dtype=torch.int64)
    if not sums.allocated or sums.n == 0:
        return Collapse(0, 0, ignored, *[None] * 6, "no labelled rows", empty, none)
    assert sums._counts is not None and sums._sums is not None and sums._S is not None
    assert sums._ref is not None
    counts = sums._counts
    present = torch.nonzero(counts > 0).flatten()
    C, n, d = int(present.numel()), sums.n, sums._S.shape[0]
    nk = counts[present].to(F64)
    s = sums._sums[present]
    if not (all_finite(s) and all_finite(sums._S.diagonal())):
        return Collapse(
            C, n, ignored, *[None] * 6, "non-finite features", empty.new_zeros(C, d), present
        )
    rel = s / nk[:, None]  # class means about the reference
    means = rel + sums._ref
    reasons: list[str] = []
    nc1 = equinorm = equi = cos_mean = cos_std = nc3 = None
    if C < 2:
        reasons.append(f"{C} class present: collapse needs at least 2")
        return Collapse(C, n, ignored, None, None, None, None, None, None,
                        "; ".join(reasons), means, present)
    M = rel - rel.mean(dim=0)  # centred means μ_c − μ_G (μ_G = mean of the class means)
    _, sig, Vh = torch.linalg.svd(M, full_matrices=False)
    if float(sig[0]) == 0.0:
        reasons.append("between-class covariance is zero (all class means equal)")
    else:
        # M's rows sum to zero, so rank(Σ_B) ≤ C − 1 by construction: a C-th singular value
        # (C ≤ d) is round-off whatever its size, and is never inverted
        keep = sig > pinv_cutoff(C, d) * sig[0]
        keep[C - 1 :] = False
        V = Vh[keep].T  # d × k
        # n Σ_W = S − Σ_c s_c s_cᵀ/n_c (about the reference); NC1 = Σ_j vⱼᵀ Σ_W vⱼ / σ_j²
        SW = full_from_lower(sums._S) - (s / nk[:, None]).T @ s
        quad = ((SW @ V) * V).sum(dim=0) / n
        nc1 = _finite(float((quad / sig[keep] ** 2).sum()))
    norms = torch.linalg.vector_norm(M, dim=1)
    mean_norm = float(norms.mean())
    if mean_norm > 0:
        equinorm = _finite(float(norms.std(correction=0)) / mean_norm)
    if bool((norms > 0).all()):
        Mn = M / norms[:, None]
        cos = (Mn @ Mn.T)[~torch.eye(C, dtype=torch.bool, device=M.device)]
        equi = float((cos + 1.0 / (C - 1)).abs().mean())
        cos_mean = float(cos.mean())
        cos_std = float(cos.std(correction=0))
    elif mean_norm > 0:
        reasons.append("a class mean equals the global mean: cosines undefined")
    if classifier is not None:
        nc3, why = _nc3(classifier, present, M)
        if why is not None:
            reasons.append(why)
    return Collapse(C, n, ignored, nc1, equinorm, equi, cos_mean, cos_std, nc3,
                    "; ".join(reasons) or None, means, present)


def _nc3(classifier: Tensor, present: Tensor, M: Tensor) -> tuple[float | None, str | None]:
    """``‖W/‖W‖_F − M/‖M‖_F‖_F²`` over the present classes' rows, or why it is undefined."""
    W = classifier.detach().to(device=M.device, dtype=F64)
    if W.ndim != 2 or W.shape[1] != M.shape[1] or W.shape[0] <= int(present.max()):
        return None, (
            f"classifier of shape {tuple(W.shape)} does not fit {int(present.max()) + 1} "
            f"classes of width {M.shape[1]}"
        )
    W = W[present]
    if not all_finite(W):
        return None, "classifier has non-finite entries"
    nw, nm = float(torch.linalg.matrix_norm(W)), float(torch.linalg.matrix_norm(M))
    if nw == 0.0 or nm == 0.0:
        return None, "classifier rows or centred class means are zero: NC3 undefined"
    return float(torch.linalg.matrix_norm(W / nw - M / nm) ** 2), None


def nearest_class(h: Tensor, means: Tensor, present: Tensor) -> Tensor:
    """argmin_c ‖h − μ_c‖ per row (float64, via ‖μ_c‖² − 2 h·μ_c), as class ids."""
    mu = means.to(device=h.device, dtype=F64)
    centre = mu.mean(dim=0)  # the same argmin, without a large common offset's cancellation
    mu = mu - centre
    dist = (mu * mu).sum(dim=1) - 2.0 * ((h.detach().to(F64) - centre) @ mu.T)
    return present.to(h.device)[dist.argmin(dim=1)]
