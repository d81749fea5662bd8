"""Run probe batches through a model and stream per-layer moment sums from hooks.

docs/theory.md §1-2. Per captured layer and sample row: ``h_a`` = the layer input
(conv: the im2col patch of one output position), ``h_b = W h_a`` = the output minus bias,
``g_b`` = gradient of the sum-reduced loss w.r.t. the output (read by a tensor hook
registered on the output inside the forward hook), and the local ``g_a = g_b W``. Rows feed
:class:`~symtool.align.moments.LayerAccumulator`; nothing per-sample is stored.

One forward and one backward per batch, in eval mode, with parameters frozen: an output
that would need no gradient (its inputs need none) is replaced by a copy of a leaf, where
the backward pass starts, so no parameter gradient, and no gradient of a first layer's
input, is ever computed. Hooks are removed and the model's ``requires_grad``
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

from symtool.align.agop import AgopSums
from symtool.align.collapse import ClassSums
from symtool.align.extras import Extras, Plan, directions, plan, row_labels
from symtool.align.forward import batch_size, forward_loss, to_device
from symtool.align.moments import LayerAccumulator, LayerMatrices
from symtool.align.rows import as_rows, chunk, im2col, row_keep
from symtool.errors import AnalysisError
from symtool.inputs.models import LayerRef
from symtool.inputs.probes import Batch

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
    extras: CapturedExtras | None = field(default=None, repr=False)

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


@dataclass
class CapturedExtras:
    """Sums for neural collapse and the NFA (``Extras``), per layer name.

    Attributes:
        collapse: class-wise sums of the layers whose rows carry labels.
        collapse_skipped: why a layer has no class-wise sums.
        agop: AGOP sums (output side) per layer.
        plan: the extra backward passes of the first batch (``None``: none ran).
        classifier: the layer feeding the classes (last called with ``d_out`` = classes).
        n_classes: classes of the model output (its last axis), when it has one.
        labels_reason: why no row has labels (targets not class labels), else ``None``.
    """

    collapse: dict[str, ClassSums] = field(default_factory=dict)
    collapse_skipped: dict[str, str] = field(default_factory=dict)
    agop: dict[str, AgopSums] = field(default_factory=dict)
    plan: Plan | None = None
    classifier: str | None = None
    n_classes: int | None = None
    labels_reason: str | None = None


@dataclass(eq=False)
class _Call:
    """One forward call of a layer, waiting for its output gradient."""

    inp: Tensor
    out: Tensor
    in_version: int
    out_version: int
    keep: Tensor | None
    labels: Tensor | None = None
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
    order: int | None = None
    cls: ClassSums | None = None
    cls_why: str | None = None
    agop: AgopSums | None = None
    agop_rows: list[Tensor] = field(default_factory=list)
    batch_rows: int = 0


@dataclass(eq=False)
class _Run:
    """Capture-wide state the hooks read: the batch's mask and labels, the phase."""

    extras: Extras
    mask: Tensor | None = None
    labels: Tensor | None = None
    agop_phase: bool = False
    called: int = 0
    leaves: list[Tensor] = field(default_factory=list)
    """The batch's gradient leaves: outputs that would otherwise need no gradient."""


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
    extras: Extras | None = None,
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
        extras: also stream class-wise sums (neural collapse) and run the AGOP's extra
            backward passes (NFA), docs/theory.md §3; the result's ``extras`` holds them.

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
    run = _Run(extras or Extras())
    found = CapturedExtras() if run.extras.active else None
    generator = torch.Generator().manual_seed(run.extras.seed)
    leaves = run.leaves
    handles = []
    flags = {p: p.requires_grad for p in model.parameters()}
    was_training = model.training
    n_samples = n_batches = 0
    try:
        model.eval()
        for p in flags:
            p.requires_grad_(False)
        for st in states.values():
            handles.append(st.ref.module.register_forward_hook(partial(_fwd_hook, st, run)))
        with torch.enable_grad():
            for batch in batches:
                x = to_device(batch.x, device, fdtype)
                y = batch.y.to(device)
                run.mask = None if batch.mask is None else batch.mask.to(device)
                if found is not None and run.extras.collapse:
                    run.labels, found.labels_reason = row_labels(
                        y, shift=run.extras.shift_labels
                    )
                leaves.clear()
                for st in states.values():
                    st.batch_rows = 0
                loss, out = forward_loss(model, x, y, loss_fn)
                agop = run.extras.nfa and bool(leaves) and out.requires_grad
                if leaves and loss.requires_grad:
                    torch.autograd.grad(loss, leaves, allow_unused=True, retain_graph=agop)
                del loss
                for st in states.values():
                    for call in st.pending:
                        if not call.done:  # output did not reach the loss: g_b = 0
                            _process(st, call, torch.zeros_like(call.out))
                if found is not None:
                    _first_batch(found, states, out)
                if agop:
                    assert found is not None
                    _agop_passes(states, run, found, out, leaves, generator)
                del out
                for st in states.values():
                    st.pending.clear()
                n_samples += batch_size(x)
                n_batches += 1
    finally:
        for h in handles:
            h.remove()
        leaves.clear()
        for st in states.values():
            st.pending.clear()
            st.agop_rows.clear()
        for p, flag in flags.items():
            p.requires_grad_(flag)
        model.train(was_training)
    for st in states.values():
        if st.failure is None and st.calls == 0:
            st.failure = "never called during the forward pass (weights used functionally?)"
    sums = {name: st.acc for name, st in states.items()}
    weights = {ref.name: ref.weight_matrix().to(torch.float64, copy=True) for ref in layers}
    failed = {name: st.failure for name, st in states.items() if st.failure is not None}
    if found is not None:
        _collect(found, states, failed)
    result = _finish(sums, weights, failed, n_samples, n_batches, recipe, finish=finish)
    result.extras = found
    return result


