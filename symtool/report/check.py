"""``symtool check``: requirements over any metric of any report, for CI and sweeps.

A requirement is ``METRIC OP VALUE`` (OP one of ``>= <= > < == !=``; VALUE a number,
``true``/``false``, or a quoted string for ``==``/``!=``). METRIC names a value of the
report by its dotted path, resolved generically, so every report kind works without
special code:

* each layer entry (then each checkpoint entry, then the report's top level) is
  flattened to dotted paths of its leaves, e.g. ``relations.b-GWA.alpha`` or
  ``pah.fits.H_a~Z_a.kappa`` (list items by id or position, see
  :func:`symtool.report.entries.item_keys`: ``weights.f.sigma_max``, ``phase.exponents.0``);
* METRIC matches a full path or a unique dotted suffix of one (``b-GWA.z``);
* METRIC naming a record whose headline leaf is one of :data:`HEADLINE` means that leaf
  (``b-GWA`` → its ``alpha``, ``H_a~Z_a`` → its ``kappa``);
* ``FIELD(KEY)`` is ``KEY.FIELD`` (``kappa(H_a~Z_a)``, ``z(b-GWA)``);
* METRIC with ``*`` or ``?`` is a glob over paths and must hold for every match;
* :data:`ALIASES` name the headline threshold of symmetry reports' per-threshold lists
  (``rank`` → ``ranks.<rank_tau>.rank``), and ``GROUP.METRIC`` (``units.dead``) picks
  one kind of layer entry.

An unknown or ambiguous METRIC is a :class:`~symtool.errors.ReportError` (exit 2) naming
the candidates. A requirement over a ``null`` value fails as "undefined"; a failed
checkpoint or layer in scope fails every requirement that reaches it, with its error.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from symtool.errors import ReportError
from symtool.report.entries import (
    Path_,
    checkpoint_entries,
    checkpoint_metrics,
    containers,
    dotted,
    entry_error,
    flatten,
    id_text,
    is_ok,
    layer_entries,
    layer_groups,
    layer_label,
    layer_name,
    match_layers,
    report_kind,
    run_metrics,
    select_checkpoints,
)
from symtool.report.files import SCHEMA_VERSION, provenance

OPS = (">=", "<=", "==", "!=", ">", "<")
#: Leaves a record stands for when a requirement names the record itself.
HEADLINE = ("alpha", "kappa", "value", "lambda_1", "translation")
#: Short metric names per report kind, formatted with the report's settings: the
#: headline threshold of per-threshold lists.
ALIASES: dict[str, dict[str, str]] = {
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
_REQ = re.compile(r"^\s*(?P<metric>[^<>=!]+?)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<value>.*?)\s*$")
_CALL = re.compile(r"^(?P<field>[A-Za-z_][\w]*)\((?P<key>[^()]+)\)$")
_MISSING = object()

# ------------------------------------------------------------------- requirements


@dataclass(frozen=True)
class Requirement:
    """One parsed requirement.

    Attributes:
        text: as written.
        metric: the metric expression with ``FIELD(KEY)`` rewritten to ``KEY.FIELD``.
        op: comparison operator.
        value: number, bool or string to compare with.
    """

    text: str
    metric: str
    op: str
    value: float | bool | str

    def holds(self, actual: Any) -> tuple[bool, str | None]:
        """Whether ``actual`` meets the requirement, and why not when it does not."""
        if actual is None:
            return False, "undefined"
        if isinstance(self.value, str) or isinstance(actual, str):
            if not (isinstance(self.value, str) and isinstance(actual, str)):
                return False, f"cannot compare {show(actual)} with {show(self.value)}"
            ok = (actual == self.value) if self.op == "==" else (actual != self.value)
            return ok, None
        if not isinstance(actual, int | float):
            return False, f"not a number ({type(actual).__name__})"
        a, b = float(actual), float(self.value)
        if math.isnan(a):
            return False, "undefined"
        ok = {
            ">=": a >= b,
            "<=": a <= b,
            ">": a > b,
            "<": a < b,
            "==": a == b,
            "!=": a != b,
        }[self.op]
        return ok, None


def parse_requirement(text: str) -> Requirement:
    """Parse ``METRIC OP VALUE``.

    Raises:
        ReportError: not of that form, or the value is not a number, bool or quoted string.
    """
    m = _REQ.match(text)
    if not m or not m["metric"] or not m["value"]:
        raise ReportError(
            f"invalid requirement {text!r}: expected METRIC OP VALUE with OP one of "
            f"{' '.join(OPS)}, e.g. 'b-GWA>=0.8'"
        )
    metric, op, raw = normalize_metric(m["metric"]), m["op"], m["value"]
    value: float | bool | str
    if raw[0] in "\"'" and len(raw) >= 2 and raw[-1] == raw[0]:
        value = raw[1:-1]
        if op not in ("==", "!="):
            raise ReportError(f"invalid requirement {text!r}: strings compare only with == or !=")
    elif raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    else:
        try:
            value = float(raw)
        except ValueError:
            raise ReportError(
                f"invalid requirement {text!r}: {raw!r} is not a number "
                "(strings go in quotes, e.g. pah.phase.name == 'GWA/RWA')"
            ) from None
        if math.isnan(value):
            raise ReportError(f"invalid requirement {text!r}: NaN compares with nothing")
    return Requirement(text.strip(), metric, op, value)


def normalize_metric(metric: str) -> str:
    """A metric expression with ``FIELD(KEY)`` rewritten to ``KEY.FIELD``."""
    metric = metric.strip()
    call = _CALL.match(metric)
    return f"{call['key'].strip()}.{call['field']}" if call else metric


# --------------------------------------------------------------------- resolution


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
    metric = _alias(report, metric)
    glob = any(ch in metric for ch in "*?")
    found = {g: h for g in groups if (h := _hits(universes["layer", g], metric, glob))}
    if len(found) > 1:
        names = [f"{g}.{dotted(p)}" for g, hs in found.items() for p in hs]
        raise ReportError(f"metric {metric!r} is ambiguous: {_listing(names)}")
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
        raise ReportError(f"metric {metric!r} is ambiguous: {_listing(dotted(p) for p in hits)}")
    if not glob:  # records that failed hold no numbers: the schema still knows the metric
        present = {g for e in checkpoint_entries(report) for g in groups
                   if layer_entries(report, e, g)}
        by_schema = {g: hit for g in groups
                     if g in present and (hit := _schema_hit(report, g, metric))}
        if len(by_schema) == 1:
            (group, hit), = by_schema.items()
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


def _listing(names: Iterable[str], most: int = 12) -> str:
    names = sorted(names)
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


# --------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Failure:
    """One (checkpoint, layer, metric) where a requirement did not hold."""

    requirement: str
    step: int | None
    checkpoint: str | None
    layer: str | None
    metric: str
    value: Any
    reason: str | None


@dataclass(frozen=True)
class Outcome:
    """One requirement over its whole scope."""

    requirement: str
    level: str
    metrics: tuple[str, ...]
    pairs: int
    failures: tuple[Failure, ...]

    @property
    def held(self) -> bool:
        """True when it held everywhere in scope."""
        return not self.failures


@dataclass(frozen=True)
class CheckResult:
    """Every requirement's outcome, and the (checkpoint, layer) pairs they covered."""

    outcomes: tuple[Outcome, ...]
    pairs: int

    @property
    def passed(self) -> bool:
        """All requirements held."""
        return all(o.held for o in self.outcomes)

    @property
    def failures(self) -> list[Failure]:
        """Every failure, requirement by requirement."""
        return [f for o in self.outcomes for f in o.failures]

    def summary(self) -> str:
        """``N of M requirements held over K (checkpoint, layer) pairs``."""
        held = sum(o.held for o in self.outcomes)
        return (
            f"{held} of {len(self.outcomes)} requirements held over {self.pairs} "
            f"(checkpoint, layer) pair{'s' if self.pairs != 1 else ''}"
        )


