"""Running a model on a probe batch: inputs to the device, the output, the summed loss.

Shared by :mod:`symtool.align.capture` (one forward and backward per batch) and the
forward-only second pass of :mod:`symtool.align.nearest` (docs/theory.md §1, §3).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from symtool.errors import ProbeError
from symtool.inputs.probes import Inputs

Tensor = torch.Tensor


def logits(output: Any) -> Any:
    """A model's output as the loss reads it: a tensor as it is; ``.logits`` of a Hugging
    Face ``ModelOutput`` (or a dict holding ``logits``); else the first item of a tuple."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping) and "logits" in output:
        return output["logits"]
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, tuple | list) and output:
        return output[0]
    return output


def model_output(model: nn.Module, x: Inputs) -> Tensor:
    """Forward one batch; the output tensor (a Hugging Face output's ``logits``, a tuple's
    first element).

    Raises:
        ProbeError: the model cannot run on the batch or returns no tensor.
    """
    try:
        if isinstance(x, Tensor):
            out = model(x)
        elif isinstance(x, dict):
            out = model(**x)
        else:
            out = model(*x)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ProbeError(
            f"model forward failed on a probe batch: {type(exc).__name__}: {first}"
        ) from exc
    out = logits(out)
    if not isinstance(out, Tensor):
        raise ProbeError(f"model returned {type(out).__name__}; expected a tensor of outputs")
    return out


def forward_loss(
    model: nn.Module, x: Inputs, y: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor]
) -> tuple[Tensor, Tensor]:
    """Forward one batch and return its scalar loss and the output it scored."""
    out = model_output(model, x)
    try:
        loss = loss_fn(out, y)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ProbeError(
            f"loss failed on output {tuple(out.shape)} and target {tuple(y.shape)}: {first}"
        ) from exc
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ProbeError("the loss must return one number: the sum over its loss terms")
    return loss.reshape(()), out


def to_device(x: Inputs, device: torch.device, fdtype: torch.dtype | None) -> Inputs:
    """Move inputs to the device, casting floating tensors to the model's dtype."""
    if isinstance(x, Tensor):
        dtype = fdtype if fdtype is not None and x.is_floating_point() else None
        return x.detach().to(device=device, dtype=dtype)
    if isinstance(x, dict):
        return {k: to_device(v, device, fdtype) for k, v in x.items()}
    return tuple(to_device(v, device, fdtype) for v in x)


def batch_size(x: Inputs) -> int:
    """Samples in a batch: the first axis of the first input tensor."""
    if isinstance(x, Tensor):
        return x.shape[0] if x.ndim else 1
    first = next(iter(x.values())) if isinstance(x, dict) else x[0]
    return batch_size(first)