def _first_batch(found: CapturedExtras, states: dict[str, _Layer], out: Tensor) -> None:
    """After the first batch: the output's classes and the layer that feeds them."""
    if found.n_classes is not None or out.ndim < 2:
        return
    found.n_classes = int(out.shape[-1])
    feeding = [st for st in states.values() if st.order is not None
               and st.ref.d_out == found.n_classes]
    if feeding:
        found.classifier = max(feeding, key=lambda st: st.order or 0).ref.name


def _agop_passes(
    states: dict[str, _Layer],
    run: _Run,
    found: CapturedExtras,
    out: Tensor,
    leaves: list[Tensor],
    generator: torch.Generator,
) -> None:
    """The batch's extra backward passes from the output; each layer adds ``Σ g_b g_bᵀ``.

    The output-gradient hooks route every pass's rows to :meth:`_Layer.agop_rows`
    (``run.agop_phase``); a layer the output does not depend on adds zero rows.
    """
    p = plan(out, run.extras)
    if found.plan is None:
        found.plan = p
    run.agop_phase = True
    try:
        for st in states.values():
            if st.agop is None and st.failure is None:
                st.agop = AgopSums(p.method, p.passes, outputs=p.outputs)
            if st.agop is not None:  # rows of one sample share its output's vectors
                whole = len(st.pending) == 1 and st.pending[0].keep is None
                per = out.shape[0] if out.ndim >= 2 else None
                ok = whole and per and st.batch_rows % per == 0
                st.agop.rows(st.batch_rows, samples=per if ok else None)
        for i, v in enumerate(directions(out, p, generator)):
            torch.autograd.grad(
                out, leaves, grad_outputs=v, allow_unused=True, retain_graph=i < p.passes - 1
            )
            for st in states.values():
                if st.agop is None or st.failure is not None:
                    continue
                rows = st.agop_rows
                g_b = torch.cat(rows) if rows else st.W.new_zeros((st.batch_rows, st.ref.d_out))
                rows.clear()
                st.agop.add(g_b, st.W)
        for st in states.values():
            if st.agop is not None:
                st.agop.end_batch()
    finally:
        run.agop_phase = False


def _collect(found: CapturedExtras, states: dict[str, _Layer], failed: Mapping[str, str]) -> None:
    """Move the per-layer extra sums into ``found`` (failed layers keep none)."""
    for name, st in states.items():
        if name in failed:
            continue
        if st.cls is not None and st.cls_why is None:
            found.collapse[name] = st.cls
        elif st.cls_why is not None:
            found.collapse_skipped[name] = st.cls_why
        elif found.labels_reason is not None:
            found.collapse_skipped[name] = found.labels_reason
        if st.agop is not None:
            found.agop[name] = st.agop


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


