"""Probe data (inputs, targets, optional row mask), its batches, and the loss.

docs/theory.md §1: per-sample gradients come from one backward pass of the loss with
``reduction="sum"``, so every loss here returns the **sum** over its terms; the gradient a
hook reads at a layer output is then the gradient of that sample's own loss.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from symtool.errors import ModelError, ProbeError

Tensor = torch.Tensor
Inputs = Tensor | tuple[Tensor, ...] | dict[str, Tensor]
"""What a model is called with: ``model(x)``, ``model(*x)`` or ``model(**x)``."""

LossFn = Callable[[Tensor, Tensor], Tensor]
PROBE_SUFFIXES = (".safetensors", ".pt", ".pth", ".npz")
PROBE_FILES = tuple(f"probe{suffix}" for suffix in (*PROBE_SUFFIXES, ".txt", ".jsonl"))
"""Names a probe file beside the checkpoints may have (:func:`probe_beside`)."""
FOUND_BESIDE = "beside the checkpoints"
"""How a probe file found by :func:`probe_beside` is described in reports."""
_STEP_FOLDER = re.compile(r"checkpoint[-_]\d+", re.IGNORECASE)


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Batch:
    """One batch of probe rows.

    Attributes:
        x: model input (a tensor, a tuple of positional tensors or a dict of keyword tensors).
        y: targets for the loss.
        mask: optional boolean row mask (``True`` = keep); see docs/capture.md.
    """

    x: Inputs
    y: Tensor
    mask: Tensor | None = None

    @property
    def size(self) -> int:
        """Number of samples (first axis of the inputs)."""
        return _first_tensor(self.x).shape[0]


@dataclass(frozen=True)
class ProbeData:
    """Probe tensors read from one file.

    Attributes:
        path: the file.
        sha256: hex digest of the whole file (recorded in reports).
        x, y: inputs and targets, first axis = samples.
        mask: optional boolean mask, first axis = samples.
        keys: every tensor name the file holds.
        inputs, targets: what was read as inputs and targets when the names were not
            given (token probes: ``input_ids``, ``labels``), else None.
    """

    path: Path
    sha256: str
    x: Inputs
    y: Tensor
    mask: Tensor | None
    keys: tuple[str, ...]
    inputs: str | None = None
    targets: str | None = None

    @property
    def n(self) -> int:
        """Number of samples."""
        return _first_tensor(self.x).shape[0]


# --------------------------------------------------------------------------- loading
def load_probe(
    path: str | Path,
    *,
    inputs: str = "x",
    targets: str = "y",
    mask: str | None = None,
    samples: int | None = None,
) -> ProbeData:
    """Read probe inputs, targets and an optional mask from one file.

    Args:
        path: a ``.safetensors``, ``.pt``/``.pth`` (loaded with ``weights_only=True``) or
            ``.npz`` file holding named tensors.
        inputs, targets: names of the input and target tensors.
        mask: name of a boolean (or 0/1) mask tensor, if any.
        samples: keep only the first N samples (all when the file has fewer).

    Raises:
        ProbeError: unreadable file, unknown format, a missing key (all keys listed), or
            tensors whose first axes disagree.
    """
    path = Path(path)
    if not path.is_file():
        raise ProbeError("probe file not found", path=path)
    suffix = path.suffix.lower()
    if suffix not in PROBE_SUFFIXES:
        raise ProbeError(
            f"unknown probe format {suffix or '(none)'!r}; expected one of "
            f"{', '.join(PROBE_SUFFIXES)}",
            path=path,
        )
    if samples is not None and samples < 1:
        raise ProbeError(f"samples must be at least 1, got {samples}", path=path)
    wanted = [inputs, targets] + ([mask] if mask else [])
    keys = _read_tensors(path, suffix, [], None)[0]  # names only (a .pt is read whole)
    if inputs not in keys and TOKEN_INPUTS[0] in keys:
        return _token_probe(path, suffix, keys, targets, mask, samples)
    keys, tensors = _read_tensors(path, suffix, wanted, samples)
    x, y = tensors[inputs], tensors[targets]
    m = tensors.get(mask) if mask else None
    if samples is not None:
        x, y = x[:samples], y[:samples]
        m = None if m is None else m[:samples]
    for name, t in ((targets, y), (mask, m)):
        if t is not None and (t.ndim == 0 or x.ndim == 0 or t.shape[0] != x.shape[0]):
            raise ProbeError(
                f"{name!r} has shape {tuple(t.shape)} but {inputs!r} has {tuple(x.shape)}; "
                "their first axes (samples) must agree",
                path=path,
            )
    if m is not None:
        m = _as_bool_mask(m, f"mask {mask!r}", path)
    return ProbeData(path, _sha256(path), x, y, m, keys)


TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
"""Keyword inputs of a token probe (the model is called ``model(**inputs)``)."""


def _token_probe(
    path: Path,
    suffix: str,
    keys: tuple[str, ...],
    targets: str,
    mask: str | None,
    samples: int | None,
) -> ProbeData:
    """A token probe: ``input_ids`` (and ``attention_mask``, ``token_type_ids``) as the
    model's keyword inputs; targets ``labels`` if present (or the ``--targets`` key), else
    ``input_ids`` with ``-100`` at padded positions; rows kept where the attention mask
    (or the ``--mask`` key) is 1, so padding never becomes a row."""
    label_key = targets if targets in keys else "labels" if "labels" in keys else None
    names = [k for k in TOKEN_INPUTS if k in keys]
    wanted = names + ([label_key] if label_key else []) + ([mask] if mask else [])
    _, t = _read_tensors(path, suffix, list(dict.fromkeys(wanted)), samples)
    if samples is not None:
        t = {k: v[:samples] for k, v in t.items()}
    ids = t["input_ids"]
    if ids.ndim != 2 or ids.is_floating_point():
        raise ProbeError(f"input_ids must be (sequences, positions) integers, got {ids.dtype} "
                         f"{tuple(ids.shape)}", path=path)
    for k, v in t.items():
        if tuple(v.shape) != tuple(ids.shape):
            raise ProbeError(f"{k!r} has shape {tuple(v.shape)}, input_ids {tuple(ids.shape)}",
                             path=path)
    attn = t.get("attention_mask")
    keep = _as_bool_mask(t[mask], f"mask {mask!r}", path) if mask else (
        None if attn is None else _as_bool_mask(attn, "attention_mask", path))
    if label_key is not None:
        y = t[label_key].long()
    else:
        y = ids.long() if keep is None else ids.long().masked_fill(~keep, -100)
    x = {k: t[k] for k in names}
    return ProbeData(path, _sha256(path), x, y, keep, keys, "input_ids", label_key or "input_ids")


def probe_beside(checkpoints: Iterable[Path]) -> Path | None:
    """The probe file beside the checkpoints, when no ``--data`` names one.

    Each checkpoint's folder is searched for :data:`PROBE_FILES` (the folder of a file; a
    Hugging Face style ``checkpoint-N/`` folder itself, then its parent, where the run's
    files usually sit). Discovery never takes these names for checkpoints
    (docs/checkpoints.md).

    Args:
        checkpoints: the paths of the checkpoints (files or folders).

    Returns:
        The one file found, or None when there is none.

    Raises:
        ProbeError: a folder holds several probe files, or checkpoints in different
            folders have different ones: ``--data`` must choose.
    """
    found: dict[Path, Path] = {}
    for ckpt in checkpoints:
        folder = ckpt if ckpt.is_dir() else ckpt.parent
        places = [folder]
        if ckpt.is_dir() or _STEP_FOLDER.fullmatch(folder.name):
            places.append(folder.parent)
        for place in places:
            hits = [place / name for name in PROBE_FILES if (place / name).is_file()]
            if len(hits) > 1:
                names = ", ".join(h.name for h in hits)
                raise ProbeError(
                    f"several probe files beside the checkpoints ({names}); "
                    "pass --data to choose one",
                    path=place,
                )
            if hits:
                found.setdefault(hits[0].resolve(), hits[0])
                break
    if len(found) > 1:
        raise ProbeError(
            "checkpoints in different folders have different probe files ("
            + ", ".join(str(p) for p in found.values())
            + "); pass --data to choose one"
        )
    return next(iter(found.values()), None)


def _read_tensors(
    path: Path, suffix: str, wanted: list[str], samples: int | None
) -> tuple[tuple[str, ...], dict[str, Tensor]]:
    """All key names, and the wanted tensors (only the first ``samples`` rows if possible)."""
    try:
        if suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                keys = tuple(f.keys())
                _check_keys(wanted, keys, path)
                out = {}
                for k in wanted:
                    sl = f.get_slice(k)
                    shape = sl.get_shape()
                    out[k] = sl[:samples] if samples is not None and shape else f.get_tensor(k)
                return keys, out
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                keys = tuple(data.files)
                _check_keys(wanted, keys, path)
                return keys, {k: _from_numpy(data[k], k, path) for k in wanted}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except ProbeError:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ProbeError(f"cannot read probe: {type(exc).__name__}: {first}", path=path) from exc
    if not isinstance(obj, Mapping):
        raise ProbeError(
            f"a .pt probe must hold a dict of tensors, found {type(obj).__name__}", path=path
        )
    keys = tuple(str(k) for k in obj)
    _check_keys(wanted, keys, path)
    out = {}
    for k in wanted:
        if not isinstance(obj[k], Tensor):
            raise ProbeError(f"{k!r} is a {type(obj[k]).__name__}, not a tensor", path=path)
        out[k] = obj[k]
    return keys, out


def _check_keys(wanted: list[str], keys: tuple[str, ...], path: Path) -> None:
    """Raise one error naming every missing key and every available one."""
    missing = [k for k in wanted if k not in keys]
    if missing:
        raise ProbeError(
            f"missing key(s) {', '.join(map(repr, missing))}; available: "
            f"{', '.join(map(repr, keys)) or '(none)'}",
            path=path,
        )


def _from_numpy(arr: np.ndarray, key: str, path: Path) -> Tensor:
    """A tensor from a numeric or boolean numpy array."""
    if arr.dtype.kind not in "biuf":
        raise ProbeError(f"{key!r} has non-numeric dtype {arr.dtype}", path=path)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _as_bool_mask(m: Tensor, what: str, path: object | None) -> Tensor:
    """A boolean mask from a bool tensor or one holding only 0 and 1."""
    if m.dtype == torch.bool:
        return m
    if m.is_complex() or not bool(((m == 0) | (m == 1)).all()):
        raise ProbeError(f"{what} must be boolean or hold only 0 and 1 ({m.dtype})", path=path)
    return m.bool()


def _sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- batches
def iter_batches(probe: ProbeData, batch_size: int) -> Iterator[Batch]:
    """Consecutive batches of ``batch_size`` samples (the last may be smaller); views."""
    if batch_size < 1:
        raise ProbeError(f"batch size must be at least 1, got {batch_size}", path=probe.path)
    for i in range(0, probe.n, batch_size):
        sl = slice(i, i + batch_size)
        x = probe.x
        x = {k: v[sl] for k, v in x.items()} if isinstance(x, dict) else x[sl]
        yield Batch(x, probe.y[sl], None if probe.mask is None else probe.mask[sl])


def source_batches(
    spec: str,
    *,
    base_dir: Path | None = None,
    batch_size: int | None = None,
    samples: int | None = None,
) -> Iterator[Batch]:
    """Batches from a user ``module:function`` (token streams, image folders, ...).

    The function is called with ``batch_size=`` when it accepts that keyword (and a batch
    size is given), else with no arguments, and must return an iterable of ``(x, y)`` or
    ``(x, y, mask)`` tuples or :class:`Batch` objects. ``x`` may be a tensor, a tuple of
    tensors (``model(*x)``) or a dict (``model(**x)``).

    Args:
        spec: ``pkg.module:function`` or ``path/file.py:function``.
        base_dir: folder a file path is relative to.
        batch_size: passed on when the function accepts it.
        samples: stop after this many samples (the last batch is cut to fit).

    Raises:
        ProbeError: the function cannot be imported, or yields something else.
    """
    from symtool.inputs.imports import import_object

    try:
        fn = import_object(spec, base_dir)
    except ModelError as exc:
        raise ProbeError(exc.message, path=exc.path) from exc
    if not callable(fn):
        raise ProbeError(f"probe source {spec!r} is not callable")
    kwargs = {"batch_size": batch_size} if batch_size and _accepts(fn, "batch_size") else {}
    items = fn(**kwargs)
    if not isinstance(items, Iterable):
        raise ProbeError(f"probe source {spec!r} returned {type(items).__name__}, not batches")
    seen = 0
    for item in items:
        if samples is not None and seen >= samples:
            return
        batch = _as_batch(item, spec)
        if samples is not None and seen + batch.size > samples:
            batch = _head(batch, samples - seen)
        seen += batch.size
        yield batch


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` takes a keyword argument ``name`` (or ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _as_batch(item: object, spec: str) -> Batch:
    """A :class:`Batch` from what a user source yields."""
    if isinstance(item, Batch):
        return item
    if isinstance(item, (tuple, list)) and len(item) in (2, 3):
        x, y = item[0], item[1]
        m = item[2] if len(item) == 3 else None
        if isinstance(x, list):
            x = tuple(x)
        try:
            _first_tensor(x)
        except TypeError as exc:
            raise ProbeError(f"probe source {spec!r}: {exc}") from exc
        if not isinstance(y, Tensor) or (m is not None and not isinstance(m, Tensor)):
            raise ProbeError(f"probe source {spec!r} yielded a target or mask that is no tensor")
        return Batch(x, y, None if m is None else _as_bool_mask(m, "mask", spec))
    raise ProbeError(
        f"probe source {spec!r} yielded {type(item).__name__}; expected (x, y) or (x, y, mask)"
    )


def _head(batch: Batch, k: int) -> Batch:
    """The first ``k`` samples of a batch."""
    x = batch.x
    if isinstance(x, Tensor):
        x = x[:k]
    elif isinstance(x, dict):
        x = {name: t[:k] for name, t in x.items()}
    else:
        x = tuple(t[:k] for t in x)
    return Batch(x, batch.y[:k], None if batch.mask is None else batch.mask[:k])


def _first_tensor(x: Inputs) -> Tensor:
    """The tensor whose first axis counts the samples."""
    if isinstance(x, Tensor):
        return x
    values = list(x.values()) if isinstance(x, dict) else list(x)
    if not values or not all(isinstance(t, Tensor) for t in values):
        raise TypeError("inputs must be a tensor, a tuple of tensors or a dict of tensors")
    return values[0]


# --------------------------------------------------------------------------- losses
def _class_layout(output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Flatten class-last logits ``(..., C)`` with index targets ``(...)`` into rows.

    Class indices stored as floats are cast to ``long``. Other layouts (``(B, C, d…)`` with
    ``(B, d…)``, or soft targets shaped like the output) are left for PyTorch to check.
    """
    if output.ndim == target.ndim + 1 and output.shape[:-1] == target.shape:
        if target.is_floating_point():
            target = target.long()
        return output.reshape(-1, output.shape[-1]), target.reshape(-1)
    if output.ndim > 2 and target.shape == output.shape and target.is_floating_point():
        return output.reshape(-1, output.shape[-1]), target.reshape(-1, target.shape[-1])
    if output.ndim == target.ndim + 1 and target.is_floating_point():
        target = target.long()
    return output, target


