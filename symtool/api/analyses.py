"""``symtool.align``, ``symtool.symmetry``, ``symtool.ode``: the CLI's analyses from Python.

Each takes what the CLI takes (checkpoint files, folders, globs) or what a notebook holds
(a live ``nn.Module``, a state dict), and keyword settings named as the CLI's flags and
``symtool.toml`` keys, and returns the same report the CLI writes, as a
:class:`~symtool.api.report.Report`. A live model is analysed in memory, as it is, and
left exactly as it was (:func:`symtool.api.live.preserved`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from symtool import distributed
from symtool.api import settings as st
from symtool.api.live import device_of, preserved, unwrap
from symtool.api.report import Report
from symtool.errors import ProbeError, UsageError
from symtool.inputs import checkpoints as ck
from symtool.inputs import probes
from symtool.inputs.memory import MemoryProbe, memory_checkpoint, tensors_sha256

Target = nn.Module | Mapping[str, torch.Tensor] | str | Path | Sequence[str | Path]
"""What an analysis reads: a live model, a state dict, or checkpoint paths/globs/folders."""


def _paths(target: Any) -> list[str | Path] | None:
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


def _memory(target: Any, step: int | None) -> list[ck.Checkpoint]:
    if isinstance(target, nn.Module):
        return [memory_checkpoint(target.state_dict(), step=step, label=type(target).__name__)]
    return [memory_checkpoint(target, step=step, label="state_dict")]


def logits(output: Any) -> Any:
    """A model's output as the loss reads it: a tensor as it is; ``.logits`` of a Hugging
    Face ``ModelOutput`` (or a dict holding ``logits``); else the first item of a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and "logits" in output:
        return output["logits"]
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, tuple | list) and output:
        return output[0]
    return output


