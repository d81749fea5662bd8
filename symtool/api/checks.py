"""``symtool.check``: requirements on a report, as ``symtool check --require`` evaluates them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from symtool.api.report import Report, load_report
from symtool.report.check import CheckResult
from symtool.report.check import check as _check


def check(
    report: Report | Mapping[str, Any] | str | Path,
    requirements: str | Sequence[str],
    *,
    layers: str | Sequence[str] = (),
    step: int | str = "last",
) -> CheckResult:
    """Evaluate ``METRIC OP VALUE`` requirements (``"alpha_ha_hb >= 0.8"``) over a report.

    Args:
        report: a :class:`Report`, its dict, or a report file.
        requirements: one requirement or several.
        layers: layer-name globs (every layer when empty).
        step: ``last`` (the last checkpoint that succeeded), ``all``, or a step number.

    Returns:
        The outcome: ``result.passed``, ``result.failures``, ``result.summary()``.
    """
    if isinstance(report, str | Path):
        report = load_report(report)
    reqs = [requirements] if isinstance(requirements, str) else list(requirements)
    globs = (layers,) if isinstance(layers, str) else tuple(layers)
    data = report.to_dict() if isinstance(report, Report) else report
    return _check(data, reqs, layers=globs, step=step)
