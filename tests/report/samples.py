"""Small hand-made reports of every kind, for the sink, table and entry tests.

Each has one checkpoint that failed, and records that could not be analysed, each with its
own reason, beside records with numbers. The align, ode and symmetry reports carry the
fields the tables, rows and entry functions read, not every field their schemas require;
the inspect report is complete, and the check and diff reports are made by
:mod:`symtool.report.check` and :mod:`symtool.report.diff`: these three validate.
"""

from __future__ import annotations

import copy
from typing import Any

from symtool.report import check as ck
from symtool.report.diff import Side, diff_reports
from symtool.report.files import SCHEMA_VERSION, provenance

REL_IDS = ("f-RGA", "f-GWA", "f-RWA", "b-RGA", "b-GWA", "b-RWA")
FORMULAS = {
    "f-RGA": "H_a ~ G_a",
    "f-GWA": "G_a ~ Z_a",
    "f-RWA": "H_a ~ Z_a",
    "b-RGA": "H_b ~ G_b",
    "b-GWA": "G_b ~ Z_b",
    "b-RWA": "H_b ~ Z_b",
}
ALPHAS = dict(zip(REL_IDS, (0.8571, 0.9372, 0.9123, 0.6046, 0.5978, 0.9868), strict=True))

FAILED_CKPT_ERROR = "run/step_000020.safetensors: cannot read (truncated)"
FAILED_LAYER_REASON = "H_a: matrix has non-finite entries"
UNDEFINED_ALPHA_REASON = "G_b is constant"
SKIPPED_REASON = "81000000 entries exceed --max-layer-dim 8192"
NO_FIT_REASON = "Z_a has fewer than 3 kept eigenvalues"


def _relation(rid: str, alpha: float | None, reason: str | None = None) -> dict[str, Any]:
    return {
        "formula": FORMULAS.get(rid, "-sym C ~ Z"),
        "side": rid[0],
        "alpha": alpha,
        "null_mean": None if alpha is None else 0.2487,
        "null_std": None if alpha is None else 0.0379,
        "z": None if alpha is None else 17.25,
        "holds": None if alpha is None else alpha >= 0.8,
        "reason": reason,
    }


def _fit(target: str, reference: str, kappa: float | None, reason: str | None = None):
    return {
        "formula": f"{target} ~ {reference}^κ",
        "target": target,
        "reference": reference,
        "side": target[-1],
        "kappa": kappa,
        "intercept": None if kappa is None else -2.98,
        "r2": None if kappa is None else 0.7925,
        "ci_low": None if kappa is None else 0.4608,
        "ci_high": None if kappa is None else 0.6581,
        "n_kept": 16 if kappa is not None else 2,
        "n_total": 16,
        "agreement": None if kappa is None else 0.9713,
        "kappa_star": None if kappa is None else 0.5,
        "alpha_star": None if kappa is None else 0.9628,
        "reason": reason,
    }


def _align_layer(name: str, alphas: dict[str, float]) -> dict[str, Any]:
    relations = {rid: _relation(rid, alphas[rid]) for rid in REL_IDS}
    relations["b-GWA"] = _relation("b-GWA", None, UNDEFINED_ALPHA_REASON)
    return {
        "name": name,
        "kind": "linear",
        "d_in": 3,
        "d_out": 4,
        "rows": 64,
        "skipped_rows": {"h_a": 0, "g_a": 0, "h_b": 0, "g_b": 0},
        "status": "ok",
        "reason": None,
        "relations": relations,
        "cross_terms": {"f-CROSS": _relation("f-CROSS", 0.3669)},
        "verify": {"h_b_error": 1.25e-15, "g_a_error": 2.5e-15, "reason": None},
        "pah": {
            "fits": {
                "H_a~Z_a": _fit("H_a", "Z_a", 0.6279),
                "G_a~Z_a": _fit("G_a", "Z_a", None, NO_FIT_REASON),
            },
            "consistency": {"h_shift": 1.0234, "g_shift": None, "reason": NO_FIT_REASON},
            "phase": {"name": "GWA/RWA", "distance": 0.1234, "exponents": [0.5, 1.0],
                      "reason": None},
        },
    }


