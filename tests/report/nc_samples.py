"""A real align report given the neural-collapse and NFA records of schema version 5.

The analysis that writes ``collapse`` and ``nfa`` is built beside the report side; the
report tests take a real ``mlp_wd`` report and add those records with made-up, plausible
numbers in exactly the documented shape (docs/reports.md), so every output form can be
tested against known values: NC1 falls over training, layer ``0``'s collapse is skipped
(as a conv layer's would be), NC3 is on the classifier layer ``6`` only, one NFA record
failed and one AGOP is a projection estimate.
"""

from __future__ import annotations

import copy
from typing import Any

SKIP_REASON = "rows are positions of one sample; labels are per sample"
NFA_FAIL_REASON = "AGOP backward pass failed: no gradient reached the layer (test)"
NFA_SETTINGS = {"collapse": True, "collapse_lm": False, "nfa": True, "nfa_projections": 8,
                "nfa_exact_max": 64}


def nc1(step: int, index: int) -> float:
    """The made-up NC1 of the ``index``-th layer at ``step``: falls with training and depth."""
    return round(4.0 / (1.0 + step / 100.0) / (index + 1), 6)


def nfa_alpha(step: int, index: int, sqrt: bool = False) -> float:
    """The made-up α(Z_a, AGOP_a) (or with AGOP_a^1/2): rises with training."""
    base = 0.35 + 0.6 * step / (step + 400.0) + 0.01 * index
    return round(min(base + (0.03 if sqrt else 0.0), 0.999), 6)


def _collapse(step: int, index: int, name: str, last: bool, classes: int) -> dict[str, Any]:
    if index == 0:
        return {
            "status": "skipped", "reason": SKIP_REASON, "classes": None, "rows": None,
            "ignored_rows": None, "nc1": None, "equinorm": None, "equiangularity": None,
            "cos_mean": None, "cos_std": None, "nc3": None, "nc4": None, "classifier": None,
        }  # fmt: skip
    v = nc1(step, index)
    return {
        "status": "ok",
        "reason": None if last else "nc3 only on the layer feeding the classifier",
        "classes": classes,
        "rows": 512,
        "ignored_rows": 3,
        "nc1": v,
        "equinorm": round(v / 7.0, 6),
        "equiangularity": round(v / 11.0, 6),
        "cos_mean": round(-1.0 / (classes - 1) + v / 13.0, 6),
        "cos_std": round(v / 17.0, 6),
        "nc3": round(v / 5.0, 6) if last else None,
        "nc4": round(min(v / 9.0, 1.0), 6),
        "classifier": name if last else None,
    }


def _relation(template: dict[str, Any], formula: str, alpha: float, z_threshold: float,
              a_threshold: float) -> dict[str, Any]:
    rel = copy.deepcopy(template)
    mean, std = rel["null_mean"], rel["null_std"]
    z = (alpha - mean) / std if std else None
    rel.update(formula=formula, side="a", alpha=alpha, z=z, reason=None,
               holds=None if z is None else bool(alpha >= a_threshold and z >= z_threshold),
               borderline=None if z is None else False)
    return rel


def _nfa(layer: dict[str, Any], step: int, index: int, failed: bool,
         thresholds: dict[str, float]) -> dict[str, Any]:
    f_gwa = layer["relations"]["f-GWA"]["alpha"]
    if failed:
        return {"status": "failed", "reason": NFA_FAIL_REASON, "relations": None, "agop": None,
                "f_gwa_alpha": f_gwa}
    template = layer["relations"]["f-GWA"]
    args = (thresholds["z"], thresholds["alpha"])
    rels = {
        "NFA": _relation(template, "Z_a ~ AGOP_a", nfa_alpha(step, index), *args),
        "NFA_sqrt": _relation(template, "Z_a ~ AGOP_a^1/2", nfa_alpha(step, index, True), *args),
    }
    projection = index == 2
    agop = {"method": "projection" if projection else "exact", "outputs": 4,
            "projections": 8 if projection else None, "error": 0.0625 if projection else 0.0}
    return {"status": "ok", "reason": None, "relations": rels, "agop": agop,
            "f_gwa_alpha": f_gwa}


def with_collapse_nfa(report: dict[str, Any]) -> dict[str, Any]:
    """A copy of a real v5 align report with ``collapse`` and ``nfa`` on every ok layer.

    The NFA record of the second layer at the first ok checkpoint failed.
    """
    r = copy.deepcopy(report)
    r["provenance"]["settings"].update(NFA_SETTINGS)
    ok = [e for e in r["checkpoints"] if e["status"] == "ok"]
    for k, e in enumerate(ok):
        layers = [la for la in e["layers"] if la["status"] == "ok"]
        classes = layers[-1]["d_out"]
        for i, layer in enumerate(layers):
            last = i == len(layers) - 1
            layer["collapse"] = _collapse(e["step"], i, layer["name"], last, classes)
            layer["nfa"] = _nfa(layer, e["step"], i, k == 0 and i == 1, r["thresholds"])
    return r
