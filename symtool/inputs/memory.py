"""Checkpoints and probe data that live in memory: a model's state dict, tensors, loaders.

The Python API and the training callbacks analyse a live model without saving it: its
state dict becomes a :class:`MemoryCheckpoint` (hashed like a file, so a report entry
still names exactly which weights it describes), and probe data given as a tensor, a dict
of tensors, a ``DataLoader`` or any iterable of batches becomes a :class:`MemoryProbe`
yielding the same :class:`~symtool.inputs.probes.Batch` objects a probe file does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from symtool.errors import ProbeError
from symtool.inputs import checkpoints as ck
from symtool.inputs.probes import Batch, _as_batch, _head

Tensor = torch.Tensor


def tensors_sha256(tensors: Mapping[str, Tensor]) -> str:
    """A digest of named tensors: names, dtypes, shapes and bytes, in sorted name order.

    Two state dicts get the same digest exactly when they hold the same values bit for bit
    under the same names (the digest of a file, by contrast, also sees its layout).
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        flat = t.to("cpu").contiguous().reshape(-1)
        if flat.numel():
            h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class MemoryCheckpoint(ck.Checkpoint):
    """A state dict held in memory, standing where a checkpoint file would.

    ``path`` is a label such as ``<model>`` (reports show it as the entry's path); the
    tensors are read as they are, on their device, when the runner loads the checkpoint.
    """

    tensors: Mapping[str, Tensor] = field(default_factory=dict, compare=False, repr=False)

    @property
    def size(self) -> int:
        """Bytes of its tensors."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def sha256(self) -> str:
        """:func:`tensors_sha256` of its tensors."""
        return tensors_sha256(self.tensors)

    def load(self) -> ck.LoadedCheckpoint:
        """Its tensors (detached; ``module.``/``_orig_mod.`` wrappers removed as for files)."""
        tensors = {k: v.detach() for k, v in self.tensors.items() if isinstance(v, Tensor)}
        dropped = tuple(k for k in self.tensors if k not in tensors)
        prefix = ck.strip_wrapper_prefixes(list(tensors))
        if prefix:
            tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
        return ck.LoadedCheckpoint(tensors, None, prefix, dropped, None)


def memory_checkpoint(
    tensors: Mapping[str, Tensor], *, step: int | None = None, label: str = "model"
) -> MemoryCheckpoint:
    """A :class:`MemoryCheckpoint` named ``<label>`` (``<label> step N`` with a step)."""
    name = f"<{label}>" if step is None else f"<{label} step {step}>"
    return MemoryCheckpoint(Path(name), step, "memory", (), dict(tensors))


class MemoryProbe:
    """Probe batches from Python objects, with the interface of a probe file.

    Accepted ``data``:

    * a tensor: the inputs, also used as targets (a language model's token ids);
    * a tuple ``(x, y)`` or ``(x, y, mask)`` of tensors;
    * a dict of tensors holding the ``inputs``, ``targets`` and optional ``mask`` keys
      (as a probe file would);
    * a ``DataLoader`` or any other iterable of batches, each ``(x, y)``, ``(x, y, mask)``,
      a :class:`Batch` or a dict (``targets`` key → targets, ``inputs`` key → inputs, else
      every other key is a keyword input of the model). A one-shot iterator is read once
      and kept, since every analysed step needs the data again.

    Tensors are cut into batches of ``batch_size``; ``samples`` keeps the first N samples.
    """

    def __init__(
        self,
        data: Any,
        *,
        inputs: str = "x",
        targets: str = "y",
        mask: str | None = None,
        samples: int | None = None,
        batch_size: int = 256,
    ) -> None:
        self.inputs, self.targets, self.mask_key = inputs, targets, mask
        self.samples, self.batch_size = samples, batch_size
        self.tensors: dict[str, Tensor] | None = None
        self.items: Iterable[Any] | None = None
        if isinstance(data, Tensor):
            self.kind = "tensor"
            self.tensors = {"x": data, "y": data}
        elif isinstance(data, tuple) and len(data) in (2, 3) and all(
            isinstance(t, Tensor) for t in data
        ):
            self.kind = "tuple"
            self.tensors = dict(zip(("x", "y", "mask"), data, strict=False))
        elif isinstance(data, Mapping) and all(isinstance(t, Tensor) for t in data.values()):
            self.kind = "dict"
            missing = [k for k in (inputs, targets, mask) if k is not None and k not in data]
            if missing:
                raise ProbeError(
                    f"probe dict lacks {', '.join(map(repr, missing))} (keys: "
                    f"{', '.join(map(repr, data))}); name them with inputs=/targets=/mask="
                )
            self.tensors = {"x": data[inputs], "y": data[targets]}
            if mask is not None:
                self.tensors["mask"] = data[mask]
        elif isinstance(data, Iterable) and not isinstance(data, str | bytes | Mapping):
            self.kind = type(data).__name__ if type(data).__name__ == "DataLoader" else "iterable"
            # a one-shot iterator is kept as a list; iter() is never called to find out
            # (a DataLoader's iter() starts workers and draws a seed from torch's RNG)
            self.items = list(data) if isinstance(data, Iterator) else data
        else:
            raise ProbeError(
                f"cannot use {type(data).__name__} as probe data: give a file path, a tensor, "
                "a (x, y) tuple, a dict of tensors, a DataLoader or an iterable of batches"
            )
        if self.tensors is not None:
            n = self.tensors["x"].shape[0] if self.tensors["x"].ndim else 0
            for k, t in self.tensors.items():
                if t.ndim == 0 or t.shape[0] != n:
                    raise ProbeError(
                        f"probe {k} has shape {tuple(t.shape)} but the inputs have "
                        f"{tuple(self.tensors['x'].shape)}; first axes (samples) must agree"
                    )
            if "mask" in self.tensors:
                self.tensors["mask"] = self.tensors["mask"].bool()

    @property
    def source(self) -> str:
        """How the data is named in reports (``settings.source``): ``<tensor>``, ...."""
        return f"<{self.kind}>"

    @property
    def n(self) -> int | None:
        """Samples used, when known without reading the batches."""
        if self.tensors is None:
            return self.samples
        n = self.tensors["x"].shape[0]
        return n if self.samples is None else min(n, self.samples)

    def describe(self) -> dict[str, Any]:
        """The report's ``provenance.probe``: the source, a digest of tensors, samples."""
        digest = None
        if self.tensors is not None:
            digest = tensors_sha256({k: v[: self.n] for k, v in self.tensors.items()})
        return {"source": self.source, "sha256": digest, "samples": self.n}

    def n_batches(self) -> int | None:
        """Batches per pass, when known in advance (tensors, not an iterable)."""
        if self.tensors is None or self.n is None:
            return None
        return -(-self.n // self.batch_size)

    def batches(self) -> Iterator[Batch]:
        """The batches of one pass over the data."""
        if self.tensors is not None:
            t, n = self.tensors, self.n or 0
            for i in range(0, n, self.batch_size):
                sl = slice(i, min(i + self.batch_size, n))
                yield Batch(t["x"][sl], t["y"][sl], t["mask"][sl] if "mask" in t else None)
            return
        assert self.items is not None
        seen = 0
        for item in self.items:
            if self.samples is not None and seen >= self.samples:
                return
            batch = self._batch(item)
            if self.samples is not None and seen + batch.size > self.samples:
                batch = _head(batch, self.samples - seen)
            seen += batch.size
            yield batch

    def _batch(self, item: Any) -> Batch:
        if isinstance(item, Mapping):
            if self.targets not in item:
                raise ProbeError(
                    f"a probe batch (dict) lacks the targets key {self.targets!r} "
                    f"(keys: {', '.join(map(repr, item))}); name it with targets="
                )
            skip = {self.targets, self.mask_key}
            x = item[self.inputs] if self.inputs in item else {
                k: v for k, v in item.items() if k not in skip
            }
            m = item.get(self.mask_key) if self.mask_key else None
            item = (x, item[self.targets]) if m is None else (x, item[self.targets], m)
        return _as_batch(item, self.source)
