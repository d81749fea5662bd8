"""Tiny models the training tests build (importable as ``tests.api.nets:mlp`` by the CLI)."""

from __future__ import annotations

import torch
from torch import nn


def mlp() -> nn.Sequential:
    """16 → 24 → 24 → 4 with ReLU and dropout (training draws random numbers)."""
    return nn.Sequential(
        nn.Linear(16, 24), nn.ReLU(), nn.Dropout(0.1), nn.Linear(24, 24), nn.Tanh(),
        nn.Linear(24, 4),
    )


def probe(n: int = 256, seed: int = 0) -> dict[str, torch.Tensor]:
    """A probe of a random linear teacher: ``x`` (n, 16) and class labels ``y``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    y = (x @ torch.randn(16, 4, generator=g)).argmax(1)
    return {"x": x, "y": y}
