"""Sample rows of a captured layer call: im2col patches, masks, bias, chunking.

docs/theory.md §1: a linear layer's rows are its leading indices (tokens, time), a conv's
rows are its output positions, each with the im2col patch it read; an optional mask drops
rows (padding). Used by :mod:`symtool.align.capture` and the forward-only second pass of
:mod:`symtool.align.nearest`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor

CHUNK_ELEMENTS = 1 << 25
"""Upper bound on one row matrix (rows × width) built at once; larger calls are chunked."""


def row_keep(mask: Tensor | None, lead: tuple[int, ...]) -> Tensor | None:
    """Boolean keep-vector over a layer's rows (``prod(lead)``), or ``None`` for all rows.

    A mask whose shape is a prefix of the rows' leading shape is broadcast over the extra
    axes (a ``(B,)`` mask drops whole samples everywhere); a mask with more axes than the
    rows keeps a row when any mask entry it covers is ``True`` (a ``(B, T)`` mask on a
    pooled ``(B,)`` layer); anything else is a mismatch.
    """
    if mask is None:
        return None
    ms = tuple(mask.shape)
    if lead[: len(ms)] == ms:
        keep = mask.reshape(ms + (1,) * (len(lead) - len(ms))).expand(lead).reshape(-1)
    elif ms[: len(lead)] == lead:
        keep = mask.reshape((*lead, -1)).any(dim=-1).reshape(-1)
    else:
        raise ValueError(f"mask of shape {ms} does not fit this layer's rows {lead}")
    return None if bool(keep.all()) else keep


def chunk(n: int, per_sample: int) -> int:
    """Samples per chunk so one row matrix stays under :data:`CHUNK_ELEMENTS`."""
    return max(1, min(n, CHUNK_ELEMENTS // max(per_sample, 1)))


def as_rows(
    src: Tensor, width: int, dtype: torch.dtype, bias: Tensor | None = None
) -> tuple[Tensor, bool]:
    """``src`` (features last) as ``rows × width`` in ``dtype``, minus ``bias``, in one pass.

    Returns:
        The rows and whether they are a fresh tensor (free to overwrite).
    """
    if bias is None and src.dtype == dtype:
        rows = src.reshape(-1, width)
        return rows, rows.untyped_storage().data_ptr() != src.untyped_storage().data_ptr()
    buf = torch.empty(src.shape, dtype=dtype, device=src.device)
    if bias is None:
        buf.copy_(src)
    elif torch.can_cast(torch.promote_types(src.dtype, bias.dtype), dtype):
        torch.sub(src, bias, out=buf)
    else:
        buf.copy_(src)
        buf.sub_(bias)
    return buf.view(-1, width), True


def im2col(module: nn.Module, x: Tensor) -> Tensor:
    """Patches of a conv input as a strided view ``(B, *out_positions, C_in, *kernel)``.

    Honours stride, dilation, numeric and string padding and every ``padding_mode``; rows
    flatten in the order of ``weight.reshape(C_out, -1)``.
    """
    nd = len(module.kernel_size)
    pad = list(module._reversed_padding_repeated_twice)
    if any(pad):
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = F.pad(x, pad, mode=mode)
    for i, (k, s, d) in enumerate(
        zip(module.kernel_size, module.stride, module.dilation, strict=True)
    ):
        x = x.unfold(2 + i, (k - 1) * d + 1, s)
        if d > 1:
            x = x[..., ::d]
    perm = [0, *range(2, 2 + nd), 1, *range(2 + nd, 2 + 2 * nd)]
    return x.permute(perm)
