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

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from symtool.errors import ReportError
from symtool.report.entries import (
    Path_,
    checkpoint_entries,
    checkpoint_metrics,
    dotted,
    entry_error,
    flatten,
    is_ok,
    layer_entries,
    layer_label,
    layer_name,
    match_layers,
    run_metrics,
    select_checkpoints,
)
from symtool.report.files import SCHEMA_VERSION, provenance
from symtool.report.metric_names import (
    MISSING,
    Resolved,
    normalize_metric,
    resolve,
)

OPS = (">=", "<=", "==", "!=", ">", "<")
_REQ = re.compile(r"^\s*(?P<metric>[^<>=!]+?)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<value>.*?)\s*$")

# ------------------------------------------------------------------- requirements


@dataclass(frozen=True)
class CheckSettings:
    """What ``symtool check`` evaluates: requirements, layer globs, checkpoint scope.

    Attributes:
        require: ``METRIC OP VALUE`` texts.
        layer: layer-name globs (every layer when empty).
        step: ``last`` (the last checkpoint that succeeded), ``all``, or a step number.
    """

    require: tuple[str, ...] = ()
    layer: tuple[str, ...] = ()
    step: str | int = "last"


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




# --------------------------------------------------------------------- resolution
























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
        value = flat.get(path, MISSING)
        reason: str | None
        if entry is not None and not is_ok(entry):
            ok, reason = False, f"checkpoint failed: {entry_error(entry)}"
        elif layer is not None and not is_ok(layer):
            ok, reason = False, f"layer failed: {entry_error(layer)}"
        elif value is MISSING:
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
                None if value is MISSING else value,
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
