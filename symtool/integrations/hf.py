"""``SymtoolCallback`` for the Hugging Face ``transformers`` Trainer.

Needs ``transformers`` (``pip install 'symtool[hf]'``). Each analysed step adds one entry
to ``<out>/<analysis>.json``, written atomically; training is not disturbed
(docs/python.md). Probe batches given as dicts pass every key but the targets (``labels``
by default here) to the model as keywords, and the loss reads the output's ``logits``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from symtool.api.monitor import Monitor

try:
    from transformers import TrainerCallback
except ImportError:
    raise ImportError(
        "symtool.integrations.hf needs transformers: pip install 'symtool[hf]'"
    ) from None


class SymtoolCallback(TrainerCallback):
    """Analyse the Trainer's model every ``every_n_steps`` optimizer steps.

    Args:
        probe: align's probe data (a tensor, ``(x, y)``, a dict, a ``DataLoader``, a file).
        every_n_steps: analyse when ``state.global_step`` is a multiple of it.
        analyses: any of ``align``, ``symmetry``, ``ode``.
        out: the folder the reports go to (``<out>/align.json``, ...).
        targets: the key of the targets in dict probes (``labels``).
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
        targets: str = "labels",
        resume: bool = True,
        **settings: Any,
    ) -> None:
        self.probe = probe
        self.every_n_steps = every_n_steps
        self.analyses = tuple(analyses)
        self.out = out
        self.settings = {"targets": targets, **settings} if "align" in analyses else settings
        self.resume = resume
        self.monitor: Monitor | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Set the monitor up on the model being trained."""
        self.monitor = Monitor(
            kwargs["model"],
            self.probe,
            out=self.out,
            analyses=self.analyses,
            every_n_steps=self.every_n_steps,
            resume=self.resume,
            **self.settings,
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Analyse when ``state.global_step`` is due."""
        if self.monitor is not None:
            self.monitor.step(int(state.global_step))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Mark the reports complete."""
        if self.monitor is not None:
            self.monitor.close()
