"""Find recurrent cells in a state dict by parameter name and rebuild their one-step maps.

docs/theory.md §6. PyTorch layouts: ``nn.RNN``/``nn.GRU``/``nn.LSTM`` keep
``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` (and LSTM
``weight_hr_l{k}`` with ``proj_size``), with ``_reverse`` for the backward direction; the
``*Cell`` variants keep the same names without ``_l{k}``. ``weight_hh`` stacks gates
(GRU ``r|z|n``, LSTM ``i|f|g|o``). The cell kind follows from the gate count
``weight_hh.shape[0] / hidden``: 1 RNN, 3 GRU, 4 LSTM.

The rebuilt step works on the full state ``s`` (RNN/GRU: ``h``; LSTM: ``[h, c]`` with ``h``
of the projection size when ``proj_size > 0``), along the last dimension, so one code path
serves batched and unbatched calls, ``torch.func`` transforms included. All tensors are
float64 (docs/theory.md §7).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from symtool.errors import ModelError
from symtool.inputs.models import Skipped

Tensor = torch.Tensor

NONLINEARITIES = ("tanh", "relu", "linear")
"""``nn.RNN`` nonlinearities understood; ``linear`` (identity) is for linear-RNN analysis."""

KINDS = {1: "rnn", 3: "gru", 4: "lstm"}
GATES = {"rnn": ("hh",), "gru": ("r", "z", "n"), "lstm": ("i", "f", "g", "o")}
"""Gate block names of ``weight_hh`` in PyTorch's stacking order."""

_ORDER = {"rnn": (1, 1), "gru": (2, 1), "lstm": (2, 2)}
_PARAM = re.compile(
    r"^(?P<prefix>(?:.*\.)?)(?P<param>weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)"
    r"(?:_l(?P<layer>\d+))?(?P<reverse>_reverse)?$"
)


@dataclass(frozen=True)
class CellSpec:
    """One recurrent cell (one layer, one direction) found by parameter names.

    Attributes:
        prefix: module path before the parameter names, without the trailing dot
            (``""`` for a bare module's state dict).
        kind: ``"rnn"``, ``"gru"`` or ``"lstm"``.
        layer: the ``_l{k}`` index, or ``None`` for ``*Cell`` modules.
        reverse: the ``_reverse`` (backward) direction of a bidirectional module.
        hidden_size: ``H``.
        input_size: width of the cell's input.
        proj_size: LSTM projection size ``P`` (0 without projection).
        bias: whether the cell has ``bias_ih``/``bias_hh``.
        nonlinearity: ``tanh``/``relu``/``linear`` for RNN cells, ``None`` otherwise.
        parameters: the state-dict keys the cell uses.
    """

    prefix: str
    kind: str
    layer: int | None
    reverse: bool
    hidden_size: int
    input_size: int
    proj_size: int
    bias: bool
    nonlinearity: str | None
    parameters: tuple[str, ...]

    @property
    def name(self) -> str:
        """Display name: prefix plus ``l{k}``/``l{k}_reverse`` (``cell`` for ``*Cell``)."""
        rev = "_reverse" if self.reverse else ""
        if self.layer is None:
            return (self.prefix or "cell") + rev
        suffix = f"l{self.layer}{rev}"
        return f"{self.prefix}.{suffix}" if self.prefix else suffix

    @property
    def out_size(self) -> int:
        """Width of ``h`` (the cell's output): ``P`` with projection, else ``H``."""
        return self.proj_size or self.hidden_size

    @property
    def state_size(self) -> int:
        """Width of the full state ``s``: ``h`` (+ ``c`` for LSTM)."""
        return self.out_size + (self.hidden_size if self.kind == "lstm" else 0)

    @property
    def order(self) -> tuple[int, int]:
        """Operational ``(n, t)`` of one step (docs/theory.md §6 table)."""
        return _ORDER[self.kind]


@dataclass(frozen=True)
class Discovery:
    """Cells found in a state dict, sorted by prefix, layer, direction; the rest skipped."""

    cells: tuple[CellSpec, ...]
    skipped: tuple[Skipped, ...]


