"""One orchestration path for ``align``, ``symmetry`` and ``ode``, shared by the CLI and
the Python API.

:func:`align_job`, :func:`symmetry_job` and :func:`ode_job` take what either side holds
(checkpoint paths, folders or globs with ``steps``/``every``/``last``, or a live model or
state dict; a ``symtool.toml``; keyword settings named as the CLI's flags) and settle
everything a run needs: the settings dataclass (keyword > ``symtool.toml`` > the
dataclass's default), the checkpoints, the probe (found beside the checkpoints when
nothing names one) and notes for the user. :meth:`Job.run` then runs the analysis with
what a caller drives it by: a previous partial report to resume, ``on_partial``,
``progress``, saved matrices, a ``torchrun`` world. ``symtool align`` and
``symtool.align(...)`` are both a job and its run.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from symtool import distributed
from symtool.api import settings as st
from symtool.api.live import device_of, preserved, unwrap
from symtool.errors import ProbeError, UsageError
from symtool.inputs import checkpoints as ck
from symtool.inputs import probes
from symtool.inputs.memory import MemoryProbe, memory_checkpoint, tensors_sha256

Target = nn.Module | Mapping[str, torch.Tensor] | str | Path | Sequence[str | Path]
"""What an analysis reads: a live model, a state dict, or checkpoint paths/globs/folders."""

Progress = Callable[[int, int, str], None]


@dataclass
class Job:
    """One analysis, settled and ready to run (see the module docstring).

    Attributes:
        analysis: ``align``, ``symmetry`` or ``ode``.
        checkpoints: what is analysed, in step order (in-memory state dicts for a model).
        settings: ``AlignSettings``, ``SymmetryRun`` or ``OdeRun``.
        notes: lines for the user before the run (a probe found beside the checkpoints,
            a loss that differs silently from the architecture's).
        extra: the ``run_*`` keywords for in-memory inputs (``model``, ``probe``,
            ``loss_fn``, ``cell``, ``sequences``, ``probe_found``).
        live: the user's live model, restored exactly after the run.
    """

    analysis: str
    checkpoints: list[ck.Checkpoint]
    settings: Any
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    live: nn.Module | None = None

    def run(
        self,
        *,
        previous: str | Path | Mapping[str, Any] | None = None,
        on_partial: Callable[[dict[str, Any]], None] | None = None,
        progress: Progress | None = None,
        save_matrices: str | Path | None = None,
        parallel: str | None = None,
        on_note: Callable[[str], None] | None = None,
    ) -> dict[str, Any] | None:
        """Run the analysis and return its report (a plain dict, the CLI's document).

        Args:
            previous: a partial report (or its file; a missing file is a fresh start)
                whose finished checkpoints are reused (``--resume``).
            on_partial: called with the report so far after each checkpoint (without
                align's matrices).
            progress: called with ``(index, total, name)``.
            save_matrices: align only: write every layer's H, G, Z, C, W here
                (``.safetensors``, atomically, by rank 0).
            parallel: under ``torchrun``, ``data`` or ``checkpoints`` (align only); None:
                one process.
            on_note: called with each of :attr:`notes` (by rank 0) before the run.

        Returns:
            The report; None on a rank other than 0 of a ``torchrun`` world.
        """
        from symtool.report.files import read_report

        if isinstance(previous, str | Path):
            previous = read_report(str(previous)) if Path(previous).exists() else None
        partial = on_partial
        if on_partial is not None and self.analysis == "align":
            def partial(report: dict[str, Any]) -> None:
                on_partial({k: v for k, v in report.items() if k != "matrices"})
        world = None
        if parallel is not None:
            world = distributed.from_env(parallel, self.settings.device)
        main = world is None or world.is_main
        if on_note is not None and main:
            for note in self.notes:
                on_note(note)
        common = {"previous": previous, "on_partial": partial, "progress": progress,
                  **self.extra}
        try:
            with preserved(self.live) if self.live is not None else contextlib.nullcontext():
                report = self._run(common, save_matrices, world)
        finally:
            if world is not None and world.active:
                distributed.finalize()
        if not main:
            return None
        matrices = report.pop("matrices", None)
        if save_matrices is not None and matrices:
            from symtool.report.files import save_tensors_atomic

            save_tensors_atomic(Path(save_matrices), matrices)
        return report

    def _run(self, common: dict[str, Any], save_matrices: Any, world: Any) -> dict[str, Any]:
        if self.analysis == "align":
            from symtool.align.run import run_align

            return run_align(
                self.checkpoints, self.settings, world=world,
                save_matrices=None if save_matrices is None else Path(save_matrices), **common,
            )
        if self.analysis == "symmetry":
            from symtool.symmetry.run import run_symmetry

            return run_symmetry(self.checkpoints, self.settings, **common)
        from symtool.ode.run import run_ode

        return run_ode(self.checkpoints, self.settings, **common)

    def estimate(self) -> tuple[Any, list[float]]:
        """align's ``--dry-run``: the cost estimate (``align.estimate.dry_run``) and the
        seconds each layer's estimate comes to (docs/performance.md)."""
        from symtool.align.estimate import EFFICIENCY, dry_run

        cost = dry_run(self.checkpoints, self.settings)
        rate = cost.gemm_gflops * 1e9 * EFFICIENCY
        return cost, [(c.decompose_flops + (c.capture_flops or 0.0)) / rate for c in cost.layers]


def paths_of(target: Any) -> list[str | Path] | None:
    """Checkpoint paths, or None when ``target`` is a model or a state dict."""
    if isinstance(target, nn.Module | Mapping):
        return None
    if isinstance(target, str | Path):
        return [target]
    if isinstance(target, Sequence) and all(isinstance(p, str | Path) for p in target):
        return list(target)
    raise UsageError(
        f"cannot analyse {type(target).__name__}: give an nn.Module, a state dict, or "
        "checkpoint paths"
    )


def memory(target: Any, step: int | None) -> list[ck.Checkpoint]:
    """A live model's (or a state dict's) weights as one in-memory checkpoint."""
    if isinstance(target, nn.Module):
        return [memory_checkpoint(target.state_dict(), step=step, label=type(target).__name__)]
    return [memory_checkpoint(target, step=step, label="state_dict")]


def loss_of(
    loss: str | Callable[..., torch.Tensor] | None, flags: dict[str, Any]
) -> Callable[..., torch.Tensor] | None:
    """A callable ``loss`` (recorded as ``<name>``); a name goes into the settings."""
    if loss is None:
        return None
    if isinstance(loss, str):
        flags["loss"] = loss
        return None
    if not callable(loss):
        raise UsageError(f"loss must be a name or a callable, not {type(loss).__name__}")
    flags["loss"] = f"<{getattr(loss, '__qualname__', type(loss).__name__)}>"
    return loss


def align_inputs(
    data: Any,
    conf: Any,
    flags: dict[str, Any],
    loss_fn: Callable[..., torch.Tensor] | None,
    *,
    beside: list[ck.Checkpoint] | None = None,
    ckpts: Sequence[ck.Checkpoint] = (),
    model: Any = None,
) -> tuple[Any, MemoryProbe | None, Callable[..., torch.Tensor] | None, str | None]:
    """``align``'s settings, in-memory probe (None for a file), loss, and how the probe
    file was found (a probe file ``beside`` the checkpoints, when nothing names one).

    Checkpoint files with a probe file are left exactly as the CLI runs them (settings
    settled by ``run_align``, its own loss unless a callable is given); a live model or an
    in-memory probe settles the settings here, as the probe batches need them.
    """
    in_memory = data is not None and not isinstance(data, str | Path)
    data_path, source, found = None, None, None
    if not in_memory:
        data_path, source = st.data_option(data, conf)
    if beside is not None and data_path is None and source is None and not in_memory:
        data_path = probes.probe_beside([c.path for c in beside])
        found = probes.FOUND_BESIDE if data_path is not None else None
    s = st.align_settings(flags, conf, data=data_path, source="<memory>" if in_memory else source)
    if model is None and not in_memory:
        return s, None, loss_fn, found
    from symtool.align.probe import settle

    s, _ = settle(ckpts, s, model)  # the loss and dtype the run will use
    probe = None
    if in_memory:
        probe = MemoryProbe(
            data, inputs=s.inputs, targets=s.targets, mask=s.mask, samples=s.samples,
            batch_size=s.batch_size,
        )
        s = replace(s, source=probe.source)
    # the capture hands the loss the output's logits (symtool.align.forward.logits)
    return s, probe, loss_fn or probes.resolve_loss(s.loss, base_dir=s.base_dir), found


def align_job(
    model_or_checkpoints: Target,
    data: Any = None,
    *,
    loss: str | Callable[..., torch.Tensor] | None = None,
    config: str | Path | bool | None = None,
    step: int | None = None,
    **settings: Any,
) -> Job:
    """``align`` settled: see :func:`symtool.api.analyses.align` for the arguments."""
    flags = st.split(settings, (*st.align_names(), *st.SELECTION), "align")
    loss_fn = loss_of(loss, flags)
    paths = paths_of(model_or_checkpoints)
    conf = st.config_for(paths or [], config)
    live = model_or_checkpoints if isinstance(model_or_checkpoints, nn.Module) else None
    if live is not None:
        live = unwrap(live)
        flags.setdefault("device", device_of(live))
    # checkpoints first, so an empty folder says "no checkpoints", not "no probe data"
    ckpts = (
        st.checkpoints(paths, conf, flags) if paths is not None
        else memory(live if live is not None else model_or_checkpoints, step)
    )
    s, probe, fn, found = align_inputs(
        data, conf, flags, loss_fn, beside=None if paths is None else ckpts, ckpts=ckpts,
        model=live,
    )
    notes = []
    if found is not None:
        notes.append(f"using probe data {s.data} (found {found})")
    if paths is not None and ckpts:
        from symtool.inputs import hf

        note = hf.loss_note(ckpts[0].path, s.loss)
        if note:
            notes.append(note)
    model = live
    if live is not None and s.dtype is not None:
        model = copy.deepcopy(live)  # --dtype converts the model: never the live one
    extra = {"probe_found": found}
    if model is not None:
        extra["model"] = model
    if probe is not None:
        extra["probe"] = probe
    if fn is not None:
        extra["loss_fn"] = fn
    return Job("align", ckpts, s, notes, extra, live)


def symmetry_job(
    model_or_state_dict_or_checkpoints: Target,
    *,
    config: str | Path | bool | None = None,
    step: int | None = None,
    **settings: Any,
) -> Job:
    """``symmetry`` settled: see :func:`symtool.api.analyses.symmetry`."""
    flags = st.split(settings, (*st.symmetry_names(), *st.SELECTION), "symmetry")
    target = model_or_state_dict_or_checkpoints
    paths = paths_of(target)
    conf = st.config_for(paths or [], config)
    run = st.symmetry_run(flags, conf)
    if paths is not None:
        return Job("symmetry", st.checkpoints(paths, conf, flags), run)
    if isinstance(target, nn.Module):
        live = unwrap(target)
        return Job("symmetry", memory(live, step), run, extra={"model": live}, live=live)
    return Job("symmetry", memory(target, step), run)


def ode_job(
    model_or_checkpoints: Target,
    data: Any = None,
    *,
    config: str | Path | bool | None = None,
    step: int | None = None,
    **settings: Any,
) -> Job:
    """``ode`` settled: see :func:`symtool.api.analyses.ode`."""
    flags = st.split(settings, (*st.ode_names(), *st.SELECTION), "ode")
    target = model_or_checkpoints
    paths = paths_of(target)
    conf = st.config_for(paths or [], config)
    tensor = data if isinstance(data, torch.Tensor) else None
    data_path = None
    if tensor is None:
        if data is not None and not isinstance(data, str | Path):
            raise UsageError(f"ode data must be a file path or a tensor, not {type(data).__name__}")
        data_path = Path(data) if data is not None else conf.path_value("data", "path")
    run = st.ode_run(flags, conf, data=data_path)
    extra: dict[str, Any] = {}
    if tensor is not None:
        extra["sequences"] = sequences(tensor, run.samples)
    if paths is not None:
        return Job("ode", st.checkpoints(paths, conf, flags), run, extra=extra)
    if isinstance(target, nn.Module):
        target = unwrap(target)
        if all(hasattr(target, a) for a in ("step", "state_size", "input_size")):
            extra["cell"] = copy.deepcopy(target)
    return Job("ode", memory(target, step), run, extra=extra)


def inspect_report(
    paths: Sequence[str | Path],
    *,
    config: str | Path | bool | None = None,
    tensors: bool | None = None,
    trust_pickle: bool | None = None,
    steps: str | None = None,
    every: int | None = None,
    last: int | None = None,
) -> dict[str, Any]:
    """``symtool inspect``'s report: checkpoints in step order and, by default for a single
    one, every tensor and the analyses it gets."""
    from symtool.config import pick
    from symtool.inspection import inspect_checkpoints

    conf = st.config_for(paths, config)
    ckpts = st.checkpoints(paths, conf, {"steps": steps, "every": every, "last": last})
    return inspect_checkpoints(
        ckpts,
        tensors=len(ckpts) == 1 if tensors is None else tensors,
        trust_pickle=bool(pick(trust_pickle, conf, "checkpoints", "trust_pickle", None)),
    )


def sequences(x: torch.Tensor, samples: int | None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Probe sequences from a tensor, checked as a file's are, and their provenance."""
    if not x.is_floating_point() or x.ndim not in (2, 3):
        raise ProbeError(
            f"sequences must be a floating-point (B, T, d) or (T, B, d) tensor, got "
            f"{x.dtype} {tuple(x.shape)}"
        )
    if samples is not None:
        x = x[:samples]
    x = x.detach()
    info = {"path": "<tensor>", "sha256": tensors_sha256({"x": x}), "shape": list(x.shape)}
    return x.to("cpu", torch.float64), info
