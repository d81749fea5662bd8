"""What an ``align`` run will cost per checkpoint, before it runs (``inspect``, ``--dry-run``).

A formula, not a measurement (docs/performance.md, "Estimates"). Per layer with ``d_in``,
``d_out``, ``n`` probe rows (a conv layer has one row per output position), ``K`` null
samples:

* **sums held through a pass**: :func:`symtool.align.moments.layer_bytes` — 8 bytes ×
  (``5(d_in² + d_out²) + 2·d_in·d_out``), the streaming sums and the finished matrices;
* **analysis working set** (one layer at a time, after the pass): 8 bytes ×
  ``6·(d_in² + d_out²)`` (each side's symmetrised matrix, eigenvectors, their embedding,
  ``Z`` and its vectors);
* **capture flops**: ``2n·(d_in² + d_out² + d_in·d_out)`` — four Gram sums (``syrk``,
  ``n·d²`` each) and the cross sum ``D`` (``2n·d_in·d_out``); the model's own forward and
  backward are not counted;
* **decomposition flops**: per side ``11·d³``: ``eigh`` with vectors of ``H`` (``9d³``) and
  the one product ``G̃G̃`` behind the exact null's fourth trace (``2d³``); with a sampled
  null (``--null-samples K > 0``) also the eigenvalues and ``Vᵀ1`` of ``G`` and the cross
  term, ``v·d³`` each — ``v = 4/3`` (one tridiagonal reduction) with torch on one thread,
  ``v = 9`` (a full ``eigh``) with more; plus the Gram pair ``9m³ + 4M²m`` (``m``, ``M`` the
  smaller and larger side: ``eigh`` of the small side, the complete QR of the ``M × m``
  vectors). Exactly-zero rows are deflated at run time, so for im2col layers on tiny maps
  this is an upper bound;
* **Haar bank** (``K > 0`` only, first checkpoint; later ones reuse it): ``K`` QR
  factorisations of ``d × d`` Gaussian matrices, ``8/3·K·d³`` flops per distinct side
  length, and ``8·K·d²`` bytes.

Seconds = (capture + decomposition flops) / (R/2), ``R`` the float64 GEMM rate measured
here (:func:`gemm_rate`): Gram sums and LAPACK ``eigh`` of large matrices ran at about half
of it (a 4608² ``eigh`` took 30 s at one thread where GEMM ran at 38 GFLOP/s; smaller and
busier runs were slower, so read the time as an order of magnitude).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from symtool.align.moments import layer_bytes

GIB = 2**30

LARGE_BYTES = 8 * GIB
"""Above this peak memory per checkpoint, ``inspect``/``--dry-run`` suggest ``--layers``."""

LARGE_SECONDS = 120.0
"""Above this estimated time per checkpoint, they suggest ``--layers`` too."""

EFFICIENCY = 0.5
"""Share of the GEMM rate the Gram sums and the decompositions run at (module docstring)."""


@dataclass(frozen=True)
class LayerCost:
    """The formula's terms for one layer (module docstring)."""

    name: str
    d_in: int
    d_out: int
    rows: int | None
    sums_bytes: int
    work_bytes: int
    capture_flops: float | None
    decompose_flops: float


def values_factor() -> float:
    """``v`` of the module docstring: flops/d³ of eigenvalues and ``Vᵀ1`` without vectors
    (one tridiagonal reduction through SciPy at one thread; a full ``eigh`` otherwise)."""
    return 4.0 / 3.0 if torch.get_num_threads() == 1 else 9.0


@dataclass(frozen=True)
class CheckpointCost:
    """One checkpoint's estimate; ``seconds`` leaves out capture when rows are unknown."""

    layers: list[LayerCost]
    sums_bytes: int
    peak_bytes: int
    bank_bytes: int
    capture_seconds: float | None
    decompose_seconds: float
    gemm_gflops: float
    bank_seconds: float = 0.0
    suggest_layers: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.decompose_seconds + (self.capture_seconds or 0.0)

    @property
    def large(self) -> bool:
        return self.peak_bytes > LARGE_BYTES or self.seconds + self.bank_seconds > LARGE_SECONDS


