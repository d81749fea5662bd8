"""Metric names in requirements (:mod:`symtool.report.metric_names`): what ``b-GWA``,
``kappa(H_a~Z_a)`` or ``dead`` resolve to in a real report, and the errors that name the
candidates."""

from __future__ import annotations

import json
from typing import Any

import pytest

from symtool.errors import ReportError
from symtool.report import entries
from symtool.report.metric_names import resolve


@pytest.fixture
def report(align_text: str) -> dict[str, Any]:
    return json.loads(align_text)


@pytest.mark.parametrize(
    ("metric", "level", "path"),
    [
        ("b-GWA", "layer", "relations.b-GWA.alpha"),
        ("b-GWA.z", "layer", "relations.b-GWA.z"),
        ("relations.b-GWA.alpha", "layer", "relations.b-GWA.alpha"),
        ("f-CROSS", "layer", "cross_terms.f-CROSS.alpha"),
        ("kappa(H_a~Z_a)", "layer", "pah.fits.H_a~Z_a.kappa"),
        ("H_a~Z_a.kappa", "layer", "pah.fits.H_a~Z_a.kappa"),
        ("H_b~Z_b", "layer", "pah.fits.H_b~Z_b.kappa"),
        ("r2(G_b~Z_b)", "layer", "pah.fits.G_b~Z_b.r2"),
        ("h_shift", "layer", "pah.consistency.h_shift"),
        ("phase.exponents.0", "layer", "pah.phase.exponents.0"),
        ("samples", "checkpoint", "samples"),
        ("complete", "run", "complete"),
        ("thresholds.alpha", "run", "thresholds.alpha"),
    ],
)
def test_metric_resolution(report: dict[str, Any], metric: str, level: str, path: str) -> None:
    res = resolve(report, metric)
    assert res.level == level
    assert [entries.dotted(p) for p in res.paths] == [path]


def test_glob_metric_matches_every_relation(report: dict[str, Any]) -> None:
    res = resolve(report, "relations.*.alpha")
    assert sorted(p[1] for p in res.paths) == sorted(report["relations"])


@pytest.mark.parametrize(
    ("metric", "candidates"),
    [
        ("alpha", ["relations.b-GWA.alpha", "cross_terms.f-CROSS.alpha"]),
        ("kappa", ["pah.fits.H_a~Z_a.kappa", "pah.fits.G_b~H_b.kappa"]),
    ],
)
def test_ambiguous_metric_lists_candidates(
    report: dict[str, Any], metric: str, candidates: list[str]
) -> None:
    with pytest.raises(ReportError, match="ambiguous") as info:
        resolve(report, metric)
    for c in candidates:
        assert c in str(info.value)


def test_unknown_metric_suggests_close_names(report: dict[str, Any]) -> None:
    with pytest.raises(ReportError, match="unknown metric 'b-GWB'") as info:
        resolve(report, "b-GWB")
    assert "b-GWA" in str(info.value)


@pytest.mark.parametrize(
    ("metric", "group", "path"),
    [
        ("rank", "layers", "ranks.0.01.rank"),
        ("ranks.0.1.rank", "layers", "ranks.0.1.rank"),
        ("excess_nullity", "layers", "ranks.0.01.excess_nullity_gaussian"),
        ("stable_rank", "layers", "stable_rank"),
        ("dead", "units", "dead.0.01.dead"),
        ("units.dead", "units", "dead.0.01.dead"),
        ("independent", "units", "duplicates.0.01.independent"),
        ("imbalance.mean_abs", "units", "imbalance.mean_abs"),
    ],
)
def test_symmetry_metrics(symmetry_report: dict, metric: str, group: str, path: str) -> None:
    res = resolve(symmetry_report, metric)
    assert (res.level, res.group, [entries.dotted(p) for p in res.paths]) == (
        "layer",
        group,
        [path],
    )
    assert resolve(symmetry_report, "translation").level == "checkpoint"
    assert resolve(symmetry_report, "softmax").paths == (("softmax", "translation"),)

