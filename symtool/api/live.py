"""Analysing a model that is being trained, without disturbing it.

:func:`preserved` saves everything an analysis could touch on a live model and puts it
back exactly: every module's train/eval mode, every parameter's ``requires_grad`` and
``.grad`` (the tensor object itself, so an optimizer's view of it is unchanged), the
parameters' device, and the random number generators (torch CPU and CUDA, numpy, Python).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from symtool import distributed


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside ``DistributedDataParallel``/``DataParallel``/``torch.compile``."""
    for _ in range(4):
        inner = getattr(model, "module", None)
        if isinstance(inner, nn.Module) and type(model).__name__ in (
            "DistributedDataParallel", "DataParallel", "FullyShardedDataParallel"
        ):
            model = inner
            continue
        orig = getattr(model, "_orig_mod", None)
        if isinstance(orig, nn.Module):
            model = orig
            continue
        break
    return model


def device_of(model: nn.Module) -> str:
    """Where the model's first parameter lives (``cpu`` for a model without any)."""
    p = next(model.parameters(), None)
    return "cpu" if p is None else str(p.device)


def world() -> distributed.World:
    """This process's place in a ``torch.distributed`` run (one process when none)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return distributed.World(dist.get_rank(), dist.get_world_size(), "data")
    return distributed.World()


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Run the body on ``model`` and restore its modes, gradients, flags, device and RNGs.

    Gradients are set aside (``.grad = None``) for the body, so nothing it does can add to
    them, and the same tensors are put back after it.
    """
    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    devices = [p.device for p in params]
    rng = _rng_state()
    for p in params:
        p.grad = None
    try:
        yield
    finally:
        for p, dev in zip(params, devices, strict=True):
            if p.device != dev:
                p.data = p.data.to(dev)
        for p, flag, g in zip(params, flags, grads, strict=True):
            p.requires_grad_(flag)
            p.grad = g
        for m, mode in modes:
            m.training = mode
        _set_rng_state(rng)