def layer_cost(
    name: str,
    d_in: int,
    d_out: int,
    rows: int | None = None,
    *,
    raw_too: bool = False,
    null_samples: int = 0,
    extra: int = 0,
) -> LayerCost:
    """The formula's terms for one layer of ``d_out × d_in`` with ``rows`` probe rows
    (``extra``: bytes of its ``--collapse``/``--nfa`` sums)."""
    sq = d_in * d_in + d_out * d_out
    m, big = min(d_in, d_out), max(d_in, d_out)
    capture = None if rows is None else 2.0 * rows * (sq + d_in * d_out)
    per_side = 11.0 + (2.0 * values_factor() if null_samples > 0 else 0.0)
    decompose = per_side * (d_in**3 + d_out**3) + 9.0 * m**3 + 4.0 * big * big * m
    return LayerCost(
        name, d_in, d_out, rows, layer_bytes(d_in, d_out, raw_too=raw_too) + extra, 8 * 6 * sq,
        capture, decompose,
    )


def checkpoint_cost(
    layers: Sequence[LayerCost],
    *,
    null_samples: int = 0,
    groups: Sequence[Sequence[str]] | None = None,
    rate: float | None = None,
) -> CheckpointCost:
    """Peak memory and time of one checkpoint from its layers' costs.

    Args:
        layers: the analysed layers.
        null_samples: ``K``, Haar matrices kept per distinct side length (sampled null).
        groups: layer names per pass (``--max-memory``); one pass when ``None``.
        rate: float64 GEMM flop/s (measured by :func:`gemm_rate` when ``None``).
    """
    rate = gemm_rate() if rate is None else rate
    by_name = {c.name: c for c in layers}
    passes = [list(g) for g in groups] if groups else [[c.name for c in layers]]
    sums = max((sum(by_name[n].sums_bytes for n in g) for g in passes), default=0)
    work = max((c.work_bytes for c in layers), default=0)
    sides = {d for c in layers for d in (c.d_in, c.d_out)}
    bank = 8 * null_samples * sum(d * d for d in sides)
    known = all(c.capture_flops is not None for c in layers)
    capture = sum(c.capture_flops or 0.0 for c in layers) / (rate * EFFICIENCY) if known else None
    decompose = sum(c.decompose_flops for c in layers) / (rate * EFFICIENCY)
    bank_s = 8.0 / 3.0 * null_samples * sum(d**3 for d in sides) / (rate * EFFICIENCY)
    cost = CheckpointCost(
        list(layers), sums, sums + work + bank, bank, capture, decompose, rate / 1e9, bank_s
    )
    if cost.large and len(layers) > 2:  # already two layers: nothing left to drop
        cost = replace(cost, suggest_layers=suggest_layers(layers))
    return cost


def suggest_layers(layers: Sequence[LayerCost]) -> list[str]:
    """The penultimate and last analysed layers, as the CRH paper studies them."""
    return [c.name for c in layers[-2:]]


def gemm_rate(n: int = 768) -> float:
    """Float64 GEMM flop/s on this machine at torch's current thread count (best of 3)."""
    a = torch.randn(n, n, dtype=torch.float64)
    a @ a  # warm-up: thread pool and caches
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / max(best, 1e-9)


