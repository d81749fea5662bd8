"""``symtool.align``, ``symtool.symmetry``, ``symtool.ode``: the CLI's analyses from Python.

Each takes what the CLI takes (checkpoint files, folders, globs) or what a notebook holds
(a live ``nn.Module``, a state dict), and keyword settings named as the CLI's flags and
``symtool.toml`` keys, and returns the same report the CLI writes, as a
:class:`~symtool.api.report.Report`. A live model is analysed in memory, as it is, and
left exactly as it was (:func:`symtool.api.live.preserved`). Both these functions and the
CLI's commands are a :mod:`symtool.api.jobs` job and its run: one orchestration path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from symtool.align.forward import logits
from symtool.api.jobs import Target, align_job, ode_job, symmetry_job
from symtool.api.report import Report

__all__ = ["Target", "align", "logits", "ode", "symmetry"]


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
    job = align_job(model_or_checkpoints, data, loss=loss, config=config, step=step, **settings)
    report = job.run()
    assert report is not None  # one process
    return Report(report)


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
    job = symmetry_job(model_or_state_dict_or_checkpoints, config=config, step=step, **settings)
    report = job.run()
    assert report is not None
    return Report(report)


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
    report = ode_job(model_or_checkpoints, data, config=config, step=step, **settings).run()
    assert report is not None
    return Report(report)