def check(
    report: Mapping[str, Any],
    requirements: Sequence[str],
    *,
    layers: Sequence[str] = (),
    step: str | int = "last",
) -> CheckResult:
    """Evaluate requirements over a report.

    Args:
        report: a validated report.
        requirements: ``METRIC OP VALUE`` texts.
        layers: layer-name globs (all layers when empty).
        step: ``last`` (last checkpoint that did not fail), ``all``, or a step number.

    Raises:
        ReportError: no requirement, a malformed or unresolvable one, or an empty scope.
    """
    if not requirements:
        raise ReportError("nothing to check: give --require (or [check] require in symtool.toml)")
    parsed = [parse_requirement(r) for r in requirements]
    resolved = [resolve(report, r.metric) for r in parsed]
    scope = select_checkpoints(report, step)
    if layers and any(r.level == "layer" for r in resolved):
        every = {
            layer_name(x) for e in checkpoint_entries(report) for x in layer_entries(report, e)
        }
        if not match_layers(every, layers):
            names = ", ".join(sorted(every))
            raise ReportError(f"--layer {' '.join(layers)} matches no layer (layers: {names})")
    pairs: set[tuple[int, str | None]] = set()
    outcomes = []
    for req, res in zip(parsed, resolved, strict=True):
        failures: list[Failure] = []
        count = 0
        for ckpt_index, entry, label, layer, target in _targets(report, scope, res, layers):
            count += 1
            if res.level != "run":
                pairs.add((ckpt_index, label))
            failures.extend(_evaluate(req, res, entry, label, layer, target))
        if count == 0:
            failures.append(
                Failure(req.text, None, None, None, req.metric, None, "nothing in scope")
            )
        metrics = tuple(_metric_text(res, p) for p in res.paths)
        outcomes.append(Outcome(req.text, res.level, metrics, count, tuple(failures)))
    return CheckResult(tuple(outcomes), len(pairs))


