"""Cells rebuilt from state dicts (:mod:`symtool.ode.cells`): discovery, exact steps, Jacobians.

References are PyTorch's own ``nn.RNN/GRU/LSTM`` modules and cells (autograd through the
module) and central finite differences, all in float64.
"""

from __future__ import annotations

import pytest
import torch

from symtool.ode.cells import (
    cell_jacobian,
    cell_step,
    discover_cells,
    load_cell,
    operational_order,
    run_stack,
    split_state,
    stacks,
    step_map,
    zero_state,
)
from tests.ode.factories import F64, MODULES, cells_of, h_n_row


def test_discovery_finds_layers_directions_cells_and_skips_the_rest() -> None:
    lstm = MODULES["lstm_2l_bi_proj"]()
    sd = {f"encoder.rnn.{k}": v for k, v in lstm.state_dict().items()}
    for name, cell in [
        ("dec.a", torch.nn.RNNCell(2, 3)),
        ("dec.b", torch.nn.GRUCell(2, 3)),
        ("dec.c", torch.nn.LSTMCell(2, 3)),
    ]:
        sd.update({f"{name}.{k}": v for k, v in cell.state_dict().items()})
    sd["fc.weight"] = torch.zeros(2, 2)
    sd["bad.weight_ih"] = torch.zeros(6, 2)
    sd["bad.weight_hh"] = torch.zeros(6, 3)  # 2 gates: no such cell
    found = discover_cells({k: tuple(v.shape) for k, v in sd.items()})  # shapes suffice
    got = {c.name: (c.kind, c.hidden_size, c.proj_size, c.input_size) for c in found.cells}
    assert got == {
        "encoder.rnn.l0": ("lstm", 5, 2, 3),
        "encoder.rnn.l0_reverse": ("lstm", 5, 2, 3),
        "encoder.rnn.l1": ("lstm", 5, 2, 4),
        "encoder.rnn.l1_reverse": ("lstm", 5, 2, 4),
        "dec.a": ("rnn", 3, 0, 2),
        "dec.b": ("gru", 3, 0, 2),
        "dec.c": ("lstm", 3, 0, 2),
    }
    state = {c.name: c.state_size for c in found.cells}
    assert state["encoder.rnn.l0"] == 2 + 5 and state["dec.b"] == 3
    reasons = {s.name: s.reason for s in found.skipped}
    assert reasons["fc.weight"] == "not a recurrent-cell parameter"
    assert "gate count 2" in reasons["bad.weight_hh"] and "bad.weight_ih" in reasons
    groups = stacks(found.cells)
    assert sorted(len(g) for g in groups) == [1, 1, 1, 4]
    assert operational_order("lstm", 2) == (4, 2) and operational_order("gru") == (2, 1)


def test_bare_module_names_and_nonlinearity_validation() -> None:
    found = discover_cells(MODULES["rnn_relu"]().state_dict(), "relu")
    assert [c.name for c in found.cells] == ["l0"] and found.cells[0].nonlinearity == "relu"
    with pytest.raises(Exception, match="nonlinearity"):
        discover_cells({}, "sigmoid")


@pytest.mark.parametrize("case", sorted(MODULES))
def test_rebuilt_stack_reproduces_module_outputs(case: str) -> None:
    mod = MODULES[case]()
    _, cells = cells_of(mod)
    x = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    out = mod(x)
    h_n, c_n = out[1] if isinstance(out[1], tuple) else (out[1], None)
    seen = run_stack(cells, x)
    for cell in cells:
        s = zero_state(cell.spec, 2)
        for xt in seen[cell.spec]:
            s = cell_step(cell, s, xt)
        h, c = split_state(cell.spec, s)
        torch.testing.assert_close(h, h_n[h_n_row(mod, cell.spec)], atol=1e-13, rtol=0)
        if c is not None:
            torch.testing.assert_close(c, c_n[h_n_row(mod, cell.spec)], atol=1e-13, rtol=0)


@pytest.mark.parametrize("case", sorted(MODULES))
def test_jacobian_matches_module_autograd_and_finite_differences(case: str) -> None:
    mod = MODULES[case]()
    _, cells = cells_of(mod)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 1, 3, generator=gen, dtype=F64)
    seen = run_stack(cells, x)  # layer inputs when every other state is zero
    n_rows = mod.num_layers * (2 if mod.bidirectional else 1)
    for cell in cells:
        spec, idx = cell.spec, h_n_row(mod, cell.spec)
        s = 0.5 * torch.randn(spec.state_size, generator=gen, dtype=F64)
        h_dim = spec.out_size

        def module_step(
            state: torch.Tensor, idx: int = idx, h_dim: int = h_dim, hidden: int = spec.hidden_size
        ) -> torch.Tensor:
            h0 = torch.zeros(n_rows, 1, h_dim, dtype=F64).index_copy(
                0, torch.tensor([idx]), state[:h_dim].reshape(1, 1, h_dim)
            )
            if not isinstance(mod, torch.nn.LSTM):
                return mod(x, h0)[1][idx, 0]
            hc = state[h_dim:].reshape(1, 1, -1)
            c0 = torch.zeros(n_rows, 1, hidden, dtype=F64).index_copy(0, torch.tensor([idx]), hc)
            h_n, c_n = mod(x, (h0, c0))[1]
            return torch.cat([h_n[idx, 0], c_n[idx, 0]])

        x_in = seen[spec][0, 0]
        ours = cell_jacobian(cell, s, x_in)
        torch.testing.assert_close(cell_step(cell, s, x_in), module_step(s), atol=1e-13, rtol=0)
        ref = torch.autograd.functional.jacobian(module_step, s)
        torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)
        eps = 1e-6
        fd = torch.stack(
            [
                (cell_step(cell, s + eps * e, x_in) - cell_step(cell, s - eps * e, x_in))
                / (2 * eps)
                for e in torch.eye(spec.state_size, dtype=F64)
            ],
            dim=1,
        )
        torch.testing.assert_close(ours, fd, atol=1e-8, rtol=0)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_cell_variants_and_batched_tangents(kind: str) -> None:
    torch.manual_seed(4)
    mod = {"rnn": torch.nn.RNNCell, "gru": torch.nn.GRUCell, "lstm": torch.nn.LSTMCell}[kind](
        3, 4
    ).to(F64)
    (spec,) = discover_cells({f"cell.{k}": v for k, v in mod.state_dict().items()}).cells
    cell = load_cell(spec, {f"cell.{k}": v for k, v in mod.state_dict().items()})
    s = torch.randn(2, spec.state_size, dtype=F64)
    x = torch.randn(2, 3, dtype=F64)
    ref = mod(x, (s[:, :4], s[:, 4:])) if kind == "lstm" else mod(x, s)
    ref = torch.cat(ref, dim=-1) if kind == "lstm" else ref
    torch.testing.assert_close(cell_step(cell, s, x), ref, atol=1e-14, rtol=0)
    fmap = step_map(cell)
    jac = fmap.jacobian(s, x)
    for b in range(2):
        torch.testing.assert_close(jac[b], cell_jacobian(cell, s[b], x[b]), atol=1e-14, rtol=0)
    v = torch.randn(2, spec.state_size, 3, dtype=F64)
    torch.testing.assert_close(fmap.tangent(s, x, v), jac @ v, atol=1e-12, rtol=0)

