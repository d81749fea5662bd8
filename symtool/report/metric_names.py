"""Metric names of ``symtool check``: a METRIC text resolved to dotted paths of a report.

The rules (full path or unique dotted suffix, headline leaves, ``FIELD(KEY)``, globs,
aliases, ``GROUP.METRIC``) are listed in :mod:`symtool.report.check`. An unknown or
ambiguous METRIC is a :class:`~symtool.errors.ReportError` naming the candidates.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from symtool.errors import ReportError
from symtool.report.entries import (
    Path_,
    checkpoint_entries,
    checkpoint_metrics,
    containers,
    dotted,
    flatten,
    id_text,
    layer_entries,
    layer_groups,
    report_kind,
    run_metrics,
)
from symtool.report.files import SCHEMA_VERSION

_CALL = re.compile(r"^(?P<field>[A-Za-z_][\w]*)\((?P<key>[^()]+)\)$")
#: Leaves a record stands for when a requirement names the record itself.
HEADLINE = ("alpha", "kappa", "value", "lambda_1", "translation")


#: Short metric names per report kind, formatted with the report's settings: the
#: headline threshold of per-threshold lists; align's neural collapse and NFA numbers
#: (docs/metrics.md; docs/theory.md §3).
ALIASES: dict[str, dict[str, str]] = {
    "align": {
        "NC1": "collapse.nc1",
        "NC2": "collapse.equiangularity",
        "NC3": "collapse.nc3",
        "NC4": "collapse.nc4",
        "NFA": "nfa.relations.NFA.alpha",
        "NFA_sqrt": "nfa.relations.NFA_sqrt.alpha",
    },
    "symmetry": {
        "rank": "ranks.{rank_tau}.rank",
        "gaussian_rank": "ranks.{rank_tau}.gaussian_rank",
        "excess_nullity": "ranks.{rank_tau}.excess_nullity_gaussian",
        "dead": "dead.{dead_tau}.dead",
        "half_dead_in": "dead.{dead_tau}.half_dead_in",
        "half_dead_out": "dead.{dead_tau}.half_dead_out",
        "duplicates": "duplicates.{dup_tau}.pairs",
        "clusters": "duplicates.{dup_tau}.clusters",
        "clustered_units": "duplicates.{dup_tau}.clustered_units",
        "independent": "duplicates.{dup_tau}.independent",
    },
}


MISSING = object()


def normalize_metric(metric: str) -> str:
    """A metric expression with ``FIELD(KEY)`` rewritten to ``KEY.FIELD``."""
    metric = metric.strip()
    call = _CALL.match(metric)
    return f"{call['key'].strip()}.{call['field']}" if call else metric


@dataclass(frozen=True)
class Resolved:
    """Where a requirement's metric lives.

    Attributes:
        level: ``layer``, ``checkpoint`` or ``run``.
        group: for the layer level, the checkpoint-entry key of the entries (``layers``,
            ``units``, ...); None otherwise.
        paths: the full path(s) inside each entry.
    """

    level: str
    group: str | None
    paths: tuple[Path_, ...]


@dataclass
class _Universe:
    leaves: set[Path_] = field(default_factory=set)
    records: set[Path_] = field(default_factory=set)

    def add(self, data: Any) -> None:
        self.leaves |= set(flatten(data))
        self.records |= containers(data)


def _universes(report: Mapping[str, Any]) -> dict[tuple[str, str | None], _Universe]:
    """Every leaf and record path of each layer group, of checkpoints and of the run."""
    u: dict[tuple[str, str | None], _Universe] = {
        ("layer", g): _Universe() for g in layer_groups(report)
    }
    u["checkpoint", None] = _Universe()
    u["run", None] = _Universe()
    for e in checkpoint_entries(report):
        for g in layer_groups(report):
            for layer in layer_entries(report, e, g):
                u["layer", g].add(layer)
        u["checkpoint", None].add(checkpoint_metrics(report, e))
    u["run", None].add(run_metrics(report))
    return u


def _suffixes(path: Path_) -> set[str]:
    return {dotted(path[i:]) for i in range(len(path))}


def _hits(u: _Universe, metric: str, glob: bool) -> list[Path_]:
    """Paths ``metric`` names in one universe: exact, else suffix, else a record's headline."""
    if glob:
        return sorted(
            p for p in u.leaves if any(fnmatch.fnmatchcase(s, metric) for s in _suffixes(p))
        )
    exact = [p for p in u.leaves if dotted(p) == metric]
    hits = exact or [p for p in u.leaves if metric in _suffixes(p)]
    if not hits:
        for r in (r for r in u.records if metric in _suffixes(r)):
            leaf = next((h for h in HEADLINE if (*r, h) in u.leaves), None)
            if leaf is not None:
                hits.append((*r, leaf))
    return sorted(hits)


