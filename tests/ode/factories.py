"""Recurrent modules and state dicts the ODE tests rebuild and analyse (float64)."""

from __future__ import annotations

import torch

from symtool.ode.cells import CellSpec, CellWeights, discover_cells, load_cell, stacks

F64 = torch.float64


def make_module(kind: str, **kw: object) -> torch.nn.Module:
    """A seeded float64 ``nn.RNN``/``GRU``/``LSTM`` (``kind``: rnn, gru, lstm)."""
    torch.manual_seed(0)
    cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[kind]
    return cls(**kw).to(F64)


MODULES = {
    "rnn_tanh_2l_bi": lambda: make_module(
        "rnn", input_size=3, hidden_size=5, num_layers=2, bidirectional=True
    ),
    "rnn_relu": lambda: make_module("rnn", input_size=3, hidden_size=4, nonlinearity="relu"),
    "gru_2l_bi": lambda: make_module(
        "gru", input_size=3, hidden_size=4, num_layers=2, bidirectional=True
    ),
    "lstm_2l_bi_proj": lambda: make_module(
        "lstm", input_size=3, hidden_size=5, num_layers=2, bidirectional=True, proj_size=2
    ),
    "lstm_nobias": lambda: make_module("lstm", input_size=3, hidden_size=4, bias=False),
}
"""Every cell kind and layout the analysis handles: stacked, bidirectional, projected."""


def nonlinearity(mod: torch.nn.Module) -> str:
    return getattr(mod, "nonlinearity", "tanh")


def cells_of(
    mod: torch.nn.Module, prefix: str = "enc.rnn"
) -> tuple[dict[str, torch.Tensor], list[CellWeights]]:
    """The module's state dict under ``prefix`` and its one stack of rebuilt cells."""
    sd = {f"{prefix}.{k}": v for k, v in mod.state_dict().items()}
    found = discover_cells(sd, nonlinearity(mod))
    (group,) = stacks(found.cells)
    return sd, [load_cell(c, sd) for c in group]


def h_n_row(mod: torch.nn.Module, spec: CellSpec) -> int:
    """Row of a cell in PyTorch's ``h_n`` (layer-major, then direction)."""
    dirs = 2 if mod.bidirectional else 1
    return spec.layer * dirs + int(spec.reverse)


def linear_sd(w: torch.Tensor, d_in: int = 2) -> dict[str, torch.Tensor]:
    """A one-layer RNN state dict with recurrent weight ``w``, random input weights, no bias."""
    gen = torch.Generator().manual_seed(3)
    h = w.shape[0]
    return {
        "weight_ih_l0": torch.randn(h, d_in, generator=gen, dtype=F64),
        "weight_hh_l0": w,
        "bias_ih_l0": torch.zeros(h, dtype=F64),
        "bias_hh_l0": torch.zeros(h, dtype=F64),
    }


def assert_interval_verdict(layer) -> None:
    """A verdict read from λ_1's interval: the label is the interval's place relative to 0,
    the band its half-width (docs/ode.md "Verdict")."""
    ly, v = layer.lyapunov, layer.verdict
    assert v.basis == "lambda_1" and v.value == ly.lambda_1
    low, high = ly.lambda_1_low, ly.lambda_1_high
    assert low <= ly.lambda_1 <= high
    assert abs(v.band - (high - low) / 2) <= 1e-12 * max(v.band, 1e-300)
    assert v.label == ("contracting" if high < 0 else "expanding" if low > 0 else "marginal")


def sequences(steps: int, batch: int, d_in: int = 2, seed: int = 1) -> torch.Tensor:
    """Seeded float64 probe sequences ``(T, B, d_in)``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(steps, batch, d_in, generator=gen, dtype=F64)
