"""Where things are in a symtool report: checkpoint entries, layer entries, metric paths.

Every report kind is a list of checkpoint entries (``step``, ``path``, ``status``, ...),
each holding lists of per-layer entries. ``check``, ``diff`` and ``plot`` read reports
through these functions only, so a new report kind works with them once its layer lists
are named in :data:`LAYER_GROUPS` (``layers`` is the default). A metric's path is the
tuple of keys down to a leaf; list items are keyed by an identifying field when they
have one (:func:`item_keys`), else by position.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from symtool.errors import ReportError

#: Fields that name a list item in metric paths (first one every item has, distinct).
ID_KEYS = ("name", "id", "gate", "scheme", "tau", "stages", "index")
#: Checkpoint-entry keys holding per-layer entries (groups), per report kind; the first
#: group's entries are the layers proper, the others are labelled ``group/name``.
LAYER_GROUPS: dict[str, tuple[str, ...]] = {"symmetry": ("layers", "units", "attention")}
#: Fields that name a layer entry, first present wins (units: their incoming layer).
NAME_KEYS = ("name", "incoming", "layer")
#: Checkpoint-entry keys that are not metrics (lists of skipped items and the like).
_NOT_METRICS = ("skipped_layers", "skipped")
#: Top-level keys that are not run-level metrics.
_NOT_RUN_METRICS = ("schema", "provenance", "checkpoints")


Path_ = tuple[str, ...]


def item_keys(items: Sequence[Any]) -> list[str]:
    """Path segments of list items: their :data:`ID_KEYS` value when every item has a
    distinct one (``weights.i``, ``schemes.rk4``, ``ranks.0.01``), else their index
    (``exponents.0``)."""
    for key in ID_KEYS:
        ids = [id_text(it.get(key)) if isinstance(it, Mapping) else None for it in items]
        if ids and all(ids) and len(set(ids)) == len(ids):
            return [str(i) for i in ids]
    return [str(i) for i in range(len(items))]


def id_text(v: Any) -> str | None:
    """An identifying value as a path segment (floats as ``repr``: ``0.01``)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, int | str):
        return str(v) or None
    return None


def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, Mapping):
        yield from ((str(k), v) for k, v in obj.items())
    elif isinstance(obj, list):
        yield from zip(item_keys(obj), obj, strict=True)


def flatten(obj: Any, prefix: Path_ = ()) -> dict[Path_, Any]:
    """Leaves of nested JSON data by path (see :func:`item_keys`); empty containers dropped."""
    if not isinstance(obj, Mapping | list):
        return {prefix: obj}
    out: dict[Path_, Any] = {}
    for key, v in _children(obj):
        out.update(flatten(v, (*prefix, key)))
    return out


def containers(obj: Any, prefix: Path_ = ()) -> set[Path_]:
    """Paths of the objects (records) inside ``obj``, itself excluded."""
    out: set[Path_] = set()
    for key, v in _children(obj):
        if isinstance(v, Mapping):
            out.add((*prefix, key))
        if isinstance(v, Mapping | list):
            out |= containers(v, (*prefix, key))
    return out


def dotted(path: Path_) -> str:
    """A path as the dotted text requirements use."""
    return ".".join(path)


def report_kind(report: Mapping[str, Any]) -> str:
    """``align`` for ``symtool/align`` (the part after ``symtool/``)."""
    return str(report.get("schema", "")).removeprefix("symtool/")


def checkpoint_entries(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The report's per-checkpoint entries, in report order."""
    entries = report.get("checkpoints")
    return entries if isinstance(entries, list) else []


def layer_groups(report: Mapping[str, Any]) -> tuple[str, ...]:
    """Checkpoint-entry keys that hold per-layer entries in this kind of report."""
    return LAYER_GROUPS.get(report_kind(report), ("layers",))


def layer_entries(
    report: Mapping[str, Any], entry: Mapping[str, Any], group: str | None = None
) -> list[dict[str, Any]]:
    """Per-layer entries of one checkpoint entry, of one group or all groups."""
    out: list[dict[str, Any]] = []
    for key in layer_groups(report) if group is None else (group,):
        items = entry.get(key)
        if isinstance(items, list):
            out.extend(i for i in items if isinstance(i, dict))
    return out


def layer_name(layer: Mapping[str, Any]) -> str:
    """The name ``--layer`` globs match (see :data:`NAME_KEYS`)."""
    return next((str(layer[k]) for k in NAME_KEYS if layer.get(k) is not None), "?")


def layer_label(report: Mapping[str, Any], group: str, layer: Mapping[str, Any]) -> str:
    """How a layer entry is shown: its name, prefixed with its group past the first."""
    name = layer_name(layer)
    return name if group == layer_groups(report)[0] else f"{group}/{name}"


def checkpoint_metrics(report: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint entry without its layers and skip lists: its own metrics."""
    drop = set(layer_groups(report)) | set(_NOT_METRICS)
    return {k: v for k, v in entry.items() if k not in drop}


def run_metrics(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report's top level without checkpoints and provenance."""
    return {k: v for k, v in report.items() if k not in _NOT_RUN_METRICS}


def is_ok(entry: Mapping[str, Any]) -> bool:
    """An entry (checkpoint or layer) that did not fail."""
    return entry.get("status", "ok") == "ok" and not entry.get("error")


def entry_error(entry: Mapping[str, Any]) -> str:
    """Why a checkpoint or layer failed."""
    return str(entry.get("error") or entry.get("reason") or entry.get("status") or "failed")


def parse_step(step: str | int) -> str | int:
    """``last``, ``all`` or a step number.

    Raises:
        ReportError: anything else.
    """
    if isinstance(step, int) and not isinstance(step, bool):
        return step
    text = str(step).strip().lower()
    if text in ("last", "all"):
        return text
    if text.isdigit():
        return int(text)
    raise ReportError(f"--step must be last, all or a step number (got {step!r})")


def select_checkpoints(report: Mapping[str, Any], step: str | int) -> list[dict[str, Any]]:
    """The checkpoint entries in scope.

    ``last`` is the last checkpoint that did not fail (the last one if all failed), ``all``
    every checkpoint, a number the checkpoint(s) at that step.

    Raises:
        ReportError: no checkpoints, or none at the requested step.
    """
    entries = checkpoint_entries(report)
    if not entries:
        raise ReportError("the report has no checkpoints")
    step = parse_step(step)
    if step == "all":
        return list(entries)
    if step == "last":
        ok = [e for e in entries if is_ok(e)]
        return [ok[-1] if ok else entries[-1]]
    chosen = [e for e in entries if e.get("step") == step]
    if not chosen:
        steps = ", ".join(str(e.get("step")) for e in entries)
        raise ReportError(f"no checkpoint at step {step} (steps: {steps})")
    return chosen


def match_layers(names: Iterable[str], globs: Sequence[str]) -> bool:
    """Whether a layer name matches any glob (every name when there are none)."""
    return True if not globs else any(fnmatch.fnmatchcase(n, g) for n in names for g in globs)