@dataclass(frozen=True)
class CellWeights:
    """A cell's float64 tensors (``w_hr`` only for projected LSTMs; zero biases if absent)."""

    spec: CellSpec
    w_ih: Tensor
    w_hh: Tensor
    b_ih: Tensor
    b_hh: Tensor
    w_hr: Tensor | None


def operational_order(kind: str, num_layers: int = 1) -> tuple[int, int]:
    """Operational ``(n, t)`` of a stack of ``num_layers`` cells of one kind: ``(L·n, t)``."""
    n, t = _ORDER[kind]
    return n * num_layers, t


def discover_cells(
    shapes: Mapping[str, Tensor | Sequence[int]], nonlinearity: str = "tanh"
) -> Discovery:
    """Find recurrent cells by parameter names, under any prefix.

    Only names and shapes are read, so a mapping of names to shapes (from checkpoint
    metadata) works as well as a state dict.

    Args:
        shapes: state dict, or names mapped to shapes.
        nonlinearity: of ``nn.RNN``/``nn.RNNCell`` cells (not stored in state dicts).

    Returns:
        The cells, and every other entry with the reason it was skipped.
    """
    if nonlinearity not in NONLINEARITIES:
        raise ModelError(f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
    groups: dict[tuple[str, int | None, bool], dict[str, tuple[str, tuple[int, ...]]]] = {}
    skipped: list[Skipped] = []
    for name, value in shapes.items():
        m = _PARAM.match(name)
        if m is None:
            skipped.append(Skipped(name, "not a recurrent-cell parameter"))
            continue
        layer = None if m["layer"] is None else int(m["layer"])
        key = (m["prefix"].rstrip("."), layer, m["reverse"] is not None)
        shape = tuple(int(d) for d in (value.shape if isinstance(value, Tensor) else value))
        groups.setdefault(key, {})[m["param"]] = (name, shape)
    cells = []
    for (prefix, layer, reverse), params in sorted(
        groups.items(), key=lambda kv: (kv[0][0], -1 if kv[0][1] is None else kv[0][1], kv[0][2])
    ):
        spec = _spec(prefix, layer, reverse, params, nonlinearity)
        if isinstance(spec, str):
            skipped.extend(Skipped(n, spec) for n, _ in params.values())
        else:
            cells.append(spec)
    return Discovery(tuple(cells), tuple(sorted(skipped, key=lambda s: s.name)))


def _spec(
    prefix: str,
    layer: int | None,
    reverse: bool,
    params: dict[str, tuple[str, tuple[int, ...]]],
    nonlinearity: str,
) -> CellSpec | str:
    """Build a cell spec from one name group, or return why the group is unusable."""
    missing = [p for p in ("weight_ih", "weight_hh") if p not in params]
    if missing:
        return f"recurrent-looking group without {' and '.join(missing)}"
    (_, ih), (_, hh) = params["weight_ih"], params["weight_hh"]
    if len(ih) != 2 or len(hh) != 2:
        return "weight_ih/weight_hh are not matrices"
    proj = 0
    hidden = hh[1]
    if "weight_hr" in params:
        hr = params["weight_hr"][1]
        if len(hr) != 2 or hr[0] != hh[1]:
            return f"weight_hr shape {hr} does not fit weight_hh {hh}"
        proj, hidden = hr
    if hidden == 0 or hh[0] % hidden:
        return f"weight_hh rows {hh[0]} are not a multiple of the hidden size {hidden}"
    kind = KINDS.get(hh[0] // hidden)
    if kind is None:
        return f"gate count {hh[0] // hidden} is not 1 (RNN), 3 (GRU) or 4 (LSTM)"
    if proj and kind != "lstm":
        return "weight_hr (proj_size) outside an LSTM"
    if ih[0] != hh[0]:
        return f"weight_ih rows {ih[0]} differ from weight_hh rows {hh[0]}"
    has_bias = [p in params for p in ("bias_ih", "bias_hh")]
    if any(has_bias) and not all(has_bias):
        return "only one of bias_ih/bias_hh present"
    for p in ("bias_ih", "bias_hh"):
        if p in params and params[p][1] != (hh[0],):
            return f"{p} shape {params[p][1]} does not fit weight_hh rows {hh[0]}"
    return CellSpec(
        prefix=prefix,
        kind=kind,
        layer=layer,
        reverse=reverse,
        hidden_size=hidden,
        input_size=ih[1],
        proj_size=proj,
        bias=all(has_bias),
        nonlinearity=nonlinearity if kind == "rnn" else None,
        parameters=tuple(sorted(n for n, _ in params.values())),
    )


def load_cell(spec: CellSpec, state_dict: Mapping[str, Tensor]) -> CellWeights:
    """Take a cell's tensors from the state dict as float64 (biases summed where additive)."""
    by_param = {_PARAM.match(n)["param"]: n for n in spec.parameters}  # type: ignore[index]

    def get(param: str) -> Tensor:
        return state_dict[by_param[param]].detach().to("cpu", torch.float64)

    rows = spec.hidden_size * len(GATES[spec.kind])
    b_ih = get("bias_ih") if spec.bias else torch.zeros(rows, dtype=torch.float64)
    b_hh = get("bias_hh") if spec.bias else torch.zeros(rows, dtype=torch.float64)
    return CellWeights(
        spec=spec,
        w_ih=get("weight_ih"),
        w_hh=get("weight_hh"),
        b_ih=b_ih,
        b_hh=b_hh,
        w_hr=get("weight_hr") if spec.proj_size else None,
    )


def zero_state(spec: CellSpec, batch: int | None = None) -> Tensor:
    """The zero state (PyTorch's default ``h0``/``c0``), shape ``(D,)`` or ``(batch, D)``."""
    shape = (spec.state_size,) if batch is None else (batch, spec.state_size)
    return torch.zeros(shape, dtype=torch.float64)


def split_state(spec: CellSpec, s: Tensor) -> tuple[Tensor, Tensor | None]:
    """``(h, c)`` views of a state (``c`` is ``None`` outside LSTM)."""
    if spec.kind != "lstm":
        return s, None
    return s[..., : spec.out_size], s[..., spec.out_size :]


def _phi(name: str | None, a: Tensor) -> Tensor:
    """The RNN nonlinearity."""
    if name == "relu":
        return torch.relu(a)
    if name == "linear":
        return a
    return torch.tanh(a)


def rnn_preactivation(cell: CellWeights, s: Tensor, x: Tensor) -> Tensor:
    """``a = W_ih x + b_ih + W_hh h + b_hh`` of a vanilla RNN cell."""
    return x @ cell.w_ih.T + cell.b_ih + s @ cell.w_hh.T + cell.b_hh


def rnn_derivative(name: str | None, a: Tensor) -> Tensor:
    """``φ'(a)``; ReLU'(0) = 0, as in PyTorch autograd."""
    if name == "relu":
        return (a > 0).to(a.dtype)
    if name == "linear":
        return torch.ones_like(a)
    return 1.0 - torch.tanh(a) ** 2


def cell_step(cell: CellWeights, s: Tensor, x: Tensor) -> Tensor:
    """One step ``s_{k+1} = F(s_k, x_k)``, exactly PyTorch's cell arithmetic.

    Args:
        cell: the cell's tensors.
        s: state ``(..., D)``.
        x: input ``(..., d_in)``.
    """
    spec = cell.spec
    if spec.kind == "rnn":
        return _phi(spec.nonlinearity, rnn_preactivation(cell, s, x))
    h, c = split_state(spec, s)
    gi = x @ cell.w_ih.T + cell.b_ih
    gh = h @ cell.w_hh.T + cell.b_hh
    if spec.kind == "gru":
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1.0 - z) * n + z * h
    i, f, g, o = (gi + gh).chunk(4, dim=-1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new = torch.sigmoid(o) * torch.tanh(c_new)
    if cell.w_hr is not None:
        h_new = h_new @ cell.w_hr.T
    return torch.cat([h_new, c_new], dim=-1)


def cell_gate(cell: CellWeights, s: Tensor, x: Tensor) -> Tensor | None:
    """The gate that sets the step size: GRU update gate ``z``, LSTM forget gate ``f``."""
    spec = cell.spec
    if spec.kind == "rnn":
        return None
    h, _ = split_state(spec, s)
    pre = x @ cell.w_ih.T + cell.b_ih + h @ cell.w_hh.T + cell.b_hh
    k = spec.hidden_size
    return torch.sigmoid(pre[..., k : 2 * k])


def effective_recurrent(cell: CellWeights) -> list[tuple[str, Tensor]]:
    """Square ``H×H`` recurrent block per gate (``W_g @ W_hr`` with LSTM projection)."""
    k = cell.spec.hidden_size
    blocks = []
    for j, gate in enumerate(GATES[cell.spec.kind]):
        w = cell.w_hh[j * k : (j + 1) * k]
        blocks.append((gate, w @ cell.w_hr if cell.w_hr is not None else w))
    return blocks


def stacks(cells: Sequence[CellSpec]) -> list[list[CellSpec]]:
    """Group cells into multi-layer stacks that can be driven together.

    A stack is all ``_l{k}`` cells of one prefix whose layer indices run ``0..L-1`` with
    one kind, consistent directions, and upper input widths equal to the layer below's
    output width times the number of directions. Anything else (``*Cell`` modules,
    inconsistent groups) becomes one single-cell stack per cell.
    """
    out: list[list[CellSpec]] = []
    by_prefix: dict[str, list[CellSpec]] = {}
    for spec in cells:
        if spec.layer is None:
            out.append([spec])
        else:
            by_prefix.setdefault(spec.prefix, []).append(spec)
    for group in by_prefix.values():
        if _is_stack(group):
            out.append(sorted(group, key=lambda c: (c.layer, c.reverse)))
        else:
            out.extend([c] for c in group)
    return sorted(out, key=lambda g: (g[0].prefix, g[0].layer or 0, g[0].reverse))


def _is_stack(group: list[CellSpec]) -> bool:
    """Whether a prefix group forms a complete PyTorch multi-layer module."""
    layers = sorted({c.layer for c in group if c.layer is not None})
    if layers != list(range(len(layers))) or len({c.kind for c in group}) != 1:
        return False
    dirs = {k: sorted(c.reverse for c in group if c.layer == k) for k in layers}
    shapes = {tuple(v) for v in dirs.values()}
    if shapes not in ({(False,)}, {(False, True)}):
        return False
    n_dirs = len(next(iter(shapes)))
    for c in group:
        if c.layer and c.input_size != n_dirs * c.out_size:
            return False
    return len({(c.hidden_size, c.proj_size) for c in group}) == 1


def run_stack(cells: Sequence[CellWeights], inputs: Tensor) -> dict[CellSpec, Tensor]:
    """Run a stack over sequences and return each cell's input sequence in its own time order.

    Args:
        cells: one stack (see :func:`stacks`), sorted by layer then direction.
        inputs: ``(T, B, d_in)`` float64 sequences for layer 0.

    Returns:
        For each cell, the ``(T, B, d)`` inputs it sees, already reversed in time for
        ``_reverse`` directions (its step ``k`` consumes element ``k``).
    """
    seen: dict[CellSpec, Tensor] = {}
    layer_in = inputs
    layers = sorted({c.spec.layer or 0 for c in cells})
    for k in layers:
        outs = []
        for cell in (c for c in cells if (c.spec.layer or 0) == k):
            xs = layer_in.flip(0) if cell.spec.reverse else layer_in
            seen[cell.spec] = xs
            s = zero_state(cell.spec, xs.shape[1])
            hs = []
            for x in xs:
                s = cell_step(cell, s, x)
                hs.append(split_state(cell.spec, s)[0])
            h = torch.stack(hs)
            outs.append(h.flip(0) if cell.spec.reverse else h)
        layer_in = torch.cat(outs, dim=-1)
    return seen


@dataclass(frozen=True)
class StepMap:
    """A one-step map with its derivatives, batched over samples (all float64).

    Attributes:
        state_size: ``D``, width of the full state.
        out_size: width of ``h``, the leading part of the state (the hidden output).
        step: ``(B, D), (B, d_in) -> (B, D)``.
        jacobian: ``(B, D), (B, d_in) -> (B, D, D)``, ``J = ∂s_{k+1}/∂s_k`` per sample.
        tangent: ``(B, D), (B, d_in), (B, D, k) -> (B, D, k)``, ``J V`` without forming ``J``.
        gate: ``(B, D), (B, d_in) -> (B, H)``, the step-size gate (GRU ``z``, LSTM ``f``),
            or ``None`` when the cell has none.
    """

    state_size: int
    out_size: int
    step: Callable[[Tensor, Tensor], Tensor]
    jacobian: Callable[[Tensor, Tensor], Tensor]
    tangent: Callable[[Tensor, Tensor, Tensor], Tensor]
    gate: Callable[[Tensor, Tensor], Tensor] | None


def cell_jacobian(cell: CellWeights, s: Tensor, x: Tensor) -> Tensor:
    """``J = ∂s_{k+1}/∂s_k`` at ``(s, x)``, per sample for batched ``(B, D)`` states.

    Vanilla RNN in closed form, ``diag(φ'(a)) W_hh``; GRU/LSTM by reverse-mode autograd
    (``torch.func.jacrev``, vmapped over the batch).
    """
    if cell.spec.kind == "rnn":
        d = rnn_derivative(cell.spec.nonlinearity, rnn_preactivation(cell, s, x))
        return d.unsqueeze(-1) * cell.w_hh
    jac = torch.func.jacrev(lambda s1, x1: cell_step(cell, s1, x1))
    return jac(s, x) if s.dim() == 1 else torch.func.vmap(jac)(s, x)


def _cell_tangent(cell: CellWeights, s: Tensor, x: Tensor, v: Tensor) -> Tensor:
    """``J V`` for ``V`` of shape ``(B, D, k)``: closed form for RNN, vmapped JVPs otherwise."""
    if cell.spec.kind == "rnn":
        d = rnn_derivative(cell.spec.nonlinearity, rnn_preactivation(cell, s, x))
        return d.unsqueeze(-1) * (cell.w_hh @ v)

    def one(t: Tensor) -> Tensor:
        return torch.func.jvp(lambda s1: cell_step(cell, s1, x), (s,), (t,))[1]

    return torch.func.vmap(one, in_dims=2, out_dims=2)(v)


def step_map(cell: CellWeights) -> StepMap:
    """The one-step map of a rebuilt PyTorch cell."""
    spec = cell.spec
    return StepMap(
        state_size=spec.state_size,
        out_size=spec.out_size,
        step=lambda s, x: cell_step(cell, s, x),
        jacobian=lambda s, x: cell_jacobian(cell, s, x),
        tangent=lambda s, x, v: _cell_tangent(cell, s, x, v),
        gate=None if spec.kind == "rnn" else lambda s, x: cell_gate(cell, s, x),  # type: ignore[return-value]
    )


def custom_step_map(
    step: Callable[[Tensor, Tensor], Tensor], state_size: int, out_size: int | None = None
) -> StepMap:
    """Wrap any differentiable ``step(state, x) -> state`` on unbatched 1-D tensors.

    The callable sees one sample at a time (float64 ``(D,)`` state, ``(d_in,)`` input), so it
    may use any torch code autograd supports; Jacobians come from
    ``torch.autograd.functional.jacobian``.

    Args:
        step: the user's one-step map.
        state_size: ``D``.
        out_size: width of the hidden output at the front of the state (default ``D``).
    """

    def batched(s: Tensor, x: Tensor) -> Tensor:
        return torch.stack([step(s[b], x[b]) for b in range(s.shape[0])])

    def jacobian(s: Tensor, x: Tensor) -> Tensor:
        return torch.stack(
            [
                torch.autograd.functional.jacobian(lambda s1, x1=x[b]: step(s1, x1), s[b])
                for b in range(s.shape[0])
            ]
        )

    return StepMap(
        state_size=state_size,
        out_size=state_size if out_size is None else out_size,
        step=batched,
        jacobian=jacobian,
        tangent=lambda s, x, v: jacobian(s, x) @ v,
        gate=None,
    )
