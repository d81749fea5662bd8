"""Run one analysis over a checkpoint sequence, one checkpoint at a time.

The next checkpoint is read (and hashed) in a background thread while the current one
is analysed, so at most two are in memory. A checkpoint that fails to load or analyse
is recorded with its error and the rest go on. After each checkpoint the caller's
``on_entry`` can write a partial report, which is what ``--resume`` continues from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from symtool import distributed
from symtool.errors import SymtoolError, UsageError
from symtool.inputs import checkpoints as ck
from symtool.inputs.memory import MemoryCheckpoint
from symtool.report.files import SCHEMA_VERSION, provenance

Analyze = Callable[[ck.Checkpoint, ck.LoadedCheckpoint], dict[str, Any]]
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Loaded:
    """A checkpoint read in the background: its tensors and hash, or the error."""

    ckpt: ck.Checkpoint
    sha256: str | None
    loaded: ck.LoadedCheckpoint | None
    error: str | None


def _read(c: ck.Checkpoint, trust_pickle: bool) -> Loaded:
    if isinstance(c, MemoryCheckpoint):  # a live model's state dict (the Python API)
        return Loaded(c, c.sha256(), c.load(), None)
    try:
        digest = ck.checkpoint_sha256(c)
        return Loaded(c, digest, ck.load(c, trust_pickle=trust_pickle), None)
    except SymtoolError as exc:
        return Loaded(c, None, None, str(exc))
    except (OSError, RuntimeError, ValueError) as exc:
        return Loaded(c, None, None, f"{c.path}: cannot read ({exc})")


def prefetch(
    ckpts: list[ck.Checkpoint], *, trust_pickle: bool, background: bool = True
) -> Iterator[Loaded]:
    """Checkpoints in order, each read while the previous one is being analysed."""
    if not background:
        for c in ckpts:
            yield _read(c, trust_pickle)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="symtool-load") as pool:
        pending: Future[Loaded] | None = None
        for i, _ in enumerate(ckpts):
            current = pending.result() if pending else _read(ckpts[i], trust_pickle)
            pending = pool.submit(_read, ckpts[i + 1], trust_pickle) if i + 1 < len(ckpts) else None
            yield current
            del current


def entry_head(
    c: ck.Checkpoint, sha256: str | None, meta_step: int | None = None
) -> dict[str, Any]:
    """The fields every per-checkpoint entry starts with."""
    return {
        "step": c.step if c.step is not None else meta_step,
        "path": str(c.path),
        "sha256": sha256,
        "status": "ok",
        "error": None,
    }


def run_sequence(
    ckpts: list[ck.Checkpoint],
    analyze: Analyze,
    *,
    trust_pickle: bool = False,
    done: dict[tuple[str, str], dict[str, Any]] | None = None,
    on_entry: Callable[[list[dict[str, Any]]], None] | None = None,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Analyse every checkpoint; failures become entries with ``status: failed``.

    Args:
        ckpts: in step order.
        analyze: the per-checkpoint analysis; returns the entry's body.
        trust_pickle: allow full unpickling.
        done: entries from an interrupted run, keyed by (path, sha256); reused as-is.
        on_entry: called with all entries so far after each checkpoint (partial reports).
        progress: called with (index, total, name) before each checkpoint.
    """
    entries: list[dict[str, Any]] = []
    for i, item in enumerate(prefetch(ckpts, trust_pickle=trust_pickle)):
        if progress:
            progress(i, len(ckpts), item.ckpt.name)
        meta = item.loaded.meta_step if item.loaded else None
        head = entry_head(item.ckpt, item.sha256, meta)
        key = (head["path"], head["sha256"] or "")
        if done and key in done:
            entries.append(done[key])
        elif item.error is not None or item.loaded is None:
            entries.append({**head, "status": "failed", "error": item.error})
        else:
            t0 = time.perf_counter()
            try:
                body = analyze(item.ckpt, item.loaded)
            except SymtoolError as exc:
                body = {
                    "status": "failed",
                    "error": str(exc) if exc.path else f"{head['path']}: {exc}",
                }
            entries.append({**head, **body, "duration_s": round(time.perf_counter() - t0, 3)})
        if on_entry:
            on_entry(entries)
    if progress:
        progress(len(ckpts), len(ckpts), "")
    return entries


def done_entries(previous: dict[str, Any] | None) -> dict[tuple[str, str], dict[str, Any]]:
    """Completed entries of a partial report, for ``--resume`` (failed ones are retried)."""
    if not previous:
        return {}
    return {
        (e["path"], e.get("sha256") or ""): e
        for e in previous.get("checkpoints", [])
        if e.get("status") == "ok" and e.get("sha256")
    }


RESUME_FREE = frozenset({"max_memory"})
"""Settings a resumed run may change: they decide how the work is done, not its numbers."""


def check_resumable(previous: dict[str, Any], head: dict[str, Any]) -> None:
    """Refuse to resume from a report made with other settings or of another kind."""
    if previous.get("schema") != head["schema"]:
        raise UsageError(
            f"--resume: the existing report is {previous.get('schema')!r}, not {head['schema']!r}"
        )
    if previous.get("schema_version") != head["schema_version"]:
        raise UsageError(
            f"--resume: the existing report has schema_version {previous.get('schema_version')}, "
            f"this symtool writes {head['schema_version']}; remove it or rerun without --resume"
        )
    old = dict(previous.get("provenance", {}).get("settings") or {})
    new = dict(head["provenance"]["settings"])
    for key in RESUME_FREE:  # settings that do not change any number
        old.pop(key, None)
        new.pop(key, None)
    if old != new:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise UsageError(
            "--resume: the existing report was made with other settings ("
            + ", ".join(diff)
            + "); remove it or rerun with the same options"
        )


def run_report(
    schema: str,
    ckpts: list[ck.Checkpoint],
    analyze: Analyze,
    settings: dict[str, Any],
    *,
    trust_pickle: bool,
    provenance_extra: dict[str, Any] | None = None,
    head_extra: dict[str, Any] | None = None,
    previous: dict[str, Any] | None = None,
    on_partial: Callable[[dict[str, Any]], None] | None = None,
    progress: Progress | None = None,
    world: distributed.World | None = None,
) -> dict[str, Any]:
    """A report of kind ``schema``: one entry per checkpoint from ``analyze``.

    With a checkpoint-parallel ``world``, this rank analyses every ``world.size``-th
    checkpoint (the caller gathers the entries); only rank 0 reports progress and writes
    partial reports.
    """
    world = world or distributed.World()
    head: dict[str, Any] = {
        "schema": schema,
        "schema_version": SCHEMA_VERSION,
        "provenance": provenance(settings, **(provenance_extra or {})),
        **(head_extra or {}),
        "complete": False,
        "checkpoints": [],
    }
    if previous is not None:
        check_resumable(previous, head)

    def partial(entries: list[dict[str, Any]]) -> None:
        if on_partial and world.is_main:
            on_partial({**head, "checkpoints": entries})

    by_checkpoint = world.active and world.mode == "checkpoints"
    entries = run_sequence(
        ckpts[world.rank :: world.size] if by_checkpoint else ckpts,
        analyze,
        trust_pickle=trust_pickle,
        done=done_entries(previous),
        on_entry=partial,
        progress=progress if world.is_main else None,
    )
    return {**head, "complete": True, "checkpoints": entries}