def _alias(report: Mapping[str, Any], metric: str) -> str:
    template = ALIASES.get(report_kind(report), {}).get(metric)
    if template is None:
        return metric
    settings = (report.get("provenance") or {}).get("settings") or {}
    values = {k: id_text(v) for k, v in settings.items() if id_text(v) is not None}
    try:
        return template.format(**values)
    except KeyError:
        return metric


def resolve(report: Mapping[str, Any], metric: str) -> Resolved:
    """Find the path(s) ``metric`` names: layer entries, then checkpoints, then the run.

    ``GROUP.METRIC`` (``units.dead``) looks only in that group of layer entries.

    Raises:
        ReportError: unknown (with close names) or ambiguous (with the candidates).
    """
    metric = normalize_metric(metric)
    universes = _universes(report)
    groups = layer_groups(report)
    head, _, rest = metric.partition(".")
    if rest and head in groups[1:]:
        groups, metric = (head,), rest
    asked, metric = metric, _alias(report, metric)
    glob = any(ch in metric for ch in "*?")
    found = {g: h for g in groups if (h := _hits(universes["layer", g], metric, glob))}
    if len(found) > 1:
        names = [f"{g}.{dotted(p)}" for g, hs in found.items() for p in hs]
        raise ReportError(f"metric {metric!r} is ambiguous: {listing(names)}")
    candidates = [("layer", g, h) for g, h in found.items()]
    if not candidates and len(groups) == len(layer_groups(report)):
        for level in ("checkpoint", "run"):
            if h := _hits(universes[level, None], metric, glob):
                candidates = [(level, None, h)]
                break
    if candidates:
        level, group, hits = candidates[0]
        if glob or len(hits) == 1:
            return Resolved(level, group, tuple(hits))
        raise ReportError(f"metric {metric!r} is ambiguous: {listing(dotted(p) for p in hits)}")
    if not glob:  # records that failed hold no numbers: the schema still knows the metric
        present = {g for e in checkpoint_entries(report) for g in groups
                   if layer_entries(report, e, g)}
        by_schema = {g: hit for g in groups
                     if g in present and (hit := _schema_hit(report, g, metric))}
        if len(by_schema) == 1:
            (group, hit), = by_schema.items()
            _opted_in(report, hit, asked)
            return Resolved("layer", group, (hit,))
    if len(groups) == 1 and len(layer_groups(report)) > 1:
        held = [g for g in layer_groups(report) if _hits(universes["layer", g], metric, glob)]
        if not universes["layer", groups[0]].leaves:
            raise ReportError(f"this report has no {groups[0]} records, so "
                              f"{groups[0]}.{metric} is not in it")
        if held:
            raise ReportError(f"metric {metric!r} is not in this report's {groups[0]} records "
                              f"(it is in: {', '.join(held)})")
    every = sorted({s for u in universes.values() for p in u.leaves for s in _suffixes(p)})
    close = difflib.get_close_matches(metric, every, n=6, cutoff=0.6)
    if not close:
        leaves = {p[-1] for u in universes.values() for p in u.leaves}
        close = sorted(x for x in leaves if not x.replace(".", "").isdigit())[:16]
        hint = "metrics include"
    else:
        hint = "did you mean"
    raise ReportError(f"unknown metric {metric!r} in this report; {hint}: {', '.join(close)}")


