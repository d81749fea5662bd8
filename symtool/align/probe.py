"""What an ``align`` run reads besides checkpoints: its probe batches, and its settings as
the run's architecture settles them (the loss and window length of a Hugging Face model)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from symtool.inputs import checkpoints as ck
from symtool.inputs import hf, probes, tokens


def settle(
    ckpts: Sequence[ck.Checkpoint], settings: Any, model: Any = None
) -> tuple[Any, Path | None]:
    """The settings as the run uses them, and the tokenizer of a text probe.

    The loss (when not given) and the window length follow the architecture: a live
    model's own config, else the Hugging Face ``config.json`` of the first checkpoint.
    ``--verify`` without ``--dtype`` runs a built model in float64, so the exact identities
    it checks hold to float64 round-off (a float32 model's own output leaves them at ~1e-7);
    a live model (the Python API, callbacks) keeps its dtype.
    """
    if model is not None:  # a live model: its own config, never a file's
        config = getattr(model, "config", None)
        cfg = config.to_dict() if hasattr(config, "to_dict") else None
        if cfg is not None and not cfg.get("architectures"):
            # built from a config: no class name recorded until save_pretrained writes it
            # (what `symtool align` then reads), so take the class itself
            cfg = {**cfg, "architectures": [type(model).__name__]}
        arch = hf.architecture(cfg) if cfg is not None else None
    else:
        folder = hf.config_dir(ckpts[0].path) if ckpts else None  # what the run trained
        arch = hf.architecture(hf.read_config(folder)) if folder is not None else None
    if settings.verify and settings.dtype is None and model is None:  # float64 round-off
        settings = replace(settings, dtype="float64")
    if settings.loss is None:  # the model's own loss, recorded in the report
        settings = replace(settings, loss=hf.default_loss(arch))
    if settings.seq_len is None:  # recorded as used
        max_positions = arch.max_positions if arch is not None else None
        settings = replace(settings, seq_len=tokens.window_length(None, max_positions))
    tokenizer = settings.tokenizer
    if tokenizer is None and settings.data is not None and tokens.is_text(settings.data):
        tokenizer = tokens.find_tokenizer(c.path for c in ckpts)
    return settings, tokenizer


class Probe:
    """Probe batches, from a file (loaded once) or a user function (called per pass).

    ``found`` says how a file nobody named was found (``beside the checkpoints``).
    """

    def __init__(
        self, s: Any, found: str | None = None, tokenizer: Path | None = None
    ) -> None:
        self.s = s
        self.found = found
        self.data = None
        self.tokenizer = tokenizer
        if s.data is not None and tokens.is_text(s.data):
            self.data = tokens.text_probe(
                s.data, tokenizer, tokens.window_length(s.seq_len, None), s.samples
            )
        elif s.data is not None:
            self.data = probes.load_probe(
                s.data, inputs=s.inputs, targets=s.targets, mask=s.mask, samples=s.samples
            )

    def describe(self) -> dict[str, Any]:
        if self.data is not None:
            return {
                "path": str(self.data.path),
                "sha256": self.data.sha256,
                "samples": self.data.n,
                "inputs": self.data.inputs or self.s.inputs,
                "targets": self.data.targets or self.s.targets,
                **({"found": self.found} if self.found else {}),
                **({"tokenizer": str(self.tokenizer)} if tokens.is_text(self.data.path) else {}),
            }
        return {"source": self.s.source, "sha256": None, "samples": self.s.samples}

    def n_batches(self) -> int | None:
        """Batches per pass, when known in advance (a probe file)."""
        if self.data is None:
            return None
        return -(-self.data.n // self.s.batch_size)

    def batches(self) -> Iterator[probes.Batch]:
        if self.data is not None:
            return probes.iter_batches(self.data, self.s.batch_size)
        assert self.s.source is not None
        return probes.source_batches(
            self.s.source,
            base_dir=self.s.base_dir,
            batch_size=self.s.batch_size,
            samples=self.s.samples,
        )
