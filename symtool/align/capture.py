"""Run probe batches through a model and stream per-layer moment sums from hooks.

docs/theory.md §1-2. Per captured layer and sample row: ``h_a`` = the layer input
(conv: the im2col patch of one output position), ``h_b = W h_a`` = the output minus bias,
``g_b`` = gradient of the sum-reduced loss w.r.t. the output (read by a tensor hook
registered on the output inside the forward hook), and the local ``g_a = g_b W``. Rows feed
:class:`~symtool.align.moments.LayerAccumulator`; nothing per-sample is stored.

One forward and one backward per batch, in eval mode, with parameters frozen: gradients
reach the hooked outputs through leaf copies of the captured layers' own inputs, so no
parameter gradient is ever computed. Hooks are removed and the model's ``requires_grad``
flags and training mode restored in ``finally``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from symtool.align.moments import LayerAccumulator, LayerMatrices
from symtool.align.rows import as_rows, chunk, im2col, row_keep
from symtool.errors import AnalysisError, ProbeError
from symtool.inputs.models import LayerRef
from symtool.inputs.probes import Batch, Inputs

Tensor = torch.Tensor

# --------------------------------------------------------------------------- records
@dataclass
class CaptureResult:
    """What one capture run produced.

    Attributes:
        layers: finished matrices per layer name, for layers that did not fail.
        failed: reason per layer name that produced no matrices (non-finite values, never
            called, mask mismatch, ...).
        n_samples: samples (first axis of the inputs) seen.
        n_batches: batches seen.
        recipe: ``"paper"`` or ``"raw"``.
        sums: the streaming sums per layer (mergeable with another run's, see :meth:`merge`).
        weights: ``W`` per layer as float64, for re-finishing merged sums.
    """

    layers: dict[str, LayerMatrices]
    failed: dict[str, str]
    n_samples: int
    n_batches: int
    recipe: str
    sums: dict[str, LayerAccumulator] = field(repr=False)
    weights: dict[str, Tensor] = field(repr=False)

    def merge(self, other: CaptureResult) -> CaptureResult:
        """Combine two runs over different data (shards) into the result of both."""
        sums: dict[str, LayerAccumulator] = {}
        for name, acc in self.sums.items():
            merged = LayerAccumulator(acc.recipe, raw_too=acc.raw_too, gemm_dtype=acc.gemm_dtype)
            merged.merge(acc)
            if name in other.sums:
                merged.merge(other.sums[name])
            sums[name] = merged
        for name, acc in other.sums.items():
            if name not in sums:
                sums[name] = acc
        failed = {**other.failed, **self.failed}
        weights = {**other.weights, **self.weights}
        return _finish(
            sums,
            weights,
            failed,
            self.n_samples + other.n_samples,
            self.n_batches + other.n_batches,
            self.recipe,
        )

    def take(self, name: str) -> LayerMatrices | None:
        """Finish one layer's sums now and drop them (a run with ``finish=False``).

        Returns ``None`` (with the reason in :attr:`failed`) for a failed layer. The layer's
        accumulator is released, so a caller that analyses and frees each layer in turn
        holds the sums plus one layer's matrices, never every layer's matrices at once.
        """
        if name in self.layers:
            return self.layers.pop(name)
        if name in self.failed:
            return None
        acc = self.sums.pop(name)
        try:
            return acc.finish(self.weights[name], consume=True)
        except AnalysisError as exc:
            self.failed[name] = exc.message
            return None


@dataclass(eq=False)
class _Call:
    """One forward call of a layer, waiting for its output gradient."""

    inp: Tensor
    out: Tensor
    in_version: int
    out_version: int
    keep: Tensor | None
    done: bool = False


@dataclass(eq=False)
class _Layer:
    """Per-layer capture state."""

    ref: LayerRef
    acc: LayerAccumulator
    W: Tensor
    bias: Tensor | None
    failure: str | None = None
    calls: int = 0
    pending: list[_Call] = field(default_factory=list)


# --------------------------------------------------------------------------- capture
def capture(
    model: nn.Module,
    layers: list[LayerRef],
    batches: Iterable[Batch],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    *,
    recipe: str = "paper",
    raw_too: bool = False,
    device: str | torch.device = "cpu",
    gemm_dtype: torch.dtype = torch.float64,
    finish: bool = True,
) -> CaptureResult:
    """Stream the per-layer moments of docs/theory.md §1-2 over all batches.

    Args:
        model: the model (moved to ``device``; left there, in its original mode and
            ``requires_grad`` state).
        layers: from :func:`symtool.inputs.models.select_layers`.
        batches: probe batches; floating inputs are cast to the model's floating dtype.
        loss_fn: returns the **sum** over loss terms
            (see :func:`symtool.inputs.probes.resolve_loss`).
        recipe: ``"paper"`` (normalised rows, centred) or ``"raw"`` (uncentred).
        raw_too: also accumulate raw second moments (identity checks of ``--verify``).
        device: where the model runs and the sums live.
        gemm_dtype: dtype of the per-batch products (sums are always float64).
        finish: finish every layer's matrices now; ``False`` leaves that to
            :meth:`CaptureResult.take`, one layer at a time.

    Raises:
        ProbeError: the model cannot run on a batch, or the loss is not a scalar.
    """
    device = torch.device(device)
    model.to(device)
    fdtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    states = {
        ref.name: _Layer(
            ref,
            LayerAccumulator(recipe, raw_too=raw_too, gemm_dtype=gemm_dtype),
            ref.weight_matrix().to(gemm_dtype),
            None if ref.module.bias is None else ref.module.bias.detach().to(gemm_dtype),
        )
        for ref in layers
    }
    leaves: list[Tensor] = []
    mask_box: list[Tensor | None] = [None]
    handles = []
    flags = {p: p.requires_grad for p in model.parameters()}
    was_training = model.training
    n_samples = n_batches = 0
    try:
        model.eval()
        for p in flags:
            p.requires_grad_(False)
        for st in states.values():
            handles.append(st.ref.module.register_forward_pre_hook(partial(_pre_hook, leaves)))
            handles.append(st.ref.module.register_forward_hook(partial(_fwd_hook, st, mask_box)))
        with torch.enable_grad():
            for batch in batches:
                x = _to(batch.x, device, fdtype)
                y = batch.y.to(device)
                mask_box[0] = None if batch.mask is None else batch.mask.to(device)
                leaves.clear()
                loss = _loss(model, x, y, loss_fn)
                if leaves and loss.requires_grad:
                    torch.autograd.grad(loss, leaves, allow_unused=True)
                del loss
                for st in states.values():
                    for call in st.pending:
                        if not call.done:  # output did not reach the loss: g_b = 0
                            _process(st, call, torch.zeros_like(call.out))
                    st.pending.clear()
                n_samples += _batch_size(x)
                n_batches += 1
    finally:
        for h in handles:
            h.remove()
        leaves.clear()
        for st in states.values():
            st.pending.clear()
        for p, flag in flags.items():
            p.requires_grad_(flag)
        model.train(was_training)
    for st in states.values():
        if st.failure is None and st.calls == 0:
            st.failure = "never called during the forward pass (weights used functionally?)"
    sums = {name: st.acc for name, st in states.items()}
    weights = {ref.name: ref.weight_matrix().to(torch.float64, copy=True) for ref in layers}
    failed = {name: st.failure for name, st in states.items() if st.failure is not None}
    return _finish(sums, weights, failed, n_samples, n_batches, recipe, finish=finish)


def all_reduce(
    result: CaptureResult, layers: list[LayerRef], world: Any, *, finish: bool = True
) -> CaptureResult:
    """Sum a data-parallel run's sums over all ranks and finish them (torch.distributed).

    Every rank calls this with the same layers; ranks that saw no batch contribute zeros.
    A layer fails when it failed on any rank that saw data.
    """
    from symtool import distributed

    device = next(iter(result.weights.values())).device if result.weights else "cpu"
    for ref in layers:
        acc = result.sums[ref.name]
        if not acc.allocated:
            acc.allocate(ref.d_in, ref.d_out, device)
        distributed.all_reduce_(acc.sums())
    counts = torch.tensor([result.n_samples, result.n_batches], dtype=torch.int64, device=device)
    distributed.all_reduce_([counts])
    failed: dict[str, str] = {}
    gathered = distributed.all_gather((result.failed, result.n_batches), world)
    for rank_failed, rank_batches in gathered:
        if rank_batches:
            for name, why in rank_failed.items():
                failed.setdefault(name, why)
    return _finish(
        result.sums,
        result.weights,
        failed,
        int(counts[0]),
        int(counts[1]),
        result.recipe,
        finish=finish,
    )


def _finish(
    sums: Mapping[str, LayerAccumulator],
    weights: Mapping[str, Tensor],
    failed: Mapping[str, str],
    n_samples: int,
    n_batches: int,
    recipe: str,
    *,
    finish: bool = True,
) -> CaptureResult:
    """Finish every non-failed accumulator (unless ``finish`` is false: then
    :meth:`CaptureResult.take` does, per layer); layers whose sums cannot be finished fail."""
    done: dict[str, LayerMatrices] = {}
    bad = dict(failed)
    for name, acc in sums.items():
        if name in bad or not finish:
            continue
        try:
            done[name] = acc.finish(weights[name])
        except AnalysisError as exc:
            bad[name] = exc.message
    return CaptureResult(done, bad, n_samples, n_batches, recipe, dict(sums), dict(weights))


def _loss(
    model: nn.Module, x: Inputs, y: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor]
) -> Tensor:
    """Forward one batch and return its scalar loss."""
    try:
        if isinstance(x, Tensor):
            out = model(x)
        elif isinstance(x, dict):
            out = model(**x)
        else:
            out = model(*x)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ProbeError(
            f"model forward failed on a probe batch: {type(exc).__name__}: {first}"
        ) from exc
    if isinstance(out, Mapping) and "logits" in out:
        out = out["logits"]
    elif isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not isinstance(out, Tensor):
        raise ProbeError(f"model returned {type(out).__name__}; expected a tensor of outputs")
    try:
        loss = loss_fn(out, y)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ProbeError(
            f"loss failed on output {tuple(out.shape)} and target {tuple(y.shape)}: {first}"
        ) from exc
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ProbeError("the loss must return one number: the sum over its loss terms")
    return loss.reshape(())


def _to(x: Inputs, device: torch.device, fdtype: torch.dtype | None) -> Inputs:
    """Move inputs to the device, casting floating tensors to the model's dtype."""
    if isinstance(x, Tensor):
        dtype = fdtype if fdtype is not None and x.is_floating_point() else None
        return x.detach().to(device=device, dtype=dtype)
    if isinstance(x, dict):
        return {k: _to(v, device, fdtype) for k, v in x.items()}
    return tuple(_to(v, device, fdtype) for v in x)


def _batch_size(x: Inputs) -> int:
    """Samples in a batch: the first axis of the first input tensor."""
    if isinstance(x, Tensor):
        return x.shape[0] if x.ndim else 1
    first = next(iter(x.values())) if isinstance(x, dict) else x[0]
    return _batch_size(first)


# --------------------------------------------------------------------------- hooks
def _pre_hook(leaves: list[Tensor], module: nn.Module, args: tuple[object, ...]) -> object:
    """Give the layer a leaf copy of its input so its output requires grad (params frozen)."""
    if args and isinstance(args[0], Tensor):
        x = args[0]
        if x.is_floating_point() and not x.requires_grad:
            leaf = x.detach().requires_grad_()
            leaves.append(leaf)
            return (leaf, *args[1:])
    return None


def _fwd_hook(
    st: _Layer, mask_box: list[Tensor | None], module: nn.Module, args: tuple, out: object
) -> None:
    """Record the call's input and output and register the gradient hook on the output."""
    st.calls += 1
    if st.failure is not None:
        return
    if not args or not isinstance(args[0], Tensor) or not isinstance(out, Tensor):
        st.failure = "called without a positional input tensor or returned a non-tensor"
        return
    if not torch.is_grad_enabled():
        st.failure = "the layer ran with gradients disabled (torch.no_grad inside the model)"
        return
    inp = args[0]
    conv = st.ref.kind != "linear"
    unbatched = conv and inp.ndim == len(module.kernel_size) + 1
    if conv:
        lead = (1 if unbatched else out.shape[0], *out.shape[-len(module.kernel_size) :])
    else:
        lead = tuple(inp.shape[:-1])
    try:
        keep = row_keep(mask_box[0], tuple(lead))
    except ValueError as exc:
        st.failure = str(exc)
        return
    call = _Call(inp.detach(), out.detach(), inp._version, out._version, keep)
    st.pending.append(call)
    if out.requires_grad:
        out.register_hook(partial(_grad_hook, st, call))


def _grad_hook(st: _Layer, call: _Call, grad: Tensor) -> None:
    """Tensor hook on a layer output: process the call with its gradient."""
    _process(st, call, grad)


def _process(st: _Layer, call: _Call, grad: Tensor) -> None:
    """Turn one call's input, output and output gradient into rows and add them."""
    if call.done or st.failure is not None:
        call.done = True
        return
    call.done = True
    try:
        with torch.no_grad():
            if call.inp._version != call.in_version:
                raise ValueError("the layer input was modified in place after the layer ran")
            inp, out, grad = call.inp, call.out, grad
            if st.ref.kind != "linear" and inp.ndim == len(st.ref.module.kernel_size) + 1:
                inp, out, grad = inp.unsqueeze(0), out.unsqueeze(0), grad.unsqueeze(0)
            out_ok = call.out._version == call.out_version
            if out.ndim < 2:  # one unbatched vector: a single row
                _add_rows(st, call, inp, out, grad, slice(None), out_ok)
                return
            lead = out.shape[1:-1] if st.ref.kind == "linear" else out.shape[2:]
            width = max(st.ref.d_in, st.ref.d_out)
            step = chunk(out.shape[0], math.prod(lead) * width)
            for start in range(0, out.shape[0], step):
                _add_rows(st, call, inp, out, grad, slice(start, start + step), out_ok)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        st.failure = first


def _add_rows(
    st: _Layer, call: _Call, inp: Tensor, out: Tensor, grad: Tensor, sl: slice, out_ok: bool
) -> None:
    """Rows of one chunk of samples into the layer's accumulator."""
    ref, dtype = st.ref, st.W.dtype
    batched = out.ndim > 1
    if batched:
        inp, out, grad = inp[sl], out[sl], grad[sl]
    owned: set[str] = set()
    if ref.kind == "linear":
        h_a, own = as_rows(inp, ref.d_in, dtype)
        out_rows_src, grad_src = out, grad
    else:
        h_a, own = as_rows(im2col(ref.module, inp), ref.d_in, dtype)
        out_rows_src, grad_src = out.movedim(1, -1), grad.movedim(1, -1)
    if own:
        owned.add("h_a")
    keep = call.keep
    if keep is not None and batched:
        per = h_a.shape[0] // max(out.shape[0], 1)
        keep = keep[sl.start * per : sl.start * per + h_a.shape[0]]
    if keep is not None:
        h_a = h_a[keep]
        owned.add("h_a")
    if out_ok:
        h_b, own = as_rows(out_rows_src, ref.d_out, dtype, st.bias)
        if keep is not None:
            h_b, own = h_b[keep], True
    else:  # output modified in place later (e.g. ReLU(inplace=True)): recompute W h_a
        h_b, own = h_a @ st.W.T, True
    if own:
        owned.add("h_b")
    g_b, own = as_rows(grad_src, ref.d_out, dtype)
    if keep is not None:
        g_b, own = g_b[keep], True
    if own:
        owned.add("g_b")
    g_a = g_b @ st.W
    owned.add("g_a")
    st.acc.add(h_a, h_b, g_b, g_a, owned=frozenset(owned))
