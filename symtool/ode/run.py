"""``symtool ode`` over a checkpoint sequence: one report, one checkpoint at a time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from symtool.errors import ModelError, ProbeError
from symtool.inputs import checkpoints as ck
from symtool.inputs import models, probes
from symtool.ode import analysis as ode_mod
from symtool.report.files import to_jsonable
from symtool.runner import Progress, run_report

# ------------------------------------------------------------------------------ ode


@dataclass(frozen=True)
class OdeRun:
    """What ``symtool ode`` needs besides the analysis settings."""

    settings: ode_mod.OdeSettings = field(default_factory=ode_mod.OdeSettings)
    data: Path | None = None
    inputs: str = "x"
    samples: int | None = None
    factory: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    base_dir: Path = field(default_factory=Path.cwd)
    trust_pickle: bool = False

    def public(self) -> dict[str, Any]:
        """Settings as recorded in the report."""
        return {
            **self.settings.to_dict(),
            "data": None if self.data is None else str(self.data),
            "inputs": self.inputs,
            "samples": self.samples,
            "model": self.factory,
            "model_args": self.model_args,
            "trust_pickle": self.trust_pickle,
        }


def _ode_sequences(run: OdeRun) -> tuple[torch.Tensor | None, dict[str, Any] | None]:
    if run.data is None:
        return None, None
    probe = probes.load_probe(run.data, inputs=run.inputs, targets=run.inputs, samples=run.samples)
    x = probe.x
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ProbeError(f"sequences {run.inputs!r} must be floating point", path=run.data)
    if x.ndim not in (2, 3):
        raise ProbeError(
            f"sequences {run.inputs!r} must be (B, T, d) or (T, B, d), got {tuple(x.shape)}",
            path=run.data,
        )
    return x.to(torch.float64), {
        "path": str(probe.path),
        "sha256": probe.sha256,
        "shape": list(x.shape),
    }


def run_ode(
    ckpts: list[ck.Checkpoint],
    run: OdeRun,
    *,
    previous: dict[str, Any] | None = None,
    on_partial: Callable[[dict[str, Any]], None] | None = None,
    progress: Progress | None = None,
    cell: torch.nn.Module | None = None,
    sequences: tuple[torch.Tensor, dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """The ``ode`` report: every recurrent layer and direction of every checkpoint.

    ``cell`` is a custom cell object to use instead of building one from ``--model`` (the
    Python API passes a copy of the user's; its weights are loaded from each checkpoint),
    ``sequences`` probe sequences from memory and their provenance, instead of ``run.data``.
    """
    seqs, probe_info = _ode_sequences(run) if sequences is None else sequences
    custom: dict[str, torch.nn.Module] = {} if cell is None else {"cell": cell}

    def analyze(c: ck.Checkpoint, loaded: ck.LoadedCheckpoint) -> dict[str, Any]:
        if run.factory is not None or custom:
            return _custom_cell(c, loaded, run, seqs, custom)
        rep = ode_mod.analyze_state_dict(loaded.tensors, run.settings, sequences=seqs)
        if not rep.layers:
            raise ModelError(
                "no recurrent cell found (looked for weight_hh/weight_ih of nn.RNN, nn.GRU, "
                "nn.LSTM and their *Cell variants); use --model for custom cells",
                path=c.path,
            )
        return {
            "layers": [to_jsonable(layer) for layer in rep.layers],
            "skipped": [to_jsonable(s) for s in rep.skipped],
        }

    return run_report(
        "symtool/ode",
        ckpts,
        analyze,
        run.public(),
        trust_pickle=run.trust_pickle,
        provenance_extra={"probe": probe_info},
        previous=previous,
        on_partial=on_partial,
        progress=progress,
    )


def _custom_cell(
    c: ck.Checkpoint,
    loaded: ck.LoadedCheckpoint,
    run: OdeRun,
    seqs: torch.Tensor | None,
    cache: dict[str, torch.nn.Module],
) -> dict[str, Any]:
    """A user cell from ``--model``: it must define ``step(state, x) -> state`` and the
    integer attributes ``state_size`` and ``input_size`` (docs/ode.md)."""
    if "cell" not in cache:
        cache["cell"] = models.build_model(
            run.factory, run.model_args, loaded.tensors, base_dir=run.base_dir
        )
    cell = cache["cell"]
    missing = [a for a in ("step", "state_size", "input_size") if not hasattr(cell, a)]
    if missing:
        raise ModelError(
            f"custom cell {run.factory!r} lacks {', '.join(missing)} "
            "(needs step(state, x) -> state, state_size, input_size)"
        )
    models.load_state(cell, loaded.tensors, source=c.path)
    cell.to(torch.float64)
    xs = None if seqs is None else ode_mod.prepare_sequences(seqs, run.settings.batch_first)
    layer = ode_mod.analyze_step(
        cell.step,
        state_size=int(cell.state_size),
        input_size=int(cell.input_size),
        settings=run.settings,
        sequences=xs,
        name=type(cell).__name__,
    )
    return {"layers": [to_jsonable(layer)], "skipped": []}


