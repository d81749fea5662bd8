"""NC4: how often the network's prediction differs from the nearest-class-mean rule.

docs/theory.md §3 ("Neural collapse", NC4; Papyan, Han, Donoho 2020). The rule needs the
class means of a layer's input rows, which exist only once the whole probe has been
streamed, so NC4 takes a second, forward-only pass over the probe data: per labelled row,
``argmin_c ‖h − μ_c‖`` against ``argmax`` of the network output at the same row. Nothing per
sample outlives its batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from symtool.align.collapse import nearest_class
from symtool.align.extras import row_labels
from symtool.align.forward import model_output, to_device
from symtool.align.rows import as_rows, row_keep
from symtool.inputs.models import LayerRef
from symtool.inputs.probes import Batch

Tensor = torch.Tensor


@dataclass(frozen=True)
class Disagreement:
    """NC4 of one layer: ``rate = disagree / rows`` over the labelled rows (``None`` and a
    reason when the output gives no prediction per row)."""

    rate: float | None
    rows: int
    reason: str | None = None


@dataclass(eq=False)
class _Counts:
    means: Tensor
    present: Tensor
    nearest: list[Tensor] = field(default_factory=list)
    keep: list[Tensor] = field(default_factory=list)
    disagree: int = 0
    rows: int = 0


def disagreements(
    model: nn.Module,
    layers: list[LayerRef],
    batches: Iterable[Batch],
    means: Mapping[str, tuple[Tensor, Tensor]],
    *,
    shift_labels: bool = False,
    device: str | torch.device = "cpu",
) -> dict[str, Disagreement]:
    """NC4 for every layer named in ``means`` (``name → (class means, class ids)``).

    One forward pass per batch without gradients, in eval mode (restored afterwards).
    """
    device = torch.device(device)
    fdtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    counts = {name: _Counts(*m) for name, m in means.items()}
    refs = [ref for ref in layers if ref.name in counts]
    box: list[Tensor | None] = [None, None]  # the batch's labels and mask
    handles = [
        ref.module.register_forward_hook(partial(_hook, ref, counts[ref.name], box))
        for ref in refs
    ]
    was_training = model.training
    why: str | None = None
    try:
        model.eval()
        with torch.no_grad():
            for batch in batches:
                x = to_device(batch.x, device, fdtype)
                labels, why = row_labels(batch.y.to(device), shift=shift_labels)
                box[0] = labels
                box[1] = None if batch.mask is None else batch.mask.to(device)
                out = model_output(model, x)
                if labels is None or out.ndim < 2 or out.shape[:-1] != labels.shape:
                    if labels is not None:
                        why = (f"the model output {tuple(out.shape)} gives no prediction per "
                               f"labelled row {tuple(labels.shape)}")
                    break
                pred = out.argmax(dim=-1).reshape(-1)
                for c in counts.values():
                    for nearest, keep in zip(c.nearest, c.keep, strict=True):
                        agree = nearest == pred[keep]
                        c.disagree += int((~agree).sum())
                        c.rows += int(agree.numel())
                    c.nearest.clear()
                    c.keep.clear()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if why is not None:
        return {name: Disagreement(None, 0, why) for name in counts}
    return {
        name: Disagreement(c.disagree / c.rows if c.rows else None, c.rows,
                           None if c.rows else "no labelled rows")
        for name, c in counts.items()
    }


def _hook(
    ref: LayerRef, c: _Counts, box: list[Tensor | None], module: nn.Module, args: tuple, out: object
) -> None:
    """Nearest class mean of each labelled row of a call (linear layers: rows = leading axes)."""
    labels, mask = box
    if labels is None or not args or not isinstance(args[0], Tensor):
        return
    inp = args[0]
    lead = tuple(inp.shape[:-1])
    if lead != tuple(labels.shape):
        return
    rows, _ = as_rows(inp, ref.d_in, torch.float64)
    keep = labels.reshape(-1) >= 0
    masked = row_keep(mask, lead)
    if masked is not None:
        keep &= masked
    c.nearest.append(nearest_class(rows[keep], c.means, c.present))
    c.keep.append(keep)