def align_report(alphas: dict[str, float] | None = None) -> dict[str, Any]:
    """Steps 10 (layers fc1 ok, fc2 failed, big skipped) and 20 (failed to read)."""
    failed_layer = {
        **_align_layer("fc2", ALPHAS),
        "status": "failed",
        "reason": FAILED_LAYER_REASON,
        "relations": None,
        "cross_terms": None,
        "verify": None,
        "pah": None,
    }
    return {
        "schema": "symtool/align",
        "schema_version": SCHEMA_VERSION,
        "provenance": provenance({"metric": "pearson", "null_samples": 4}),
        "thresholds": {"alpha": 0.8, "z": 3.0},
        "relations": dict(FORMULAS),
        "complete": True,
        "checkpoints": [
            {
                "step": 10,
                "path": "run/step_000010.safetensors",
                "sha256": "ab" * 32,
                "status": "ok",
                "error": None,
                "samples": 64,
                "passes": 1,
                "skipped_layers": [
                    {"name": "big", "kind": "linear", "d_in": 9000, "d_out": 9000,
                     "reason": SKIPPED_REASON}
                ],
                "layers": [_align_layer("fc1", alphas or ALPHAS), failed_layer],
                "duration_s": 0.5,
            },
            {
                "step": 20,
                "path": "run/step_000020.safetensors",
                "sha256": None,
                "status": "failed",
                "error": FAILED_CKPT_ERROR,
            },
        ],
    }


ODE_FAILED_REASON = "non-finite weights in W_hh"


def ode_report() -> dict[str, Any]:
    """Step 5: an LSTM layer with numbers and one that failed; step 6 failed to read."""
    ok = {
        "name": "rnn.l0",
        "kind": "lstm",
        "status": "ok",
        "reason": None,
        "n": 2,
        "t": 2,
        "weights": [
            {"gate": g, "spectral_radius": r, "sigma_max": 1.25, "gamma_sigma_max": 0.3125,
             "departure_from_normality": 0.0625, "unitarity_defect": 0.5,
             "max_timescale": 12.5}
            for g, r in (("i", 0.9512), ("f", 0.8731))
        ],
        "rest": {
            "spectral_radius": 0.9321,
            "norm": 1.0625,
            "delta": 0.2468,
            "euler_dt_limit": 0.75,
            "step": {"dt": 0.3141, "source": "1 - f"},
            "schemes": [{"scheme": "euler", "spectral_abscissa": -0.1357, "n_unstable": 0}],
            "regions": [{"stages": 4, "in_region": True, "margin": 0.0864}],
        },
        "along": None,
        "lyapunov": {
            "exponents": [-0.0543, -0.2109],
            "lambda_1": -0.0543,
            "spread": [0.0121],
            "kaplan_yorke": 0.0,
            "participation_ratio": 1.7321,
        },
        "verdict": {"label": "contracting", "value": -0.0543, "basis": "lambda_1"},
    }
    failed = {"name": "rnn.l0_reverse", "kind": "lstm", "status": "failed",
              "reason": ODE_FAILED_REASON}
    return {
        "schema": "symtool/ode",
        "schema_version": SCHEMA_VERSION,
        "provenance": provenance({"drive": "gaussian"}),
        "complete": True,
        "checkpoints": [
            {"step": 5, "path": "run/step_5.pt", "sha256": "cd" * 32, "status": "ok",
             "error": None, "layers": [ok, failed]},
            {"step": 6, "path": "run/step_6.pt", "sha256": None, "status": "failed",
             "error": "run/step_6.pt: cannot read (truncated)"},
        ],
    }


SYM_LAYER_REASON = "non-finite weights"
SYM_UNITS_REASON = "all units are zero"
SYM_HEADS_REASON = "12 rows do not split into 8 heads"
SYM_SOFTMAX_REASON = "fewer than two classes"