def _like_output(output: Tensor, target: Tensor) -> Tensor:
    """Target in the output's dtype, reshaped to it when only the shape differs."""
    target = target.to(output.dtype)
    if target.shape != output.shape and target.numel() == output.numel():
        target = target.reshape(output.shape)
    return target


def cross_entropy_sum(output: Tensor, target: Tensor) -> Tensor:
    """Summed cross-entropy; class axis last (tokens) or 1; ``ignore_index=-100`` skipped."""
    out, tgt = _class_layout(output, target)
    return F.cross_entropy(out, tgt, reduction="sum", ignore_index=-100)


def causal_lm_sum(output: Tensor, target: Tensor) -> Tensor:
    """Summed next-token cross-entropy of a causal language model.

    ``output`` is ``(B, T, V)`` logits, ``target`` the ``(B, T)`` labels in the Hugging
    Face convention (``labels = input_ids``, ``-100`` where no loss is wanted): the logits
    at position t are scored against the label at t+1, so the last position has no term.
    """
    if output.ndim != 3 or tuple(target.shape) != tuple(output.shape[:2]):
        raise ValueError(
            f"causal_lm needs (batch, positions, vocab) logits and (batch, positions) labels, "
            f"got {tuple(output.shape)} and {tuple(target.shape)}"
        )
    logits = output[:, :-1, :].reshape(-1, output.shape[-1])
    labels = target[:, 1:].reshape(-1).long()
    return F.cross_entropy(logits, labels, reduction="sum", ignore_index=-100)


