"""``symtool symmetry`` over a checkpoint sequence: per checkpoint, then the sequence."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from symtool.inputs import checkpoints as ck
from symtool.inputs import hf, models
from symtool.report.files import to_jsonable
from symtool.runner import Progress, done_entries, run_report

# ------------------------------------------------------------------------- symmetry


@dataclass(frozen=True)
class SymmetryRun:
    """What ``symtool symmetry`` needs: analysis settings, structure hints, outputs."""

    settings: Any = None  # SymmetrySettings; Any keeps this module's import light
    pairs: tuple[tuple[str, ...], ...] | None = None
    heads: int | None = None
    classifier: str | None = None
    factory: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    strip_prefix: str | None = None
    base_dir: Path = field(default_factory=Path.cwd)
    trust_pickle: bool = False
    save_subspaces: Path | None = None

    def public(self) -> dict[str, Any]:
        """Settings as recorded in the report."""
        return {
            **self.settings.to_dict(),
            "pairs": None if self.pairs is None else [list(p) for p in self.pairs],
            "heads": self.heads,
            "classifier": self.classifier,
            "model": self.factory,
            "model_args": self.model_args,
            "trust_pickle": self.trust_pickle,
            **({"strip_prefix": self.strip_prefix} if self.strip_prefix else {}),
        }


def subspace_paths(base: Path, ckpts: list[ck.Checkpoint]) -> dict[str, Path]:
    """Where each checkpoint's subspaces go, one distinct file each.

    One checkpoint: ``FILE`` itself. Several with distinct steps: ``FILE.step_N.safetensors``.
    Otherwise (a step missing or repeated, e.g. two runs): ``FILE.<i>-<name>.safetensors``
    with ``i`` the checkpoint's position in the run and ``name`` its file name, so no
    checkpoint's file overwrites another's.
    """
    if len(ckpts) == 1:
        return {str(ckpts[0].path): base}
    suffix = base.suffix or ".safetensors"
    steps = [c.step for c in ckpts]
    if None not in steps and len(set(steps)) == len(steps):
        return {str(c.path): base.with_name(f"{base.stem}.step_{c.step}{suffix}") for c in ckpts}
    width = len(str(len(ckpts) - 1))
    out = {}
    for i, c in enumerate(ckpts):
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", c.path.name.removesuffix(".safetensors"))
        out[str(c.path)] = base.with_name(f"{base.stem}.{i:0{width}d}-{name}{suffix}")
    return out


def _classifier(given: str | None, arch: Any, tensors: dict[str, Any]) -> str | None:
    """``--classifier``; for a Hugging Face model only a stored output head by name
    (``lm_head``, ``score``, ...), never the last layer of the sorted keys (BERT's
    ``cls.predictions.transform.dense``); ``""`` when its head is tied and not stored."""
    from symtool.symmetry.layout import has_named_head

    if given is not None or arch is None:
        return given
    return None if has_named_head(tensors) else ""


def run_symmetry(
    ckpts: list[ck.Checkpoint],
    run: SymmetryRun,
    *,
    previous: dict[str, Any] | None = None,
    on_partial: Callable[[dict[str, Any]], None] | None = None,
    progress: Progress | None = None,
    model: Any = None,
    reference: Any = None,
) -> dict[str, Any]:
    """The ``symmetry`` report: per checkpoint, then the sequence (events, modes, laws).

    ``model`` is a live ``nn.Module`` whose graph gives the unit pairs (as ``--model``
    does, without building or loading one); ``reference`` the first checkpoint's
    ``SymmetryResult`` when ``ckpts`` continue a sequence analysed earlier (the training
    callbacks analyse one step at a time).
    """
    from symtool.report.files import save_tensors_atomic
    from symtool.symmetry import analysis as sym

    results: dict[str, Any] = {}  # path -> SymmetryResult of finished checkpoints
    targets = {} if run.save_subspaces is None else subspace_paths(run.save_subspaces, ckpts)
    first: list[Any] = []
    pairs_box: list[tuple[tuple[str, ...], ...] | None] = [run.pairs]
    model_box: list[Any] = [] if model is None else [model]
    if reference is not None:
        first.append(reference)

    def analyze(c: ck.Checkpoint, loaded: ck.LoadedCheckpoint) -> dict[str, Any]:
        tensors, prefix = models.prepare_state(
            loaded.tensors, strip_prefix=run.strip_prefix, name_single=False, source=c.path
        )
        live = model is not None
        folder = hf.config_dir(c.path) if run.factory is None and not live else None
        arch = hf.architecture(hf.read_config(folder)) if folder is not None else None
        if run.factory is not None or live:
            if not model_box:
                model_box.append(
                    models.build_model(run.factory, run.model_args, tensors, base_dir=run.base_dir)
                )
            built = model_box[0]
            config = getattr(built, "config", None)  # a Hugging Face model
            if hasattr(config, "to_dict"):
                arch = hf.architecture(config.to_dict())
            if run.strip_prefix is None and not live:  # the model's names, as align's
                tensors, prefix = models.fit_prefix(built, tensors)
            if pairs_box[0] is None and arch is None:  # a transformer pairs by structure
                if not live:  # a live model already holds these weights
                    models.load_state(built, models.complete_tied(built, tensors), source=c.path)
                pairs_box[0] = tuple(models.graph_pairs(built))
        tensors = models.name_single_module(tensors)
        is_first = c.path == ckpts[0].path and reference is None
        result = sym.analyse_symmetry(
            tensors,
            run.settings,
            pairs=pairs_box[0],
            heads=run.heads or (arch.heads if arch is not None else None),
            classifier=_classifier(run.classifier, arch, tensors),
            reference=None if is_first or not first else first[0],
            mlp_activation=arch.activation if arch is not None else None,
        )
        if is_first:
            first[:] = [result]
        results[str(c.path)] = result
        body = to_jsonable(result)
        body.pop("settings")  # recorded once, in the provenance
        stripped = models.join_prefixes(loaded.stripped_prefix, prefix)
        if stripped:  # recorded only when something was removed: reports stay as before
            body["prefix_stripped"] = stripped
        if run.save_subspaces is not None:
            bases = sym.symmetry_subspaces(tensors, tau=run.settings.rank_tau)
            target = targets[str(c.path)]
            save_tensors_atomic(target, {k: v.contiguous() for k, v in bases.items()})
            body["subspaces"] = str(target)
        return body

    def revive(entry: dict[str, Any]) -> Any:
        """A finished entry of a resumed run back into a record for the sequence."""
        result = revive_entry(entry, run.settings)
        results[entry["path"]] = result
        return result

    # a resumed run's first checkpoint is the reference for excess nullity
    head = [e for (p, _), e in done_entries(previous).items() if p == str(ckpts[0].path)]
    if head:
        first.append(revive(head[0]))
    report = run_report(
        "symtool/symmetry",
        ckpts,
        analyze,
        run.public(),
        trust_pickle=run.trust_pickle,
        previous=previous,
        on_partial=on_partial,
        progress=progress,
    )
    for e in report["checkpoints"]:
        if e["status"] == "ok" and e["path"] not in results:
            revive(e)
    ok = [(e["step"], results[e["path"]]) for e in report["checkpoints"] if e["status"] == "ok"]
    report["sequence"] = sequence_from(ok)
    return report


def revive_entry(entry: dict[str, Any], settings: Any) -> Any:
    """A report entry back into the ``SymmetryResult`` it was written from."""
    from symtool.report.files import from_jsonable
    from symtool.symmetry import analysis as sym

    body = {k: entry[k] for k in ("layers", "units", "attention", "softmax", "skipped")}
    return from_jsonable(sym.SymmetryResult, {**body, "settings": settings.to_dict()})


def sequence_from(ok: list[tuple[int | None, Any]]) -> dict[str, Any] | None:
    """Events, modes and laws over (step, result) pairs; None unless ≥ 2 distinct steps.

    (The training monitor grows its report one step at a time and recomputes this.)
    """
    from symtool.symmetry import analysis as sym

    steps = [s for s, _ in ok]
    if len(ok) > 1 and None not in steps and len(set(steps)) == len(steps):
        return to_jsonable(sym.analyse_sequence(ok))
    return None
