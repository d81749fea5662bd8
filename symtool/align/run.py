"""``symtool align``: CRH relations and PAH exponents for every layer of every checkpoint.

The data flow of docs/theory.md §1-4: build the model once, load each checkpoint's
state dict into it, stream the probe data through the capture hooks (one forward and
one backward per batch), then score each layer's finished matrices with
:mod:`symtool.align.crh` and fit :mod:`symtool.align.pah` exponents from one ``eigh`` per matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from symtool import distributed
from symtool.align import agop, collapse, crh, nearest, pah, records
from symtool.align import capture as cap
from symtool.align.extras import Extras, extra_bytes
from symtool.align.moments import layer_bytes
from symtool.align.probe import Probe, settle
from symtool.align.score import METRICS, HaarBank
from symtool.errors import ModelError, ProbeError, UsageError
from symtool.inputs import checkpoints as ck
from symtool.inputs import hf, models, probes, tokens
from symtool.linalg import all_finite
from symtool.report.files import to_jsonable
from symtool.runner import Progress, run_report

RECIPES = ("paper", "raw")
LM_LOSSES = ("causal_lm", "masked_lm")
"""Losses whose classes are a vocabulary: ``--collapse`` skips them unless ``--collapse-lm``."""
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class AlignSettings:
    """Every setting of an ``align`` run; recorded in the report's provenance."""

    factory: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    strip_prefix: str | None = None
    activation: str = "relu"
    dtype: str | None = None
    trust_pickle: bool = False
    data: Path | None = None
    source: str | None = None
    inputs: str = "x"
    targets: str = "y"
    mask: str | None = None
    samples: int | None = None
    batch_size: int = 256
    tokenizer: Path | None = None
    seq_len: int | None = None
    """Tokens per text-probe window; None: 128, or the model's context when shorter."""
    loss: str | None = None
    """None: by the model (``causal_lm`` for a Hugging Face ``*ForCausalLM``; see
    :func:`symtool.inputs.hf.default_loss`), else ``cross_entropy``."""
    moments: str = "paper"
    metric: str = "pearson"
    null_samples: int = 0
    seed: int = 0
    layers: tuple[str, ...] = ()
    verify: bool = False
    pah: bool = True
    pah_floor: float = 1e-8
    bootstrap: int = 200
    device: str = "cpu"
    max_layer_dim: int = 8192
    max_memory: float | None = None
    alpha_threshold: float = 0.8
    z_threshold: float = 3.0
    gemm_dtype: str = "float64"
    collapse: bool = False
    """Neural collapse NC1–NC4 on layers whose rows carry class labels (docs/theory.md §3)."""
    collapse_lm: bool = False
    """Neural collapse also under a language-model loss, whose classes are the vocabulary
    (``C·d`` float64 class sums per layer): off unless asked."""
    nfa: bool = False
    """The neural feature ansatz: α(Z_a, AGOP) and α(Z_a, AGOP^½) (docs/theory.md §3)."""
    nfa_exact_max: int = 64
    """Exact AGOP (a backward pass per output coordinate) up to this many per sample."""
    nfa_projections: int = 8
    """Gaussian projections per batch when a sample has more output coordinates."""
    base_dir: Path = field(default_factory=Path.cwd)

    def __post_init__(self) -> None:
        problems = []
        if self.moments not in RECIPES:
            problems.append(f"--moments must be paper or raw (got {self.moments!r})")
        if self.metric not in METRICS:
            problems.append(f"--metric must be pearson or cosine (got {self.metric!r})")
        if self.gemm_dtype not in DTYPES:
            problems.append(f"gemm_dtype must be float32 or float64 (got {self.gemm_dtype!r})")
        if self.dtype is not None and self.dtype not in DTYPES:
            problems.append(f"--dtype must be float32 or float64 (got {self.dtype!r})")
        if self.data is None and self.source is None:
            problems.append(
                "no probe data: give --data FILE or --data module:function "
                "(or [data] path/source in symtool.toml, or put probe.safetensors, "
                "probe.pt or probe.npz beside the checkpoints)"
            )
        for name in ("null_samples", "bootstrap"):
            if getattr(self, name) < 0:
                problems.append(f"--{name.replace('_', '-')} must be ≥ 0")
        if self.seq_len is not None and self.seq_len < 2:
            problems.append("--seq-len must be ≥ 2")
        if self.nfa_exact_max < 0:
            problems.append("--nfa-exact-max must be ≥ 0 (0: always projections)")
        for name in ("batch_size", "max_layer_dim", "nfa_projections"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be ≥ 1")
        if self.samples is not None and self.samples < 1:
            problems.append("--samples must be ≥ 1")
        if self.max_memory is not None and not self.max_memory > 0:
            problems.append("--max-memory must be > 0 (GiB)")
        if not (0 < self.pah_floor < 1):
            problems.append("--pah-floor must be in (0, 1)")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            problems.append("--device cuda but no CUDA device is available")
        if problems:
            raise UsageError("; ".join(problems))

    def public(self) -> dict[str, Any]:
        """The settings as recorded in reports (paths as given, no machine-local folder)."""
        d = asdict(self)
        d.pop("base_dir")
        if self.strip_prefix is None:  # recorded only when given: reports stay as before
            d.pop("strip_prefix")
        if self.data is None or not tokens.is_text(self.data):  # only for text probes
            d.pop("tokenizer")
            d.pop("seq_len")
        elif self.tokenizer is not None:
            d["tokenizer"] = str(self.tokenizer)
        d["data"] = None if self.data is None else str(self.data)
        d["layers"] = list(self.layers)
        return d


class _Analyzer:
    """Per-checkpoint work of ``align``; the model is built once and reused."""

    def __init__(
        self,
        s: AlignSettings,
        probe: Any,
        world: distributed.World,
        *,
        model: torch.nn.Module | None = None,
        loss_fn: probes.LossFn | None = None,
    ) -> None:
        self.s = s
        self.probe = probe
        self.world = world
        self.given = model  # a live model (the Python API): analysed as it is, never loaded
        self.loss = loss_fn or probes.resolve_loss(s.loss, base_dir=s.base_dir)
        self.bank = HaarBank(seed=s.seed, samples=s.null_samples)
        self.thresholds = crh.Thresholds(s.alpha_threshold, s.z_threshold)
        self.model: torch.nn.Module | None = None
        self.layers: list[models.LayerRef] = []
        self.groups: list[list[models.LayerRef]] = []
        self.skipped: list[dict[str, str]] = []
        self.matrices: dict[str, torch.Tensor] = {}
        self.keep_matrices = False
        self.stage: Callable[[str], None] = lambda text: None
        self.lm_off = s.collapse and not s.collapse_lm and s.loss in LM_LOSSES
        self.extras = Extras(
            collapse=s.collapse and not self.lm_off,
            nfa=s.nfa,
            nfa_exact_max=s.nfa_exact_max,
            nfa_projections=s.nfa_projections,
            seed=s.seed,
            shift_labels=s.loss == "causal_lm",
        )
        if self.extras.active and world.active and world.mode == "data":
            raise UsageError(
                "--collapse and --nfa do not run data-parallel yet; "
                "run them in one process (or with checkpoints split across ranks)"
            )

    def _extra(self, ref: models.LayerRef) -> int:
        return extra_bytes(ref.d_in, ref.d_out, self.extras)

    def _ensure_model(self, sd: dict[str, torch.Tensor], hf_dir: Path | None) -> torch.nn.Module:
        if self.model is not None:
            return self.model
        s = self.s
        model = self.given
        if model is None:
            model = models.build_model(
                s.factory,
                s.model_args,
                sd,
                activation=s.activation,
                base_dir=s.base_dir,
                config_dir=hf_dir,
            )
        layers, skipped = models.select_layers(model, list(s.layers) or None)
        kept = []
        self.skipped = [{"name": k.name, "reason": k.reason} for k in skipped]
        raw_too = s.verify and s.moments == "paper"
        budget = None if s.max_memory is None else s.max_memory * 2**30
        for ref in layers:
            need = layer_bytes(ref.d_in, ref.d_out, raw_too=raw_too) + self._extra(ref)
            if max(ref.d_in, ref.d_out) > s.max_layer_dim:
                why = f"{ref.d_out}×{ref.d_in} exceeds --max-layer-dim {s.max_layer_dim}"
            elif budget is not None and need > budget:
                why = f"{ref.d_out}×{ref.d_in} alone exceeds --max-memory {s.max_memory:g} GiB"
            else:
                kept.append(ref)
                continue
            self.skipped.append(
                {"name": ref.name, "reason": f"{why} (its sums would need {need / 2**30:.3g} GiB)"}
            )
        if not kept:
            why = "; ".join(f"{sk['name']}: {sk['reason']}" for sk in self.skipped[:4])
            more = f"; and {len(self.skipped) - 4} more" if len(self.skipped) > 4 else ""
            raise ModelError(
                "no layer to analyse (all skipped; see --layers, --max-layer-dim, --max-memory)"
                + (f": {why}{more}" if why else "")
            )
        self.model, self.layers = model, kept
        self.groups = partition_layers(kept, budget, raw_too=raw_too, extra=self._extra)
        return model

    def __call__(self, c: ck.Checkpoint, loaded: ck.LoadedCheckpoint) -> dict[str, Any]:
        s = self.s
        live = self.given is not None
        hf_dir = None if s.factory is not None or live else hf.config_dir(c.path)
        built = s.factory is not None or hf_dir is not None or live  # its own names
        sd, prefix = models.prepare_state(
            loaded.tensors,
            strip_prefix=s.strip_prefix,
            name_single=not built,
            source=c.path,
        )
        model = self._ensure_model(sd, hf_dir)
        if self.given is None:
            if built and s.strip_prefix is None:
                sd, prefix = models.fit_prefix(model, models.complete_tied(model, sd))
            models.load_state(model, models.complete_tied(model, sd), source=c.path)
        if s.dtype is not None:
            model.to(DTYPES[s.dtype])
        bad_weights = [
            ref.name for ref in self.layers if not all_finite(ref.module.weight)
        ]
        done: dict[str, dict[str, Any]] = {}
        n_samples = None
        n_groups = len(self.groups)
        for i, group in enumerate(self.groups):
            at = f"pass {i + 1}/{n_groups}: " if n_groups > 1 else ""
            span = group[0].name if len(group) == 1 else f"{group[0].name} … {group[-1].name}"
            result = self._capture(model, group, f"{at}capture {span}")
            beside = self._collapse(model, group, result, at)
            if result.n_samples == 0:
                what = f"probe source {s.source!r}" if s.source else f"probe data {s.data}"
                raise ProbeError(f"{what} gave no samples: nothing to capture")
            if n_samples is None:
                n_samples = result.n_samples
            elif result.n_samples != n_samples:
                raise ProbeError(
                    f"the probe data gave {n_samples} samples in pass 1 but "
                    f"{result.n_samples} in pass {i + 1}; --max-memory needs the same data "
                    "on every pass"
                )
            for k, ref in enumerate(group):
                self.stage(
                    f"{at}layer {k + 1}/{len(group)} {ref.name} ({ref.d_out}×{ref.d_in})"
                )
                m = result.take(ref.name)  # finished now; its sums are dropped
                if m is None:
                    why = records.why_failed(ref.name, result.failed, bad_weights)
                    failed = records.AlignLayer(
                        ref.name, ref.kind, ref.d_in, ref.d_out, status="failed", reason=why
                    )
                    done[ref.name] = records.layer_json(failed)
                    continue
                sums = result.extras.agop.pop(ref.name, None) if result.extras else None
                done[ref.name] = self._layer(ref, m, beside.get(ref.name), sums)
                if self.keep_matrices:
                    self._keep(c, ref.name, m)
                del m  # one layer's matrices at a time
            del result  # free this group's sums before the next pass
        stripped = models.join_prefixes(loaded.stripped_prefix, prefix)
        return {
            "samples": n_samples,
            "passes": len(self.groups),
            "layers": [done[ref.name] for ref in self.layers],
            "skipped_layers": list(self.skipped),
            **({"prefix_stripped": stripped} if stripped else {}),
        }

    def _capture(
        self, model: torch.nn.Module, group: list[models.LayerRef], label: str = "capture"
    ) -> cap.CaptureResult:
        """One pass over the probe data holding the sums of ``group``'s layers only."""
        s = self.s
        data_parallel = self.world.active and self.world.mode == "data"
        batches = _counted(self.probe.batches(), self.probe.n_batches(), label, self.stage)
        result = cap.capture(
            model,
            group,
            distributed.shard(batches, self.world) if data_parallel else batches,
            self.loss,
            recipe=s.moments,
            raw_too=s.verify,
            device=s.device,
            gemm_dtype=DTYPES[s.gemm_dtype],
            finish=False,
            extras=self.extras if self.extras.active else None,
        )
        if data_parallel:
            result = cap.all_reduce(result, group, self.world, finish=False)
        return result

    def _collapse(
        self, model: torch.nn.Module, group: list[models.LayerRef], result: cap.CaptureResult,
        at: str,
    ) -> dict[str, dict[str, Any]]:
        """``collapse`` records of a group's layers: NC1–NC3 from the class-wise sums, then
        NC4 from one forward-only pass over the probe (docs/theory.md §3)."""
        ex = result.extras
        if self.lm_off:
            why = (f"neural collapse is off under the {self.s.loss} loss, whose classes are "
                   "the vocabulary (C·d float64 sums per layer); ask with --collapse-lm")
            return {ref.name: records.collapse_skipped(why) for ref in group
                    if ref.name not in result.failed}
        if ex is None or not self.s.collapse:
            return {}
        out: dict[str, dict[str, Any]] = {}
        finished: dict[str, collapse.Collapse] = {}
        for ref in group:
            if ref.name in result.failed:
                continue
            sums = ex.collapse.pop(ref.name, None)
            if sums is None:
                why = ex.collapse_skipped.get(ref.name, "no labelled rows reached this layer")
                out[ref.name] = records.collapse_skipped(why)
                continue
            W = result.weights[ref.name] if ref.name == ex.classifier else None
            finished[ref.name] = collapse.finish(sums, classifier=W)
            del sums
        means = {n: (c.means, c.present) for n, c in finished.items() if c.nc1 is not None}
        nc4: dict[str, nearest.Disagreement] = {}
        if means:
            label = f"{at}nearest-class-mean pass (NC4)"
            nc4 = nearest.disagreements(
                model,
                group,
                _counted(self.probe.batches(), self.probe.n_batches(), label, self.stage),
                means,
                shift_labels=self.extras.shift_labels,
                device=self.s.device,
            )
        for n, c in finished.items():
            out[n] = records.collapse_record(
                c, nc4.get(n), n if n == ex.classifier and c.nc3 is not None else None
            )
        return out

    def _layer(
        self,
        ref: models.LayerRef,
        m: Any,
        collapsed: dict[str, Any] | None = None,
        agop_sums: agop.AgopSums | None = None,
    ) -> dict[str, Any]:
        s = self.s
        spectra = crh.layer_spectra(m, cross=True, metric=s.metric)
        al = crh.relations(
            m,
            spectra=spectra,
            metric=s.metric,
            null_samples=s.null_samples,
            bank=self.bank,
            thresholds=self.thresholds,
        )
        out = records.AlignLayer(
            name=ref.name,
            kind=ref.kind,
            d_in=ref.d_in,
            d_out=ref.d_out,
            rows=m.n,
            skipped_rows=dict(m.skipped_rows),
            relations={r.id: records.relation(r) for r in al.relations},
            cross_terms={r.id: records.relation(r) for r in al.cross},
            verify=to_jsonable(crh.verify(m)) if s.verify else None,
            warnings=records.layer_warnings(m.n, ref.d_in, ref.d_out, spectra) or None,
        )
        if s.pah:
            pw = pah.powers(
                m,
                spectra=spectra,
                floor=s.pah_floor,
                bootstrap=s.bootstrap,
                seed=s.seed,
                metric=s.metric,
            )
            out = replace(out, pah=records.pah_record(pw))
        if collapsed is not None:
            out = replace(out, collapse=collapsed)
        if agop_sums is not None:  # Z_a as the relations scored it
            found = agop.nfa(agop_sums, m.W, Z=spectra.matrix("Z_a"), metric=s.metric,
                             thresholds=self.thresholds)
            out = replace(out, nfa=records.nfa_record(found, out.relations))
        return records.layer_json(out)

    def _keep(self, c: ck.Checkpoint, layer: str, m: Any) -> None:
        tag = f"step_{c.step}" if c.step is not None else c.name
        W = m.W
        mats = {
            "H_a": m.H_a,
            "G_a": m.G_a,
            "H_b": m.H_b,
            "G_b": m.G_b,
            "C_a": m.C_a,
            "C_b": m.C_b,
            "Z_a": W.T @ W,
            "Z_b": W @ W.T,
            "W": W,
        }
        for k, v in mats.items():
            self.matrices[f"{tag}/{layer}/{k}"] = v.detach().to("cpu", torch.float64).contiguous()


def _counted(
    batches: Iterator[probes.Batch], total: int | None, label: str, stage: Callable[[str], None]
) -> Iterator[probes.Batch]:
    """The batches, each announced to ``stage`` as ``label, batch i/total``."""
    for i, batch in enumerate(batches):
        stage(f"{label}, batch {i + 1}" + (f"/{total}" if total else ""))
        yield batch


def partition_layers(
    layers: list[models.LayerRef],
    budget: float | None,
    *,
    raw_too: bool = False,
    extra: Callable[[models.LayerRef], int] | None = None,
) -> list[list[models.LayerRef]]:
    """Split layers, in model order, into groups whose sums fit ``budget`` bytes together.

    Each group is one pass over the probe data (``--max-memory``); ``None`` is one group.
    A layer that alone exceeds the budget gets a group of its own (callers skip those).
    ``extra`` gives a layer's bytes beyond its moments (``--collapse``, ``--nfa`` sums).
    """
    if budget is None:
        return [list(layers)] if layers else []
    groups: list[list[models.LayerRef]] = []
    used = 0.0
    for ref in layers:
        need = layer_bytes(ref.d_in, ref.d_out, raw_too=raw_too) + (extra(ref) if extra else 0)
        if groups and used + need <= budget:
            groups[-1].append(ref)
            used += need
        else:
            groups.append([ref])
            used = need
    return groups


def _staged(progress: Progress) -> tuple[Progress, Callable[[str], None]]:
    """A progress callback that remembers the checkpoint it was last told about, and a
    stage reporter that repeats it with what is being done inside that checkpoint (which
    pass, batch and layer): ``(i, total, "name: stage")``."""
    at = [0, 0, ""]

    def per_checkpoint(i: int, total: int, name: str) -> None:
        at[:] = [i, total, name]
        progress(i, total, name)

    def stage(text: str) -> None:
        i, total, name = at
        progress(int(i), int(total), f"{name}: {text}" if name else text)

    return per_checkpoint, stage


def run_align(
    ckpts: list[ck.Checkpoint],
    settings: AlignSettings,
    *,
    previous: dict[str, Any] | None = None,
    on_partial: Callable[[dict[str, Any]], None] | None = None,
    progress: Progress | None = None,
    save_matrices: Path | None = None,
    world: distributed.World | None = None,
    probe_found: str | None = None,
    model: torch.nn.Module | None = None,
    probe: Any = None,
    loss_fn: probes.LossFn | None = None,
) -> dict[str, Any]:
    """The ``align`` report over a checkpoint sequence (see docs/reports.md).

    Args:
        ckpts: checkpoints in step order.
        settings: the run's settings.
        previous: a partial report to resume from (its finished checkpoints are reused).
        on_partial: called with the report so far after each checkpoint.
        progress: progress callback (index, total, name).
        save_matrices: also keep every layer's matrices, for the caller to save.
        world: the torch.distributed world (one process when None); only rank 0's return
            value is the whole report.
        probe_found: how the probe file was found when nobody named it (recorded as the
            probe's ``found``), e.g. ``beside the checkpoints``.
        model: a live model to analyse as it is (the Python API): its weights are the
            checkpoint's, so nothing is built or loaded; ``ckpts`` are its state dicts.
        probe: probe batches from memory (:class:`symtool.inputs.memory.MemoryProbe`)
            instead of ``settings.data``/``source``.
        loss_fn: a loss callable instead of ``settings.loss``.
    """
    world = world or distributed.World()
    settings, tokenizer = settle(ckpts, settings, model)
    if probe is None:
        probe = Probe(settings, probe_found, tokenizer)
    analyzer = _Analyzer(settings, probe, world, model=model, loss_fn=loss_fn)
    analyzer.keep_matrices = save_matrices is not None
    if progress is not None:
        progress, analyzer.stage = _staged(progress)
    report = run_report(
        "symtool/align",
        ckpts,
        analyzer,
        settings.public(),
        trust_pickle=settings.trust_pickle,
        provenance_extra={"probe": probe.describe()},
        head_extra={
            "thresholds": {"alpha": settings.alpha_threshold, "z": settings.z_threshold},
            "relations": {rid: f"{a} ~ {b}" for rid, a, b, _ in crh.RELATIONS},
        },
        previous=previous,
        on_partial=on_partial,
        progress=progress,
        world=world,
    )
    if world.active and world.mode == "checkpoints":
        gathered = distributed.all_gather((report["checkpoints"], analyzer.matrices), world)
        report["checkpoints"] = distributed.interleave([g[0] for g in gathered], world)
        for _, mats in gathered:
            analyzer.matrices.update(mats)
    report["matrices"] = analyzer.matrices if save_matrices is not None else None
    return report