# --------------------------------------------------------------------------- hooks
def _fwd_hook(
    st: _Layer, run: _Run, module: nn.Module, args: tuple, out: object
) -> Tensor | None:
    """Record the call's input and output and register the gradient hook on the output.

    With the parameters frozen, an output computed from inputs that need no gradient
    (the first layer, a layer after a frozen embedding) does not require one either: it is
    replaced by a copy of a leaf, so the backward pass starts its gradients there and never
    computes one for the layer's input. (A copy, not the leaf itself, so that a later
    in-place operation such as ``ReLU(inplace=True)`` may modify it.)
    """
    st.calls += 1
    if st.failure is not None:
        return None
    if not args or not isinstance(args[0], Tensor) or not isinstance(out, Tensor):
        st.failure = "called without a positional input tensor or returned a non-tensor"
        return None
    if not torch.is_grad_enabled():
        st.failure = "the layer ran with gradients disabled (torch.no_grad inside the model)"
        return None
    replaced = None
    if not out.requires_grad and out.is_floating_point():
        leaf = out.detach().requires_grad_()
        run.leaves.append(leaf)
        out = replaced = leaf.clone()
    inp = args[0]
    conv = st.ref.kind != "linear"
    unbatched = conv and inp.ndim == len(module.kernel_size) + 1
    if conv:
        lead = (1 if unbatched else out.shape[0], *out.shape[-len(module.kernel_size) :])
    else:
        lead = tuple(inp.shape[:-1])
    try:
        keep = row_keep(run.mask, tuple(lead))
    except ValueError as exc:
        st.failure = str(exc)
        return replaced
    if st.order is None:
        st.order, run.called = run.called, run.called + 1
    call = _Call(inp.detach(), out.detach(), inp._version, out._version, keep)
    if run.extras.collapse and run.labels is not None and st.cls_why is None:
        call.labels = _call_labels(st, run.labels, tuple(lead), conv)
    st.pending.append(call)
    if out.requires_grad:
        out.register_hook(partial(_grad_hook, st, call, run))
    return replaced


def _call_labels(st: _Layer, labels: Tensor, lead: tuple[int, ...], conv: bool) -> Tensor | None:
    """The call's labels, one per row, when its rows carry their own (else why not)."""
    if tuple(labels.shape) == lead:
        if st.cls is None:
            st.cls = ClassSums()
        return labels.reshape(-1)
    st.cls, shape = None, tuple(labels.shape)
    if conv:
        st.cls_why = f"rows are a convolution's output positions {lead}; labels are {shape}"
    else:
        st.cls_why = f"rows {lead} do not each carry a label (labels {shape})"
    return None


def _grad_hook(st: _Layer, call: _Call, run: _Run, grad: Tensor) -> None:
    """Tensor hook on a layer output: process the call with its gradient (an AGOP pass's
    gradient goes to the layer's AGOP rows instead)."""
    if run.agop_phase:
        _agop_grad(st, call, grad)
    else:
        _process(st, call, grad)


def _agop_grad(st: _Layer, call: _Call, grad: Tensor) -> None:
    """One AGOP pass's output-gradient rows of a call (masked rows dropped)."""
    if st.failure is not None or st.agop is None:
        return
    with torch.no_grad():
        if st.ref.kind != "linear":
            if grad.ndim == len(st.ref.module.kernel_size) + 1:
                grad = grad.unsqueeze(0)
            grad = grad.movedim(1, -1)
        rows, _ = as_rows(grad, st.ref.d_out, st.W.dtype)
        if call.keep is not None:
            rows = rows[call.keep]
        st.agop_rows.append(rows)


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
    n0, keep, labels = h_a.shape[0], call.keep, call.labels
    first = (sl.start or 0) * (n0 // max(out.shape[0], 1)) if batched else 0
    if keep is not None:
        keep = keep[first : first + n0]
        h_a = h_a[keep]
        owned.add("h_a")
    st.batch_rows += h_a.shape[0]
    if labels is not None and st.cls is not None:  # before acc.add may reuse h_a in place
        labels = labels[first : first + n0]
        st.cls.add(h_a, labels if keep is None else labels[keep])
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
