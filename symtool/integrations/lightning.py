"""``SymtoolCallback`` for Lightning: symtool reports every few training steps.

Needs ``lightning`` (``pip install 'symtool[lightning]'``; ``pytorch_lightning`` works
too). Each analysed step adds one entry to ``<out>/<analysis>.json``, written atomically;
training is not disturbed (docs/python.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from symtool.api.monitor import Monitor

try:
    from lightning.pytorch import Callback
except ImportError:  # pragma: no cover - the older package name
    try:
        from pytorch_lightning import Callback
    except ImportError:
        raise ImportError(
            "symtool.integrations.lightning needs Lightning: pip install 'symtool[lightning]'"
        ) from None


class SymtoolCallback(Callback):
    """Analyse the ``LightningModule`` every ``every_n_steps`` optimizer steps.

    Args:
        probe: align's probe data (a tensor, ``(x, y)``, a dict, a ``DataLoader``, a file).
        every_n_steps: analyse when ``trainer.global_step`` is a multiple of it.
        analyses: any of ``align``, ``symmetry``, ``ode``.
        out: the folder the reports go to (``<out>/align.json``, ...).
        module: the attribute of the ``LightningModule`` holding the network to analyse
            (e.g. ``"model"``); None analyses the ``LightningModule`` itself.
        resume: continue the reports already under ``out`` when training restarts from a
            checkpoint (entries below the first step analysed after it are kept); see
            :class:`symtool.Monitor`.
        **settings: as :class:`symtool.Monitor` takes them (``loss=``, ``null_samples=``,
            ``align={...}``, ...).
    """

    def __init__(
        self,
        probe: Any = None,
        *,
        every_n_steps: int = 100,
        analyses: Sequence[str] = ("align", "symmetry"),
        out: str | Path = "symtool",
        module: str | None = None,
        resume: bool = True,
        **settings: Any,
    ) -> None:
        super().__init__()
        self.probe = probe
        self.every_n_steps = every_n_steps
        self.analyses = tuple(analyses)
        self.out = out
        self.module = module
        self.settings = settings
        self.resume = resume
        self.monitor: Monitor | None = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        """Set the monitor up on the module being trained."""
        model = getattr(pl_module, self.module) if self.module else pl_module
        self.monitor = Monitor(
            model,
            self.probe,
            out=self.out,
            analyses=self.analyses,
            every_n_steps=self.every_n_steps,
            resume=self.resume,
            **self.settings,
        )

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Analyse when ``trainer.global_step`` is due (once per optimizer step)."""
        if self.monitor is not None:
            self.monitor.step(int(trainer.global_step))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Mark the reports complete."""
        if self.monitor is not None:
            self.monitor.close()