def _loss(
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


def align(
    model_or_checkpoints: Target,
    data: Any = None,
    *,
    loss: str | Callable[..., torch.Tensor] | None = None,
    config: str | Path | bool | None = None,
    step: int | None = None,
    **settings: Any,
) -> Report:
    """CRH relations and PAH exponents per layer: ``symtool align`` in Python.

    Args:
        model_or_checkpoints: a live ``nn.Module`` (analysed in memory and left as it was),
            a state dict (the model is rebuilt as the CLI does: auto-MLP or ``factory=``),
            or checkpoint paths, folders or globs (one report entry per checkpoint).
        data: probe data: a file path or ``module:function`` (as ``--data``), a tensor,
            ``(x, y)``, a dict of tensors, a ``DataLoader`` or an iterable of batches
            (:class:`~symtool.inputs.memory.MemoryProbe`). None: the ``symtool.toml``'s, or
            a probe file beside the checkpoints, as the CLI finds them.
        loss: a loss name (``cross_entropy``, ``mse``, ..., ``module:fn``) or a callable
            ``loss(output, target)`` returning the batch's summed loss.
        config: a ``symtool.toml`` path; None: the one beside the checkpoints; False: none.
        step: the training step recorded for a live model or state dict.
        **settings: the CLI's settings by name (``batch_size``, ``null_samples``,
            ``layers``, ``moments``, ``factory``, ``steps``, ...; docs/python.md).

    Returns:
        The ``symtool/align`` report.

    Raises:
        SettingsError: an unknown setting name (the message lists the valid ones).
    """
    flags = st.split(settings, (*st.align_names(), *st.SELECTION), "align")
    loss_fn = _loss(loss, flags)
    paths = _paths(model_or_checkpoints)
    conf = st.config_for(paths or [], config)
    live = model_or_checkpoints if isinstance(model_or_checkpoints, nn.Module) else None
    if live is not None:
        live = unwrap(live)
        flags.setdefault("device", device_of(live))
    ckpts = (
        st.checkpoints(paths, conf, flags) if paths is not None
        else _memory(live if live is not None else model_or_checkpoints, step)
    )
    s, probe, wrapped, found = align_inputs(
        data, conf, flags, loss_fn, beside=None if paths is None else ckpts, ckpts=ckpts,
        model=live,
    )
    model = live
    if live is not None and s.dtype is not None:
        model = copy.deepcopy(live)  # --dtype converts the model: never the live one
    with preserved(live) if live is not None else contextlib.nullcontext():
        report = _run_align(ckpts, s, model, probe, wrapped, found)
    return Report(report)


def align_inputs(
    data: Any,
    conf: Any,
    flags: dict[str, Any],
    loss_fn: Callable[..., torch.Tensor] | None,
    *,
    beside: list[ck.Checkpoint] | None = None,
    ckpts: Sequence[ck.Checkpoint] = (),
    model: Any = None,
) -> tuple[Any, MemoryProbe | None, Callable[..., torch.Tensor], str | None]:
    """``align``'s settings, in-memory probe (None for a file), loss, and how the probe
    file was found (a probe file ``beside`` the checkpoints, when nothing names one)."""
    memory = data is not None and not isinstance(data, str | Path)
    data_path, source, found = None, None, None
    if not memory:
        data_path, source = st.data_option(data, conf)
    if beside is not None and data_path is None and source is None and not memory:
        data_path = probes.probe_beside([c.path for c in beside])
        found = probes.FOUND_BESIDE if data_path is not None else None
    s = st.align_settings(flags, conf, data=data_path, source="<memory>" if memory else source)
    from symtool.align.probe import settle

    s, _ = settle(ckpts, s, model)  # the loss and dtype the run will use
    probe = None
    if memory:
        probe = MemoryProbe(
            data, inputs=s.inputs, targets=s.targets, mask=s.mask, samples=s.samples,
            batch_size=s.batch_size,
        )
        s = replace(s, source=probe.source)
    fn = loss_fn or probes.resolve_loss(s.loss, base_dir=s.base_dir)

    def wrapped(output: Any, target: torch.Tensor) -> torch.Tensor:
        return fn(logits(output), target)

    return s, probe, wrapped, found


def _run_align(
    ckpts: list[ck.Checkpoint], s: Any, model: Any, probe: Any, loss_fn: Any, found: Any,
    world: distributed.World | None = None,
) -> dict[str, Any]:
    from symtool.align.run import run_align

    return run_align(
        ckpts, s, model=model, probe=probe, loss_fn=loss_fn, probe_found=found, world=world
    )


def symmetry(
    model_or_state_dict_or_checkpoints: Target,
    *,
    config: str | Path | bool | None = None,
    step: int | None = None,
    **settings: Any,
) -> Report:
    """Broken and restored parameter symmetries from weights: ``symtool symmetry`` in Python.

    A live ``nn.Module`` gives its unit pairs from its module graph, as ``--model`` does.
    Settings: ``tau_dead``, ``tau_dup``, ``tau_rank``, ``activation``, ``heads``, ``pairs``,
    ``classifier``, ``all_values``, ``factory``, ``strip_prefix``, ``steps``, ... (the
    :class:`SymmetrySettings` field names work too).
    """
    from symtool.symmetry.run import run_symmetry

    flags = st.split(settings, (*st.symmetry_names(), *st.SELECTION), "symmetry")
    target = model_or_state_dict_or_checkpoints
    paths = _paths(target)
    conf = st.config_for(paths or [], config)
    run = st.symmetry_run(flags, conf)
    if paths is not None:
        return Report(run_symmetry(st.checkpoints(paths, conf, flags), run))
    if isinstance(target, nn.Module):
        live = unwrap(target)
        with preserved(live):
            return Report(run_symmetry(_memory(live, step), run, model=live))
    return Report(run_symmetry(_memory(target, step), run))


def ode(
    model_or_checkpoints: Target,
    data: Any = None,
    *,
    config: str | Path | bool | None = None,
    step: int | None = None,
    **settings: Any,
) -> Report:
    """Recurrent cells read as ODE integrators: ``symtool ode`` in Python.

    ``data`` is a sequence file (as ``--data``) or a float tensor of sequences,
    ``(B, T, d)`` with ``batch_first=True`` else ``(T, B, d)``; None drives the cells with
    the settings' synthetic input. A live model's recurrent modules are read from its
    state dict; a custom cell (with ``step``, ``state_size``, ``input_size``) is analysed
    on a copy.
    """
    from symtool.ode.run import run_ode

    flags = st.split(settings, (*st.ode_names(), *st.SELECTION), "ode")
    target = model_or_checkpoints
    paths = _paths(target)
    conf = st.config_for(paths or [], config)
    tensor = data if isinstance(data, torch.Tensor) else None
    data_path = None
    if tensor is None:
        if data is not None and not isinstance(data, str | Path):
            raise UsageError(f"ode data must be a file path or a tensor, not {type(data).__name__}")
        data_path = Path(data) if data is not None else conf.path_value("data", "path")
    run = st.ode_run(flags, conf, data=data_path)
    sequences = None if tensor is None else _sequences(tensor, run.samples)
    if paths is not None:
        return Report(run_ode(st.checkpoints(paths, conf, flags), run, sequences=sequences))
    cell = None
    if isinstance(target, nn.Module):
        target = unwrap(target)
        if all(hasattr(target, a) for a in ("step", "state_size", "input_size")):
            cell = copy.deepcopy(target)
    ckpts = _memory(target, step)
    return Report(run_ode(ckpts, run, cell=cell, sequences=sequences))


def _sequences(x: torch.Tensor, samples: int | None) -> tuple[torch.Tensor, dict[str, Any]]:
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