def _metric_text(res: Resolved, path: Path_) -> str:
    """A resolved path as shown: prefixed with its group when that is not ``layers``."""
    if res.group is not None and res.group != "layers":
        return f"{res.group}.{dotted(path)}"
    return dotted(path)


def _targets(
    report: Mapping[str, Any], scope: list[dict[str, Any]], res: Resolved, layers: Sequence[str]
) -> Iterator[tuple[int, dict[str, Any] | None, str | None, dict[str, Any] | None, Any]]:
    """(checkpoint id, checkpoint entry, layer label, layer entry, data holding the path)."""
    if res.level == "run":
        yield -1, None, None, None, run_metrics(report)
        return
    for entry in scope:
        index = id(entry)
        if res.level == "checkpoint" or not is_ok(entry):
            yield index, entry, None, None, checkpoint_metrics(report, entry)
            continue
        assert res.group is not None
        for layer in layer_entries(report, entry, res.group):
            if match_layers([layer_name(layer)], layers):
                yield index, entry, layer_label(report, res.group, layer), layer, layer


def _evaluate(
    req: Requirement,
    res: Resolved,
    entry: dict[str, Any] | None,
    label: str | None,
    layer: dict[str, Any] | None,
    target: Any,
) -> Iterator[Failure]:
    step = entry.get("step") if entry else None
    path_text = entry.get("path") if entry else None
    flat = flatten(target)
    for path in res.paths:
        value = flat.get(path, _MISSING)
        reason: str | None
        if entry is not None and not is_ok(entry):
            ok, reason = False, f"checkpoint failed: {entry_error(entry)}"
        elif layer is not None and not is_ok(layer):
            ok, reason = False, f"layer failed: {entry_error(layer)}"
        elif value is _MISSING:
            why = _nearest_reason(flat, path) if layer is not None else None
            ok = False
            reason = f"undefined ({why})" if why else f"not reported for this {res.level}"
        else:
            ok, reason = req.holds(value)
            if reason == "undefined":
                why = _nearest_reason(flat, path)
                reason = f"undefined ({why})" if why else reason
        if not ok:
            yield Failure(
                req.text,
                step,
                path_text,
                label,
                _metric_text(res, path),
                None if value is _MISSING else value,
                reason,
            )


def _nearest_reason(flat: Mapping[Path_, Any], path: Path_) -> str | None:
    """The closest enclosing record's ``reason``, if it says something."""
    for i in range(len(path) - 1, -1, -1):
        why = flat.get((*path[:i], "reason"))
        if isinstance(why, str) and why:
            return why
    return None


# ------------------------------------------------------------------------ report


def check_report(
    result: CheckResult,
    source: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """The ``symtool/check`` report of one check (docs/reports.md).

    Args:
        result: what :func:`check` returned.
        source: the checked report (its kind, version and creation are recorded).
        settings: requirements, layer globs, step and the report's location.
    """
    prov = source.get("provenance") or {}
    requirements = [
        {"requirement": o.requirement, "level": o.level, "metrics": list(o.metrics)}
        | {"evaluated": o.pairs, "held": o.held, "failures": len(o.failures)}
        for o in result.outcomes
    ]
    return {
        "schema": "symtool/check",
        "schema_version": SCHEMA_VERSION,
        "provenance": provenance(settings),
        "checked": {k: source.get(k) for k in ("schema", "schema_version")}
        | {k: prov.get(k) for k in ("symtool", "created")},
        "passed": result.passed,
        "held": sum(o.held for o in result.outcomes),
        "total": len(result.outcomes),
        "pairs": result.pairs,
        "summary": result.summary(),
        "requirements": requirements,
        "failures": [asdict(f) for f in result.failures],
    }


def show(v: Any) -> str:
    """A value as requirements and failure lines write it."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, str):
        return repr(v)
    return str(v)