def nll_sum(output: Tensor, target: Tensor) -> Tensor:
    """Summed negative log-likelihood of log-probabilities; layouts as cross-entropy."""
    out, tgt = _class_layout(output, target)
    return F.nll_loss(out, tgt, reduction="sum", ignore_index=-100)


def mse_sum(output: Tensor, target: Tensor) -> Tensor:
    """Summed squared error ``Σ (output − target)²``."""
    return F.mse_loss(output, _like_output(output, target), reduction="sum")


def bce_sum(output: Tensor, target: Tensor) -> Tensor:
    """Summed binary cross-entropy on logits."""
    return F.binary_cross_entropy_with_logits(output, _like_output(output, target), reduction="sum")


def l1_sum(output: Tensor, target: Tensor) -> Tensor:
    """Summed absolute error."""
    return F.l1_loss(output, _like_output(output, target), reduction="sum")


def huber_sum(output: Tensor, target: Tensor) -> Tensor:
    """Summed Huber loss with ``delta = 1``."""
    return F.huber_loss(output, _like_output(output, target), reduction="sum", delta=1.0)


LOSSES: dict[str, LossFn] = {
    "cross_entropy": cross_entropy_sum,
    "causal_lm": causal_lm_sum,
    "masked_lm": cross_entropy_sum,
    "mse": mse_sum,
    "bce": bce_sum,
    "nll": nll_sum,
    "l1": l1_sum,
    "huber": huber_sum,
}
"""Built-in losses by name, all sum-reduced."""


def resolve_loss(spec: str, *, base_dir: Path | None = None) -> LossFn:
    """A sum-reduced loss ``fn(output, target) -> scalar`` from a name or ``module:function``.

    A user function must return the **sum** over its loss terms (``reduction="sum"``): the
    gradient at a layer output is then each sample's own gradient. A mean would scale every
    gradient by 1/(terms in the batch), which differs between batches (the last one,
    ignored tokens) and would make the streamed sums depend on the batch size.

    Raises:
        ProbeError: unknown name, or the function cannot be imported.
    """
    if spec in LOSSES:
        return LOSSES[spec]
    if ":" not in spec:
        raise ProbeError(
            f"unknown loss {spec!r}; expected one of {', '.join(LOSSES)} or module:function"
        )
    from symtool.inputs.imports import import_object

    try:
        fn = import_object(spec, base_dir)
    except ModelError as exc:
        raise ProbeError(exc.message, path=exc.path) from exc
    if not callable(fn):
        raise ProbeError(f"loss {spec!r} is not callable")
    return fn
