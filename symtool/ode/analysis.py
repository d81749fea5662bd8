"""Recurrent cells read as ODE integrators: weights, Jacobians, stability, Lyapunov, verdict.

docs/theory.md §6 (Niu, Horesh, Chuang 2019, arXiv 1904.12933) and section 7 (float64,
determinism, non-finite values recorded as failures). Cells are found by parameter name
(:mod:`symtool.ode.cells`); weights-only diagnostics and the reading of ``J`` are in
:mod:`symtool.ode.linearization`, the RK algebra in :mod:`symtool.stability` and the QR
Lyapunov method in :mod:`symtool.ode.lyapunov`; this module holds the settings, the per-layer
report and the entry points. Every analysis is a pure function of tensors
returning frozen records; no record holds NaN or inf (``None`` plus a reason instead).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

import torch

from symtool.errors import ProbeError, UsageError
from symtool.inputs.models import Skipped
from symtool.ode.cells import (
    NONLINEARITIES,
    CellSpec,
    StepMap,
    cell_gate,
    cell_jacobian,
    custom_step_map,
    discover_cells,
    load_cell,
    operational_order,
    run_stack,
    stacks,
    step_map,
    zero_state,
)
from symtool.ode.linearization import (
    GateDiagnostics,
    JacobianReading,
    read_jacobian,
    step_size,
    weight_diagnostics,
)
from symtool.ode.lyapunov import (
    LyapunovResult,
    default_warmup,
    interval_evidence,
    lyapunov_result,
    trajectory_pass,
)

Tensor = torch.Tensor

_DRIVES = ("gaussian", "zero", "none")


@dataclass(frozen=True)
class OdeSettings:
    """Settings of the ODE analysis, validated on creation and recorded in every report.

    Attributes:
        nonlinearity: of ``nn.RNN`` cells (``tanh``, ``relu``; ``linear`` for linear RNNs).
        batch_first: probe sequences are ``(B, T, d_in)`` rather than ``(T, B, d_in)``.
        lyapunov_k: leading exponents to compute; ``None``: ``min(D, 64)``; capped at ``D``.
        warmup: steps left out of Lyapunov averages; ``None``: ``max(T//10, min(20, T//2))``.
        dt: step size override for the ODE reading (else 1 for RNN, ``1 − z``, ``1 − f``).
        seed: seeds the synthetic drive and the initial Lyapunov frame.
        drive: without probe data: ``gaussian`` (i.i.d. N(0, drive_scale²) inputs),
            ``zero`` (zero inputs) or ``none`` (no trajectory analysis).
        drive_scale: standard deviation of the Gaussian drive.
        drive_steps: ``T`` of the synthetic drive.
        drive_batch: ``B`` of the synthetic drive.
        jacobian_points: full Jacobians averaged along the trajectory for the "along"
            ODE reading (0 disables it).
        marginal_band: the least half-width of ``λ_1``'s interval (numerical resolution),
            and the band on ``ln ρ(J_rest)`` in the weights-only verdict.
        max_modes: per-mode tuples in records keep the leading modes by modulus only.
        lyapunov_frames: starting frames for ``λ_1``'s frame spread (the first is the
            reported one; docs/ode.md "Verdict").
        confidence: coverage of the t-interval on ``λ_1`` across sequences.
        single_sequence_band: the least half-width of ``λ_1``'s interval when a single
            sequence drives the cell (no standard error).
    """

    nonlinearity: str = "tanh"
    batch_first: bool = False
    lyapunov_k: int | None = None
    warmup: int | None = None
    dt: float | None = None
    seed: int = 0
    drive: str = "gaussian"
    drive_scale: float = 1.0
    drive_steps: int = 200
    drive_batch: int = 4
    jacobian_points: int = 16
    marginal_band: float = 1e-3
    max_modes: int = 32
    lyapunov_frames: int = 3
    confidence: float = 0.95
    single_sequence_band: float = 0.1

    def __post_init__(self) -> None:
        problems = []
        if self.nonlinearity not in NONLINEARITIES:
            problems.append(f"nonlinearity must be one of {NONLINEARITIES}")
        if self.lyapunov_k is not None and self.lyapunov_k < 1:
            problems.append("lyapunov_k must be ≥ 1")
        if self.warmup is not None and self.warmup < 0:
            problems.append("warmup must be ≥ 0")
        if self.dt is not None and not (math.isfinite(self.dt) and self.dt > 0):
            problems.append("dt must be a positive finite number")
        if self.drive not in _DRIVES:
            problems.append(f"drive must be one of {_DRIVES}")
        if not (math.isfinite(self.drive_scale) and self.drive_scale >= 0):
            problems.append("drive_scale must be ≥ 0")
        if self.drive_steps < 2 or self.drive_batch < 1:
            problems.append("drive_steps must be ≥ 2 and drive_batch ≥ 1")
        if self.jacobian_points < 0 or self.max_modes < 1:
            problems.append("jacobian_points must be ≥ 0 and max_modes ≥ 1")
        if not (math.isfinite(self.marginal_band) and self.marginal_band >= 0):
            problems.append("marginal_band must be ≥ 0")
        if self.lyapunov_frames < 1:
            problems.append("lyapunov_frames must be ≥ 1")
        if not (0 < self.confidence < 1):
            problems.append("confidence must be in (0, 1)")
        if not (math.isfinite(self.single_sequence_band) and self.single_sequence_band >= 0):
            problems.append("single_sequence_band must be ≥ 0")
        if problems:
            raise UsageError("ode settings: " + "; ".join(problems))

    def to_dict(self) -> dict[str, object]:
        """Plain-JSON form."""
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    """Contracting / marginal / expanding, with the interval and rule behind it.

    The interval is ``value ± band``: ``contracting`` when it lies below 0, ``expanding``
    above, ``marginal`` when it holds 0 (``|value| ≤ band``).

    Attributes:
        label: ``contracting``, ``marginal`` or ``expanding``.
        basis: ``lambda_1`` (probe data) or ``log_radius_at_rest`` (``ln ρ(J_rest)``).
        value: the number compared (``None``: ``-∞``).
        band: the interval's half-width: ``λ_1``'s (standard error, frame spread, floor)
            or, at rest, ``marginal_band``.
        rule: the comparison in words.
        evidence: what the verdict rests on, in words (probe sequences and frames, a
            single sequence, or the weights only and why).
    """

    label: str
    basis: str
    value: float | None
    band: float
    rule: str
    evidence: str | None = None


@dataclass(frozen=True)
class RecurrentLayerReport:
    """Everything the ODE analysis says about one layer and direction.

    Attributes:
        name: display name (``prefix.l{k}[_reverse]``, the prefix for ``*Cell``).
        prefix, kind, nonlinearity, layer, direction: where and what the cell is.
        hidden_size, input_size, proj_size, state_size: sizes (``state_size`` is ``D``).
        n, t: operational nonlinear depth and temporal order of one step.
        stack_layers, stack_n, stack_t: the same for the whole stack (``L·n``, ``t``).
        parameters: state-dict keys used.
        weights: per-gate weights-only diagnostics.
        rest: ODE reading of ``J`` at rest.
        along: ODE reading of the mean ``J`` along the drive, if any.
        lyapunov: the Lyapunov spectrum along the drive, if any.
        verdict: the verdict, ``None`` for failed layers.
        status: ``ok`` or ``failed``.
        reason: why the layer failed.
        notes: anything the reader should know (drive fallbacks, skipped parts).
    """

    name: str
    prefix: str
    kind: str
    nonlinearity: str | None
    layer: int | None
    direction: str
    hidden_size: int
    input_size: int
    proj_size: int
    state_size: int
    n: int | None
    t: int | None
    stack_layers: int
    stack_n: int | None
    stack_t: int | None
    parameters: tuple[str, ...]
    weights: tuple[GateDiagnostics, ...] = ()
    rest: JacobianReading | None = None
    along: JacobianReading | None = None
    lyapunov: LyapunovResult | None = None
    verdict: Verdict | None = None
    status: str = "ok"
    reason: str | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class OdeReport:
    """The ODE analysis of one checkpoint: layers, skipped tensors, settings."""

    layers: tuple[RecurrentLayerReport, ...]
    skipped: tuple[Skipped, ...]
    settings: OdeSettings = field(default_factory=OdeSettings)


def verdict(
    band: float,
    *,
    lambda_1: float | None = None,
    rest_radius: float | None = None,
    use_lyapunov: bool = True,
    interval: tuple[float, float] | None = None,
    evidence: str | None = None,
) -> Verdict:
    """Contracting / marginal / expanding from an interval around ``x``.

    ``x = λ_1`` (per step, natural log) with its ``interval`` (``x ± band``, as computed;
    ``band`` is its half-width), or, failing that, ``x = ln ρ(J_rest)`` with ``x ± band``
    (``band = marginal_band``).
    The interval below 0: contracting; holding 0: marginal; above 0: expanding.
    ``x = -∞`` counts as contracting.
    """
    if use_lyapunov:
        basis, value, sym = "lambda_1", lambda_1, "λ_1"
    else:
        if rest_radius is None:
            raise ValueError("verdict needs lambda_1 or rest_radius")
        basis, sym = "log_radius_at_rest", "ln ρ(J_rest)"
        value = math.log(rest_radius) if rest_radius > 0 else None
        interval = None
    if value is None:
        return Verdict("contracting", basis, None, band, f"{sym} = -inf → contracting", evidence)
    low, high = interval if interval is not None else (value - band, value + band)
    if high < 0:
        label, rel = "contracting", "below 0"
    elif low > 0:
        label, rel = "expanding", "above 0"
    else:
        label, rel = "marginal", "holds 0"
    text = f"{sym} = {value:.6g} ± {band:.3g} = [{low:.6g}, {high:.6g}] {rel} → {label}"
    return Verdict(label, basis, value, band, text, evidence)


# --------------------------------------------------------------------- entry points


def prepare_sequences(sequences: Tensor, batch_first: bool = False) -> Tensor:
    """Probe sequences as float64 ``(T, B, d_in)``; a 2-D tensor is one ``(T, d_in)`` sequence."""
    x = torch.as_tensor(sequences).detach().to("cpu", torch.float64)
    if x.dim() == 2:
        x = x.unsqueeze(1)
    elif x.dim() == 3:
        x = x.transpose(0, 1) if batch_first else x
    else:
        raise ProbeError(f"probe sequences must be 2-D or 3-D, got shape {tuple(x.shape)}")
    if x.shape[0] < 2 or x.shape[1] < 1:
        raise ProbeError(f"probe sequences need T ≥ 2 steps and a sample, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ProbeError("probe sequences contain NaN or inf")
    return x


def analyze_state_dict(
    state_dict: Mapping[str, Tensor],
    settings: OdeSettings | None = None,
    *,
    sequences: Tensor | None = None,
    rest_input: Tensor | None = None,
) -> OdeReport:
    """Find every recurrent cell in a state dict and analyse each layer and direction.

    Args:
        state_dict: parameter names to tensors (any prefix).
        settings: analysis settings (defaults: :class:`OdeSettings`).
        sequences: probe inputs ``(T, B, d_in)`` (``(B, T, d_in)`` with ``batch_first``);
            they drive every stack whose layer-0 input width is ``d_in``.
        rest_input: mean input ``x̄`` (``(d_in,)``) for the rest point of stacks of that
            input width; default zeros.

    Returns:
        Per-layer reports (failed layers carry a reason), the skipped tensors, the settings.

    Raises:
        ProbeError: the sequences or the rest input fit no stack, or are malformed.
    """
    settings = settings or OdeSettings()
    found = discover_cells(state_dict, settings.nonlinearity)
    xs = None if sequences is None else prepare_sequences(sequences, settings.batch_first)
    groups = stacks(found.cells)
    widths = sorted({g[0].input_size for g in groups})
    if xs is not None and groups and xs.shape[2] not in widths:
        raise ProbeError(f"probe width {xs.shape[2]} fits no recurrent stack (inputs {widths})")
    if rest_input is not None and groups and torch.as_tensor(rest_input).numel() not in widths:
        raise ProbeError(f"rest input fits no recurrent stack (inputs {widths})")
    layers: list[RecurrentLayerReport] = []
    for group in groups:
        layers.extend(_analyze_stack(group, state_dict, settings, xs, rest_input))
    return OdeReport(tuple(layers), found.skipped, settings)


def analyze_step(
    step: Callable[[Tensor, Tensor], Tensor],
    *,
    state_size: int,
    input_size: int,
    out_size: int | None = None,
    settings: OdeSettings | None = None,
    sequences: Tensor | None = None,
    rest_state: Tensor | None = None,
    rest_input: Tensor | None = None,
    name: str = "custom",
) -> RecurrentLayerReport:
    """Analyse any differentiable ``step(state, x) -> state`` (1-D float64 tensors).

    No weights-only diagnostics and no ``(n, t)``; ``Δt = 1`` unless overridden.

    Args:
        step: the one-step map on one sample.
        state_size: ``D``.
        input_size: ``d_in``.
        out_size: width of the hidden output at the front of the state (default ``D``).
        settings: analysis settings.
        sequences: probe inputs, as for :func:`analyze_state_dict`.
        rest_state: the rest state (default zeros).
        rest_input: the rest input (default zeros).
        name: display name.
    """
    settings = settings or OdeSettings()
    fmap = custom_step_map(step, state_size, out_size)
    xs = None if sequences is None else prepare_sequences(sequences, settings.batch_first)
    if xs is not None and xs.shape[2] != input_size:
        raise ProbeError(f"probe width {xs.shape[2]} differs from input size {input_size}")
    s0 = (
        torch.zeros(state_size, dtype=torch.float64)
        if rest_state is None
        else (torch.as_tensor(rest_state).to(torch.float64).reshape(state_size))
    )
    x0 = _rest_vector(rest_input, input_size)
    jac = fmap.jacobian(s0[None], x0[None])[0]
    base = dict(
        name=name,
        prefix=name,
        kind="custom",
        nonlinearity=None,
        layer=None,
        direction="forward",
        hidden_size=fmap.out_size,
        input_size=input_size,
        proj_size=0,
        state_size=state_size,
        n=None,
        t=None,
        stack_layers=1,
        stack_n=None,
        stack_t=None,
        parameters=(),
    )
    drive = _drive(settings, xs, input_size)
    return _finish(base, fmap, "custom", jac, None, drive, settings, (), ())


def _rest_vector(rest_input: Tensor | None, width: int) -> Tensor:
    """The rest input as a float64 vector of the given width."""
    if rest_input is None:
        return torch.zeros(width, dtype=torch.float64)
    x = torch.as_tensor(rest_input).detach().to("cpu", torch.float64).reshape(-1)
    if x.numel() != width or not torch.isfinite(x).all():
        raise ProbeError(f"rest input must be {width} finite numbers, got {x.numel()}")
    return x


def _drive(
    settings: OdeSettings, xs: Tensor | None, width: int
) -> tuple[str, Tensor] | tuple[str, None]:
    """The sequences that drive a stack and their label (probe data or synthetic)."""
    if xs is not None:
        return "data", xs
    if settings.drive == "none":
        return "none", None
    shape = (settings.drive_steps, settings.drive_batch, width)
    if settings.drive == "zero":
        return "zero", torch.zeros(shape, dtype=torch.float64)
    gen = torch.Generator().manual_seed(settings.seed)
    x = settings.drive_scale * torch.randn(shape, generator=gen, dtype=torch.float64)
    return f"gaussian(scale={settings.drive_scale:g})", x


def _analyze_stack(
    group: list[CellSpec],
    state_dict: Mapping[str, Tensor],
    settings: OdeSettings,
    xs: Tensor | None,
    rest_input: Tensor | None,
) -> list[RecurrentLayerReport]:
    """Analyse one stack: rest point and drive run through all its layers in order."""
    n_layers = len({c.layer for c in group})
    stack_n, stack_t = operational_order(group[0].kind, n_layers)
    bases = {
        c: dict(
            name=c.name,
            prefix=c.prefix,
            kind=c.kind,
            nonlinearity=c.nonlinearity,
            layer=c.layer,
            direction="reverse" if c.reverse else "forward",
            hidden_size=c.hidden_size,
            input_size=c.input_size,
            proj_size=c.proj_size,
            state_size=c.state_size,
            n=c.order[0],
            t=c.order[1],
            stack_layers=n_layers,
            stack_n=stack_n,
            stack_t=stack_t,
            parameters=c.parameters,
        )
        for c in group
    }
    cells = [load_cell(c, state_dict) for c in group]
    bad = [
        c.spec.name
        for c in cells
        if not all(
            torch.isfinite(t).all()
            for t in (c.w_ih, c.w_hh, c.b_ih, c.b_hh, c.w_hr)
            if t is not None
        )
    ]
    if bad:
        reason = f"non-finite weights in {', '.join(bad)}"
        if len(group) > 1:
            reason += " (the stack cannot be run)"
        return [RecurrentLayerReport(**bases[c], status="failed", reason=reason) for c in group]
    width = group[0].input_size
    notes: tuple[str, ...] = ()
    if rest_input is not None and torch.as_tensor(rest_input).numel() != width:
        notes += (f"rest input does not fit input size {width}: rest point at x = 0",)
        rest_input = None
    rest_in = run_stack(cells, _rest_vector(rest_input, width)[None, None])
    if xs is not None and xs.shape[2] != width:
        notes += (
            f"probe width {xs.shape[2]} does not fit input size {width}: "
            "no trajectory analysis; verdict from the rest point",
        )
        drive: tuple[str, Tensor | None] = ("none", None)
    else:
        drive = _drive(settings, xs, width)
    driven = run_stack(cells, drive[1]) if drive[1] is not None else {}
    out = []
    for cell in cells:
        spec = cell.spec
        s0, x0 = zero_state(spec), rest_in[spec][0, 0]
        jac = cell_jacobian(cell, s0, x0)
        gate = cell_gate(cell, s0, x0)
        cell_drive = (drive[0], driven.get(spec))
        out.append(
            _finish(
                bases[spec],
                step_map(cell),
                spec.kind,
                jac,
                gate,
                cell_drive,
                settings,
                weight_diagnostics(cell, settings.max_modes),
                notes,
            )
        )
    return out


def _finish(
    base: dict[str, object],
    fmap: StepMap,
    kind: str,
    jac: Tensor,
    gate: Tensor | None,
    drive: tuple[str, Tensor | None],
    settings: OdeSettings,
    weights: tuple[GateDiagnostics, ...],
    notes: tuple[str, ...],
) -> RecurrentLayerReport:
    """Rest reading, trajectory pass, along reading and verdict for one cell."""
    if not torch.isfinite(jac).all():
        return RecurrentLayerReport(
            **base,
            weights=weights,
            status="failed",
            reason="non-finite Jacobian at rest",
            notes=notes,
        )
    rest = read_jacobian(jac, step_size(kind, gate, settings.dt), max_modes=settings.max_modes)
    label, inputs = drive
    lyap = along = interval = None
    if inputs is not None:
        steps = inputs.shape[0]
        warmup = default_warmup(steps) if settings.warmup is None else settings.warmup
        if warmup >= steps:
            raise UsageError(f"warmup {warmup} leaves no steps of {steps}")
        k = min(settings.lyapunov_k or 64, fmap.state_size)
        stats = trajectory_pass(
            fmap,
            inputs,
            k=k,
            warmup=warmup,
            seed=settings.seed,
            jacobian_points=settings.jacobian_points,
            frames=settings.lyapunov_frames,
        )
        lyap, interval = lyapunov_result(
            stats,
            drive=label,
            steps=steps,
            warmup=warmup,
            k=k,
            state_size=fmap.state_size,
            confidence=settings.confidence,
            floor=settings.marginal_band,
            single_floor=settings.single_sequence_band,
        )
        if (
            stats.reason is None
            and stats.jacobian_sum is not None
            and torch.isfinite(stats.jacobian_sum).all()
        ):
            dt = step_size(
                kind,
                None,
                settings.dt,
                gate_stats=(stats.gate_n, stats.gate_sum, stats.gate_log_sum),
            )
            along = read_jacobian(
                stats.jacobian_sum / stats.jacobian_n,
                dt,
                point="along",
                samples=stats.jacobian_n,
                max_modes=settings.max_modes,
            )
    # λ_1's interval exists when every sequence has a finite λ_1 (lower exponents may be −∞)
    iv = interval if label == "data" else None
    v = verdict(
        settings.marginal_band if iv is None else iv.half_width,
        lambda_1=None if iv is None else iv.center,
        rest_radius=rest.spectral_radius,
        use_lyapunov=iv is not None,
        interval=None if iv is None else (iv.low, iv.high),
        evidence=_fallback(label, lyap, notes)
        if iv is None or lyap is None
        else interval_evidence(lyap, settings.confidence, settings.single_sequence_band),
    )
    return RecurrentLayerReport(
        **base, weights=weights, rest=rest, along=along, lyapunov=lyap, verdict=v, notes=notes
    )


def _fallback(label: str, lyap: LyapunovResult | None, notes: tuple[str, ...]) -> str:
    """Why a verdict rests on the rest Jacobian (weights only)."""
    if label == "data" and lyap is not None:
        why = f"the probe run gave no λ_1 interval ({lyap.reason or 'λ_1 is undefined'})"
    elif label == "data":
        why = "no probe run"
    elif label == "none" and any("probe width" in n for n in notes):
        why = "the probe sequences do not fit this stack"
    elif label == "none":
        why = "no probe data and no drive"
    else:
        why = f"no probe data (a {label} drive is synthetic, so λ_1 is not used)"
    return f"weights only: ln ρ(J_rest) ± marginal_band; {why}"
