"""``symtool diff``: two reports of the same layers side by side, with differences.

For example a run with and without weight decay, or two checkpoints of one run. Layers
are matched by name and metrics by their dotted path (the paths ``symtool check`` uses);
each side is one checkpoint, by default the last one that did not fail. Numbers and
booleans are compared; text fields only when they differ and mean something (a phase
name, a status), not reasons, formulas or paths.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from symtool.errors import ReportError
from symtool.report import entries as en
from symtool.report.files import SCHEMA_VERSION, VOLATILE_FIELDS, provenance

#: Text leaves never compared: they describe rather than measure.
_TEXT_NOISE = frozenset(
    {
        "reason",
        "formula",
        "path",
        "sha256",
        "error",
        "checkpoint",
        "target",
        "reference",
        "rule",
        "note",
    }
)
_MISSING = object()


@dataclass(frozen=True)
class Side:
    """One side of a diff: a report, where it came from, and the step to compare."""

    report: Mapping[str, Any]
    source: str
    step: str | int = "last"


def _pick(side: Side, label: str) -> dict[str, Any]:
    step = en.parse_step(side.step)
    if step == "all":
        raise ReportError(f"--step-{label} must be last or a step number, not all")
    entry = en.select_checkpoints(side.report, step)[-1]
    if not en.is_ok(entry):
        raise ReportError(
            f"{side.source}: checkpoint at step {entry.get('step')} failed: {en.entry_error(entry)}"
        )
    return entry


def _leaves(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted leaves, without volatile fields and the ids that already name list items."""
    return {
        en.dotted(p): v
        for p, v in en.flatten(obj).items()
        if p
        and p[-1] not in VOLATILE_FIELDS
        and not (len(p) > 1 and p[-1] in en.ID_KEYS and en.id_text(v) == p[-2])
    }


def _comparable(a: Any, b: Any, key: str) -> bool:
    values = [v for v in (a, b) if v is not _MISSING and v is not None]
    if not values:
        return False
    if any(isinstance(v, str) for v in values):
        return key not in _TEXT_NOISE and a != b
    return True


def _row(layer: str | None, metric: str, a: Any, b: Any) -> dict[str, Any]:
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    return {
        "layer": layer,
        "metric": metric,
        "a": None if a is _MISSING else a,
        "b": None if b is _MISSING else b,
        "delta": b - a if numeric else None,
        "only": "a" if b is _MISSING else "b" if a is _MISSING else None,
    }


def diff_rows(
    report_a: Mapping[str, Any],
    entry_a: Mapping[str, Any],
    report_b: Mapping[str, Any],
    entry_b: Mapping[str, Any],
    *,
    layers: Sequence[str] = (),
    metrics: Sequence[str] = (),
    changed: bool = False,
) -> list[dict[str, Any]]:
    """Rows ``(layer, metric, a, b, delta, only)`` for two checkpoint entries.

    Checkpoint-level metrics come first (``layer`` None), then each layer in A's order
    (layers only in B after). A layer on one side only is one row with ``only`` set.

    Args:
        report_a, report_b: the reports (their kind decides where layers live).
        entry_a, entry_b: the checkpoint entries to compare.
        layers: layer-name globs (all when empty).
        metrics: globs over dotted metric paths or their suffixes (all when empty).
        changed: keep only rows whose values differ.
    """

    def wanted(metric: str) -> bool:
        if not metrics:
            return True
        parts = metric.split(".")
        suffixes = {".".join(parts[i:]) for i in range(len(parts))}
        return any(fnmatch.fnmatchcase(s, g) for s in suffixes for g in metrics)

    def compare(layer: str | None, a: Mapping[str, Any], b: Mapping[str, Any]) -> None:
        la, lb = _leaves(a), _leaves(b)
        for key in list(la) + [k for k in lb if k not in la]:
            va, vb = la.get(key, _MISSING), lb.get(key, _MISSING)
            if not wanted(key) or not _comparable(va, vb, key.rsplit(".", 1)[-1]):
                continue
            if changed and va == vb:
                continue
            rows.append(_row(layer, key, va, vb))

    rows: list[dict[str, Any]] = []
    head_a = {k: v for k, v in en.checkpoint_metrics(report_a, entry_a).items() if k != "path"}
    head_b = {k: v for k, v in en.checkpoint_metrics(report_b, entry_b).items() if k != "path"}
    compare(None, head_a, head_b)
    for group in en.layer_groups(report_a):
        by_a = {en.layer_name(x): x for x in en.layer_entries(report_a, entry_a, group)}
        by_b = {en.layer_name(x): x for x in en.layer_entries(report_b, entry_b, group)}
        for name in list(by_a) + [n for n in by_b if n not in by_a]:
            if not en.match_layers([name], layers):
                continue
            label = en.layer_label(report_a, group, by_a.get(name) or by_b[name])
            if name not in by_a or name not in by_b:
                only = "a" if name in by_a else "b"
                rows.append(_row(label, None, _MISSING, _MISSING) | {"only": only})
                continue
            ok_a, ok_b = en.is_ok(by_a[name]), en.is_ok(by_b[name])
            if not (ok_a and ok_b):  # a failed layer has no numbers: one row with why
                ta = "ok" if ok_a else f"failed: {en.entry_error(by_a[name])}"
                tb = "ok" if ok_b else f"failed: {en.entry_error(by_b[name])}"
                if wanted("status") and not (changed and ta == tb):
                    rows.append(_row(label, "status", ta, tb))
                continue
            compare(label, by_a[name], by_b[name])
    return rows


def diff_reports(
    a: Side,
    b: Side,
    *,
    layers: Sequence[str] = (),
    metrics: Sequence[str] = (),
    changed: bool = False,
) -> dict[str, Any]:
    """The ``symtool/diff`` report of two reports of one kind (docs/reports.md).

    Raises:
        ReportError: the reports are of different kinds, a step is missing or failed, or
            ``--layer`` matches no layer of either report.
    """
    kind_a, kind_b = en.report_kind(a.report), en.report_kind(b.report)
    if kind_a != kind_b:
        raise ReportError(
            f"A is a {kind_a} report but B is a {kind_b} report; diff compares one kind"
        )
    entry_a, entry_b = _pick(a, "a"), _pick(b, "b")
    if layers:
        names = [
            en.layer_name(x)
            for r, e in ((a.report, entry_a), (b.report, entry_b))
            for x in en.layer_entries(r, e)
        ]
        if not en.match_layers(names, layers):
            raise ReportError(
                f"--layer {' '.join(layers)} matches no layer "
                f"(layers: {', '.join(dict.fromkeys(names))})"
            )
    rows = diff_rows(
        a.report, entry_a, b.report, entry_b, layers=layers, metrics=metrics, changed=changed
    )
    settings = {
        "a": a.source,
        "b": b.source,
        "step_a": str(a.step),
        "step_b": str(b.step),
        "layers": list(layers),
        "metrics": list(metrics),
        "changed": changed,
    }
    return {
        "schema": "symtool/diff",
        "schema_version": SCHEMA_VERSION,
        "provenance": provenance(settings),
        "kind": kind_a,
        "a": _describe(a, entry_a),
        "b": _describe(b, entry_b),
        "rows": rows,
    }


def _describe(side: Side, entry: Mapping[str, Any]) -> dict[str, Any]:
    prov = side.report.get("provenance") or {}
    return {
        "source": side.source,
        "step": entry.get("step"),
        "checkpoint": entry.get("path"),
        "schema_version": side.report.get("schema_version"),
        "created": prov.get("created"),
    }