def symmetry_report() -> dict[str, Any]:
    """Step 3: a ranked layer, a failed one, a units pair with numbers and one without,
    attention that could not be split; step 4 failed to read."""
    ranks = [
        {"tau": 0.01, "rank": 3, "gaussian_rank": 4, "excess_nullity_gaussian": 1.0,
         "excess_nullity_reference": None},
        {"tau": 0.001, "rank": 4, "gaussian_rank": 4, "excess_nullity_gaussian": 0.0,
         "excess_nullity_reference": None},
    ]
    layer = {"name": "fc1", "shape": [4, 8], "sigma_max": 2.7183, "effective_rank": 2.8765,
             "stable_rank": 1.4142, "ranks": ranks, "reason": None}
    bad = {"name": "fc2", "shape": [3, 4], "sigma_max": None, "effective_rank": None,
           "stable_rank": None, "ranks": [], "reason": SYM_LAYER_REASON}
    units = {
        "incoming": "fc1", "outgoing": "fc2", "activation": "relu", "units": 4,
        "dead": [{"tau": 0.01, "dead": 1, "half_dead_in": 0, "half_dead_out": 2}],
        "duplicates": [{"tau": 0.01, "pairs": 1, "clusters": 1, "independent": 2}],
        "independent_units": 2, "imbalance": {"mean_abs": 0.4321}, "linear_pair": None,
        "reason": None,
    }
    no_units = {**units, "incoming": "fc3", "outgoing": "fc4", "dead": [], "duplicates": [],
                "independent_units": None, "imbalance": None, "reason": SYM_UNITS_REASON}
    attention = {"name": "attn", "layout": "separate", "heads": 8, "reason": SYM_HEADS_REASON,
                 "dead": [], "duplicates": [], "head_records": []}
    return {
        "schema": "symtool/symmetry",
        "schema_version": SCHEMA_VERSION,
        "provenance": provenance({"rank_tau": 0.01, "dead_tau": 0.01, "dup_tau": 0.01}),
        "complete": True,
        "checkpoints": [
            {
                "step": 3, "path": "run/step_3.safetensors", "sha256": "ef" * 32,
                "status": "ok", "error": None, "layers": [layer, bad],
                "units": [units, no_units], "attention": [attention],
                "softmax": {"layer": "fc2", "translation": None, "gaussian_level": None,
                            "reason": SYM_SOFTMAX_REASON},
            },
            {"step": 4, "path": "run/step_4.safetensors", "sha256": None, "status": "failed",
             "error": "run/step_4.safetensors: cannot read (truncated)"},
        ],
        "sequence": {"events": [], "modes": [], "imbalance": []},
    }


def inspect_report() -> dict[str, Any]:
    """Two checkpoints, the second unreadable (valid against the inspect schema)."""
    return {
        "schema": "symtool/inspect",
        "schema_version": SCHEMA_VERSION,
        "provenance": provenance({"trust_pickle": False, "tensors": False}),
        "checkpoints": [
            {"step": 0, "path": "run/step_0.safetensors", "format": "safetensors",
             "files": 1, "size": 1536, "sha256": "0123456789ab" + "0" * 52, "error": None},
            {"step": 1, "path": "run/step_1.pt", "format": "pickle", "files": 1, "size": None,
             "sha256": None, "error": "cannot read (truncated)"},
        ],
        "tensors": None,
    }


CHECK_REQUIREMENT = "f-RGA >= 0.9"


def check_report() -> dict[str, Any]:
    """``f-RGA >= 0.9`` over :func:`align_report`'s last good step: fc1 (0.8571) fails with
    its value, fc2 with its layer's reason."""
    source = align_report()
    result = ck.check(source, [CHECK_REQUIREMENT, "samples >= 1"])
    settings = {"report": "align.json", "config": None, "require": [CHECK_REQUIREMENT],
                "layers": [], "step": "last"}
    return ck.check_report(result, source, settings)


def diff_report() -> dict[str, Any]:
    """:func:`align_report` against itself with fc1's f-RGA α raised by 0.1."""
    b = align_report({**ALPHAS, "f-RGA": ALPHAS["f-RGA"] + 0.1})
    return diff_reports(Side(align_report(), "a.json"), Side(copy.deepcopy(b), "b.json"))


ALL = {
    "symtool/inspect": inspect_report,
    "symtool/check": check_report,
    "symtool/diff": diff_report,
    "symtool/align": align_report,
    "symtool/ode": ode_report,
    "symtool/symmetry": symmetry_report,
}
"""Every report kind's sample, by schema."""