def human_bytes(n: float) -> str:
    """``1.2 GiB``-style size."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} GiB"  # pragma: no cover


def human_seconds(s: float) -> str:
    """``42 s`` / ``3.5 min`` / ``1.2 h``."""
    if s < 90:
        return f"{s:.2g} s" if s < 10 else f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def describe(cost: CheckpointCost) -> list[str]:
    """The estimate as lines for people (``inspect`` tables, ``--dry-run``)."""
    lines = [
        f"{len(cost.layers)} layers; per checkpoint ≈ {human_bytes(cost.peak_bytes)} peak "
        f"({human_bytes(cost.sums_bytes)} sums"
        + (f", {human_bytes(cost.bank_bytes)} Haar bank" if cost.bank_bytes else "") + ") and "
        + (
            f"≈ {human_seconds(cost.seconds)}"
            if cost.capture_seconds is not None
            else f"≈ {human_seconds(cost.decompose_seconds)} of decompositions (+ capture)"
        )
        + f" at {cost.gemm_gflops:.3g} GFLOP/s"
        + (f", + {human_seconds(cost.bank_seconds)} once to draw the Haar bank"
           if cost.bank_seconds >= 1 else "")
    ]
    if cost.suggest_layers:
        flags = " ".join(f"--layers {n}" for n in cost.suggest_layers)
        lines.append(f"large: consider {flags} (the penultimate and last layers)")
    return lines


def rows_per_batch(model: torch.nn.Module, layers: Sequence[Any], batch: Any) -> dict[str, int]:
    """Rows each layer sees in one probe batch, from one forward pass with hooks: a
    linear map's outputs over its ``d_out`` (tokens × sequence), a conv's over its channels
    (samples × output positions). ``layers`` are :class:`~symtool.inputs.models.LayerRef`."""
    rows: dict[str, int] = {}
    handles = []
    for ref in layers:

        def hook(_m: torch.nn.Module, _i: Any, out: Any, ref: Any = ref) -> None:
            if isinstance(out, torch.Tensor):
                rows[ref.name] = out.numel() // max(ref.d_out, 1)

        handles.append(ref.module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            x = batch.x
            model(**x) if isinstance(x, dict) else model(x)
    finally:
        for h in handles:
            h.remove()
    return rows


def dry_run(ckpts: Sequence[Any], settings: Any) -> CheckpointCost:
    """``align --dry-run``: the estimate for the first checkpoint, with probe rows from one
    forward pass of its first probe batch; nothing is captured or decomposed."""
    from symtool import distributed
    from symtool.align import run
    from symtool.inputs import checkpoints as ck
    from symtool.inputs import hf, models

    settings, tokenizer = run.settle(ckpts, settings)
    probe = run.Probe(settings, None, tokenizer)
    analyzer = run._Analyzer(settings, probe, distributed.World())
    c = ckpts[0]
    loaded = ck.load(c, trust_pickle=settings.trust_pickle)
    hf_dir = None if settings.factory is not None else hf.config_dir(c.path)
    built = settings.factory is not None or hf_dir is not None
    sd, _ = models.prepare_state(
        loaded.tensors, strip_prefix=settings.strip_prefix, name_single=not built, source=c.path
    )
    model = analyzer._ensure_model(sd, hf_dir)
    if built and settings.strip_prefix is None:
        sd, _ = models.fit_prefix(model, models.complete_tied(model, sd))
    models.load_state(model, models.complete_tied(model, sd), source=c.path)
    model.eval()
    batches = probe.batches()
    first = next(iter(batches), None)
    rows: dict[str, int] = {}
    if first is not None:
        per = rows_per_batch(model, analyzer.layers, first)
        n_first = int(first.x.shape[0]) if isinstance(first.x, torch.Tensor) else None
        total = probe.data.n if probe.data is not None else None
        if n_first and total:
            rows = {k: v * total // n_first for k, v in per.items()}
    raw_too = settings.verify and settings.moments == "paper"
    costs = [
        layer_cost(r.name, r.d_in, r.d_out, rows.get(r.name), raw_too=raw_too,
                   null_samples=settings.null_samples, extra=analyzer._extra(r))
        for r in analyzer.layers
    ]
    groups = [[r.name for r in g] for g in analyzer.groups]
    return checkpoint_cost(costs, null_samples=settings.null_samples, groups=groups)