#: Optional layer records and the ``align`` option that writes them.
OPT_IN = {"collapse": "--collapse", "nfa": "--nfa"}


def _opted_in(report: Mapping[str, Any], path: Path_, metric: str) -> None:
    """Refuse a metric of an opt-in record (``collapse``, ``nfa``) in a report made
    without its option: every layer would fail "not reported", which says less.

    Raises:
        ReportError: the report's settings do not have the option on.
    """
    option = OPT_IN.get(path[0]) if path else None
    settings = (report.get("provenance") or {}).get("settings") or {}
    if option is not None and not settings.get(path[0]):
        named = repr(metric) if metric == dotted(path) else f"{metric!r} ({dotted(path)})"
        raise ReportError(
            f"metric {named} is not in this report: it was made without {option} "
            f"(symtool align {option})"
        )


def _schema_leaves(report: Mapping[str, Any], group: str) -> list[tuple[str, ...]]:
    """Leaf paths a record of ``group`` can have by the report's schema, ``*`` standing for
    a list item (a threshold or index): what a record holds when it is fully analysed."""
    from symtool.report.schema import load_schema

    version = report.get("schema_version")
    try:
        schema = load_schema(report_kind(report), version if isinstance(version, int) else
                             SCHEMA_VERSION)
    except ReportError:
        return []
    defs = schema.get("$defs", {})

    def walk(node: Any, prefix: tuple[str, ...], depth: int) -> Iterator[tuple[str, ...]]:
        if not isinstance(node, dict) or depth > 12:
            return
        if "$ref" in node:
            yield from walk(defs.get(node["$ref"].rsplit("/", 1)[-1]), prefix, depth + 1)
            return
        for option in node.get("anyOf", []):
            yield from walk(option, prefix, depth + 1)
        if isinstance(node.get("properties"), dict):
            for key, sub in node["properties"].items():
                yield from walk(sub, (*prefix, key), depth + 1)
        elif isinstance(node.get("items"), dict):
            yield from walk(node["items"], (*prefix, "*"), depth + 1)
        elif "anyOf" not in node and prefix:
            yield prefix

    group_node = defs.get("checkpoint", {}).get("properties", {}).get(group, {})
    return sorted(set(walk(group_node.get("items"), (), 0)))


_ITEM = r"(-?[0-9][0-9.eE+-]*)"
"""What a list item's key looks like in a metric path: an index or a threshold."""


def _schema_hit(report: Mapping[str, Any], group: str, metric: str) -> Path_ | None:
    """The path ``metric`` names in ``group`` by the schema alone (see :func:`_schema_leaves`):
    how a metric of records that all failed still resolves.

    As for reported paths, the metric is a path or a suffix of one; a list item is an index
    or a threshold. Of several matches the one nearest the record's root is taken (a
    healthy record has ``lyapunov.lambda_1``, not the optional ``lyapunov.spread.lambda_1``);
    None when that is not unique.
    """
    found: set[Path_] = set()
    for leaf in _schema_leaves(report, group):
        parts = [_ITEM if seg == "*" else f"({re.escape(seg)})" for seg in leaf]
        for start in range(len(parts)):  # the metric may be a suffix of the path
            if "*" in leaf[:start]:
                continue
            m = re.fullmatch(r"\.".join(parts[start:]), metric)
            if m:
                found.add((*leaf[:start], *m.groups()))
    if not found:
        return None
    short = min(len(p) for p in found)
    nearest = [p for p in found if len(p) == short]
    return nearest[0] if len(nearest) == 1 else None


def listing(names: Iterable[str], most: int = 12) -> str:
    names = sorted(names)
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more
