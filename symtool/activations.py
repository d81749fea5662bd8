"""The one table of activations symtool knows, by name.

``align``'s auto-MLP applies them (:data:`FUNCTIONS`); ``symmetry`` reads which symmetry a
unit pair's activation has (:data:`HOMOGENEOUS`, :data:`ODD`, docs/theory.md §5); a model's
graph names them through :data:`MODULES`. A name valid in one command is valid in all.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


def _identity(x: Tensor) -> Tensor:
    """No nonlinearity (a deep linear network)."""
    return x


FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "leaky_relu": F.leaky_relu,
    "identity": _identity,
    "linear": _identity,
    "tanh": torch.tanh,
    "gelu": F.gelu,
    "silu": F.silu,
    "sigmoid": torch.sigmoid,
    "softplus": F.softplus,
    "elu": F.elu,
}
"""Every activation by name, with PyTorch's default options (``linear`` = ``identity``)."""

NAMES: tuple[str, ...] = (*FUNCTIONS, "unknown")
"""Names a unit pair accepts; ``unknown`` is a pair whose activation could not be read
(no symmetry beyond permutation is assumed)."""

HOMOGENEOUS = frozenset({"relu", "leaky_relu", "identity", "linear"})
"""Positively homogeneous activations: units have a rescaling symmetry and are balanced
before comparison; the imbalance law applies."""

ODD = frozenset({"tanh", "identity", "linear"})
"""Odd activations: a unit and a sign-flipped unit are the same unit."""

MODULES: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.LeakyReLU: "leaky_relu",
    nn.Tanh: "tanh",
    nn.GELU: "gelu",
    nn.SiLU: "silu",
    nn.Sigmoid: "sigmoid",
    nn.Softplus: "softplus",
    nn.ELU: "elu",
    nn.Identity: "identity",
}
"""Activation modules found in a model's graph, by name."""
