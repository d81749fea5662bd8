"""``symtool.Monitor``: the analyses of a live model every few training steps.

Each analysed step adds one entry to each analysis' report, exactly the entry
``symtool <analysis>`` would write for a checkpoint saved at that step, and the reports
are rewritten atomically after every step, so a killed job leaves valid reports (marked
``complete: false`` until :meth:`Monitor.close`). A job restarted from its own checkpoint
continues those reports (``resume=True``, the default): entries for steps below the first
step analysed after the restart are kept, later ones replaced. Training is not disturbed: see
:func:`symtool.api.live.preserved`. Under ``torch.distributed`` every rank must call
:meth:`Monitor.step` (align's probe sums are reduced across ranks, each rank reading its
share of the probe batches); only rank 0 writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from symtool.api import settings as st
from symtool.api.jobs import align_inputs, loss_of, memory, sequences
from symtool.api.live import device_of, preserved, unwrap, world
from symtool.api.report import Report
from symtool.errors import SymtoolError, UsageError
from symtool.report.files import dumps, read_report, to_jsonable, write_atomic

ANALYSES = ("align", "symmetry", "ode")


class Monitor:
    """Analyse ``model`` on ``probe`` every ``every_n_steps`` training steps.

    Args:
        model: the model being trained (``DistributedDataParallel`` and ``torch.compile``
            wrappers are looked through).
        probe: align's probe data (anything :func:`symtool.align` takes as ``data``); for
            ``ode``, a tensor of sequences or None.
        out: a folder, written as ``<out>/<analysis>.json``, or with one analysis a
            ``.json`` file; None keeps the reports in memory only.
        analyses: any of ``align``, ``symmetry``, ``ode``.
        every_n_steps: analyse when ``global_step % every_n_steps == 0``.
        loss: align's loss (a name or a callable).
        config: a ``symtool.toml`` to read settings from (none by default).
        resume: continue the reports already under ``out`` (a training job restarted from
            its checkpoint): at the first analysed step ``s``, their entries for steps
            below ``s`` are kept and the rest replaced. A report made with other settings
            (or another schema version) is an error, raised here, before training goes on;
            False starts the reports afresh (overwriting them at the first analysed step).
        align, symmetry, ode: settings for one analysis only.
        **settings: settings by their CLI names, given to every analysis that has them
            (a name no chosen analysis has is an error).

    Example::

        monitor = symtool.Monitor(model, (x_probe, y_probe), out="runs/symtool", every_n_steps=100)
        for step, batch in enumerate(loader, 1):
            ...  # forward, backward, optimizer.step()
            monitor.step(step)
        monitor.close()
    """

    def __init__(
        self,
        model: nn.Module,
        probe: Any = None,
        *,
        out: str | Path | None = None,
        analyses: Sequence[str] = ("align", "symmetry"),
        every_n_steps: int = 1,
        loss: str | Callable[..., torch.Tensor] | None = None,
        config: str | Path | None = None,
        resume: bool = True,
        align: Mapping[str, Any] | None = None,
        symmetry: Mapping[str, Any] | None = None,
        ode: Mapping[str, Any] | None = None,
        **settings: Any,
    ) -> None:
        unknown = [a for a in analyses if a not in ANALYSES]
        if unknown or not analyses:
            raise UsageError(f"analyses must be some of {', '.join(ANALYSES)} (got {analyses!r})")
        if every_n_steps < 1:
            raise UsageError("every_n_steps must be ≥ 1")
        if "align" in analyses and probe is None:
            raise UsageError("align needs probe data: Monitor(model, probe, ...)")
        self.model = unwrap(model)
        self.analyses = tuple(dict.fromkeys(analyses))
        self.every_n_steps = every_n_steps
        self.out = None if out is None else Path(out)
        if self.out is not None and self.out.suffix == ".json" and len(self.analyses) > 1:
            raise UsageError("out must be a folder when more than one analysis runs")
        self.world = world()
        self.reports: dict[str, Report] = {}
        self.last_step: int | None = None
        self._results: list[tuple[int | None, Any]] = []  # symmetry's (step, result) so far
        self._texts: dict[str, list[str]] = {}  # each entry's JSON, serialised once
        conf = st.config_for([], config if config is not None else False)
        own = {"align": dict(align or {}), "symmetry": dict(symmetry or {}),
               "ode": dict(ode or {})}
        names = {
            "align": set(st.align_names()),
            "symmetry": set(st.symmetry_names()),
            "ode": set(st.ode_names()),
        }
        shared = {st.ALIASES.get(k, k): v for k, v in settings.items()}
        st.split(shared, set().union(*(names[a] for a in self.analyses)), "Monitor")
        flags = {
            a: st.split(
                {**{k: v for k, v in shared.items() if k in names[a]}, **own[a]}, names[a], a
            )
            for a in self.analyses
        }
        self._setup: dict[str, Any] = {}
        if "align" in self.analyses:
            loss_fn = loss_of(loss, flags["align"])
            flags["align"].setdefault("device", device_of(self.model))
            self._setup["align"] = align_inputs(
                probe, conf, flags["align"], loss_fn, model=self.model
            )
        if "symmetry" in self.analyses:
            self._setup["symmetry"] = st.symmetry_run(flags["symmetry"], conf)
        if "ode" in self.analyses:
            seqs = None
            if isinstance(probe, torch.Tensor) and "align" not in self.analyses:
                seqs = sequences(probe, flags["ode"].get("samples"))
            self._setup["ode"] = (st.ode_run(flags["ode"], conf, data=None), seqs)
        self._earlier: dict[str, dict[str, Any]] = {}  # reports a restarted job continues
        if resume and self.out is not None and self.world.is_main:
            for analysis in self.analyses:
                earlier = self._earlier_report(analysis)
                if earlier is not None:
                    self._earlier[analysis] = earlier

    def _earlier_report(self, analysis: str) -> dict[str, Any] | None:
        """The report already at ``analysis``'s path, checked to be continuable."""
        from symtool.report.files import SCHEMA_VERSION
        from symtool.runner import check_resumable

        path = self.path(analysis)
        if path is None or not path.exists():
            return None
        try:
            report = read_report(str(path))
            setup = self._setup[analysis]
            settings = setup[0] if isinstance(setup, tuple) else setup
            head = {
                "schema": f"symtool/{analysis}",
                "schema_version": SCHEMA_VERSION,
                "provenance": {"settings": json.loads(dumps(to_jsonable(settings.public())))},
            }
            check_resumable(report, head)
        except SymtoolError as exc:
            why = str(exc).removeprefix("--resume: ").split("; remove it")[0]
            raise UsageError(
                f"Monitor cannot continue {path}: {why}; pass resume=False to start it "
                "afresh, or choose another out"
            ) from None
        return report

    def due(self, global_step: int) -> bool:
        """Whether :meth:`step` would analyse at ``global_step``."""
        return global_step % self.every_n_steps == 0 and global_step != self.last_step

    def step(self, global_step: int, *, force: bool = False) -> dict[str, Report]:
        """Analyse the model now if the step is due (or ``force``); write the reports.

        Returns:
            The reports so far (every analysis), whether or not this step was analysed.
        """
        if not (force or self.due(global_step)):
            return self.reports
        self.last_step = global_step
        for analysis in list(self._earlier):
            self._continue(analysis, self._earlier.pop(analysis), global_step)
        with torch.no_grad(), preserved(self.model):
            for analysis in self.analyses:
                entry_report = getattr(self, f"_{analysis}")(global_step)
                self._add(analysis, entry_report)
        self._write()
        return self.reports

    def close(self) -> dict[str, Report]:
        """Mark the reports complete and write them a last time."""
        for analysis, report in list(self.reports.items()):
            self.reports[analysis] = Report({**report, "complete": True})
        self._write()
        return self.reports

    # ----------------------------------------------------------------- analyses
    def _align(self, global_step: int) -> dict[str, Any]:
        from symtool.align.run import run_align

        s, probe, loss_fn, _ = self._setup["align"]
        ckpts = memory(self.model, global_step)
        with torch.enable_grad():
            return run_align(
                ckpts, s, model=self.model, probe=probe, loss_fn=loss_fn, world=self.world
            )

    def _symmetry(self, global_step: int) -> dict[str, Any]:
        from symtool.symmetry.run import revive_entry, run_symmetry

        run = self._setup["symmetry"]
        reference = self._results[0][1] if self._results else None
        report = run_symmetry(
            memory(self.model, global_step), run, model=self.model, reference=reference
        )
        entry = report["checkpoints"][0]
        if entry["status"] == "ok":  # kept for the sequence: each entry is revived once
            self._results.append((entry["step"], revive_entry(entry, run.settings)))
        return report

    def _ode(self, global_step: int) -> dict[str, Any]:
        from symtool.ode.run import run_ode

        run, seqs = self._setup["ode"]
        return run_ode(memory(self.model, global_step), run, sequences=seqs)

    # ----------------------------------------------------------------- reports
    def _continue(self, analysis: str, earlier: dict[str, Any], first_step: int) -> None:
        """Take over ``earlier``'s entries for steps below ``first_step`` (a restart)."""
        kept = [
            e for e in earlier.get("checkpoints", [])
            if e.get("step") is not None and e["step"] < first_step
        ]
        if not kept:
            return  # nothing to keep: the report starts afresh
        if analysis == "symmetry":
            from symtool.symmetry.run import revive_entry

            settings = self._setup["symmetry"].settings
            self._results = [
                (e["step"], revive_entry(e, settings)) for e in kept if e["status"] == "ok"
            ]
        self._texts[analysis] = [_entry_text(e) for e in kept]
        self.reports[analysis] = Report({**earlier, "complete": False, "checkpoints": kept})

    def _add(self, analysis: str, new: dict[str, Any]) -> None:
        new.pop("matrices", None)
        old = self.reports.get(analysis)
        if old is None:
            report = {**new, "complete": False}
        else:
            report = {**old, "checkpoints": [*old.checkpoints, *new["checkpoints"]]}
        self._texts.setdefault(analysis, []).extend(_entry_text(e) for e in new["checkpoints"])
        if analysis == "symmetry":
            from symtool.symmetry.run import sequence_from

            report["sequence"] = sequence_from(self._results)
        self.reports[analysis] = Report(report)

    def path(self, analysis: str) -> Path | None:
        """Where ``analysis``'s report is written (None without ``out``)."""
        if self.out is None:
            return None
        return self.out if self.out.suffix == ".json" else self.out / f"{analysis}.json"

    def _write(self) -> None:
        if self.out is None or not self.world.is_main:
            return
        for analysis, report in self.reports.items():
            target = self.path(analysis)
            assert target is not None
            write_atomic(target, _report_text(report, self._texts[analysis]))


_SLOT = "\0symtool-entries\0"


def _entry_text(entry: dict[str, Any]) -> str:
    """One checkpoint entry as ``dumps`` writes it inside a report (4 spaces deep)."""
    return dumps(entry).rstrip("\n").replace("\n", "\n    ")


def _report_text(report: Report, entries: list[str]) -> str:
    """``dumps(report)``, with the entries' text serialised once each rather than at every
    write (a report rewritten after every step would otherwise cost O(steps²))."""
    text = dumps({**report, "checkpoints": [_SLOT]})
    slot = dumps(_SLOT).rstrip("\n")
    return text.replace(slot, ",\n    ".join(entries), 1)
