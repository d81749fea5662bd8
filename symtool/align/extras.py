"""What the capture needs for neural collapse and the neural feature ansatz.

docs/theory.md §3 ("Neural collapse", "Neural feature ansatz"). Neural collapse streams
class-wise sums of a layer's input rows (:class:`symtool.align.collapse.ClassSums`), so each
row needs its class label: :func:`row_labels` turns a batch's targets into per-row labels
(shifted for a causal LM, whose logits at position t predict the label at t+1). The NFA
needs the average gradient outer product of the network *output*: :func:`directions` gives
the output cotangents of the extra backward passes — one unit vector per output coordinate
of a sample (exact), or Gaussian vectors (an unbiased estimate) when a sample has more
output coordinates than :attr:`Extras.nfa_exact_max`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class Extras:
    """Optional sums captured beside the moments (``align --collapse``, ``--nfa``).

    Attributes:
        collapse: stream class-wise sums for NC1–NC4 on layers whose rows carry labels.
        nfa: run the extra backward passes that accumulate each layer's AGOP.
        nfa_exact_max: a sample with at most this many output coordinates gets the exact
            AGOP (one backward pass per coordinate); more get random projections.
        nfa_projections: Gaussian projections per batch when not exact.
        seed: seed of the projections (the same vectors for every checkpoint).
        shift_labels: labels are next-token labels of a causal LM (``causal_lm`` loss).
    """

    collapse: bool = False
    nfa: bool = False
    nfa_exact_max: int = 64
    nfa_projections: int = 8
    seed: int = 0
    shift_labels: bool = False

    @property
    def active(self) -> bool:
        """Whether anything beyond the moments is captured."""
        return self.collapse or self.nfa


def row_labels(y: Tensor, *, shift: bool = False) -> tuple[Tensor | None, str | None]:
    """Per-row class labels from a batch's targets, or ``None`` with the reason.

    Integer targets (or floats holding whole numbers) are class labels; a row whose label
    is negative (``-100``) is ignored. With ``shift`` (causal LM, ``(B, T)`` labels) the row
    at position t gets the label at t+1 and the last position none. Soft or real-valued
    targets are not class labels.
    """
    if y.is_floating_point():
        if not bool(torch.isfinite(y).all()) or not bool((y == y.round()).all()):
            return None, "the targets are not class labels (real-valued)"
        y = y.long()
    elif y.dtype == torch.bool or y.is_complex():
        return None, f"the targets are not class labels ({y.dtype})"
    y = y.long()
    if y.ndim == 0:
        y = y.reshape(1)
    if shift:
        if y.ndim != 2:
            return None, f"causal LM labels must be (batch, positions), got {tuple(y.shape)}"
        shifted = torch.full_like(y, -100)
        shifted[:, :-1] = y[:, 1:]
        y = shifted
    return y, None


@dataclass(frozen=True)
class Plan:
    """The extra backward passes of one batch: ``method`` (``exact``/``projection``),
    ``outputs`` (coordinates per sample) and ``passes`` (backward passes)."""

    method: str
    outputs: int
    passes: int


def plan(out: Tensor, extras: Extras) -> Plan:
    """Exact AGOP when a sample's output has at most ``nfa_exact_max`` coordinates."""
    outputs = math.prod(out.shape[1:]) if out.ndim >= 2 else 1
    if outputs <= extras.nfa_exact_max:
        return Plan("exact", outputs, outputs)
    return Plan("projection", outputs, extras.nfa_projections)


def directions(out: Tensor, p: Plan, generator: torch.Generator) -> Iterator[Tensor]:
    """Output cotangents of the extra backward passes, one tensor shaped like ``out`` each.

    Exact: pass k puts 1 at output coordinate k of every sample, so a row's gradient is
    ``∇ f_k`` of its own sample (samples are independent in eval mode); summing ``g gᵀ``
    over k gives ``Σ_k ∇f_k ∇f_kᵀ``. Projection: independent standard Gaussian entries
    (every row its own vector), ``E[(Jᵀv)(Jᵀv)ᵀ] = JᵀJ``.
    """
    if p.method == "exact":
        n = out.shape[0] if out.ndim >= 2 else out.numel()
        for k in range(p.passes):
            v = torch.zeros((n, p.outputs), dtype=out.dtype, device=out.device)
            v[:, k] = 1
            yield v.reshape(out.shape)
        return
    for _ in range(p.passes):
        v = torch.randn(out.shape, generator=generator, dtype=torch.float64)
        yield v.to(device=out.device, dtype=out.dtype)


def extra_bytes(d_in: int, d_out: int, extras: Extras) -> int:
    """Bytes a layer's extra sums hold through a pass: ``Σhhᵀ`` and the class sums of
    ``--collapse`` (``d_in² + 16·d_in``; more classes add ``8·d_in`` bytes each) and the
    ``d_out²`` AGOP sum of ``--nfa``."""
    n = (d_in * d_in + 16 * d_in) if extras.collapse else 0
    return 8 * (n + (d_out * d_out if extras.nfa else 0))
