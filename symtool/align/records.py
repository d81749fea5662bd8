"""The records of an ``align`` report: one layer's entry, its warnings and sub-records.

docs/reports.md describes every field; :mod:`symtool.align.run` fills them from the
analyses (:mod:`.crh`, :mod:`.pah`, :mod:`.collapse`, :mod:`.agop`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from symtool.align import agop, collapse, crh, nearest, pah
from symtool.report.files import to_jsonable


@dataclass(frozen=True)
class AlignLayer:
    """One layer of one checkpoint in an ``align`` report (docs/reports.md).

    A layer that could not be analysed has ``status: failed``, its ``reason``, and no
    numbers; its name, kind and shape are still reported.
    """

    name: str
    kind: str
    d_in: int
    d_out: int
    rows: int | None = None
    skipped_rows: dict[str, int] | None = None
    status: str = "ok"
    reason: str | None = None
    relations: dict[str, dict[str, Any]] | None = None
    cross_terms: dict[str, dict[str, Any]] | None = None
    verify: dict[str, Any] | None = None
    pah: dict[str, Any] | None = None
    warnings: list[dict[str, Any]] | None = None
    collapse: dict[str, Any] | None = None
    nfa: dict[str, Any] | None = None


FEW_ROWS_AFFECTS = {
    "a": ("f-RGA", "f-GWA", "f-RWA", "f-CROSS", "H_a~Z_a", "G_a~Z_a"),
    "b": ("b-RGA", "b-GWA", "b-RWA", "b-CROSS", "H_b~Z_b", "G_b~Z_b"),
}
"""What a side's moments with fewer rows than their dimension affect: its relations,
cross term and PAH fits (``H``, ``G`` have rank ≤ rows there)."""


def layer_warnings(
    rows: int, d_in: int, d_out: int, spectra: crh.LayerSpectra | None = None
) -> list[dict[str, Any]]:
    """A layer's warnings (docs/reports.md): fewer probe rows than a side's dimension, and
    decompositions that needed a fallback solver (the spectrum's ``note``).

    With ``n`` rows, ``H`` and ``G`` of a side of dimension ``d > n`` have rank at most
    ``n``: their alignment with ``Z`` is measured on an ``n``-dimensional subspace only.
    """
    out: list[dict[str, Any]] = []
    for side, d, label in (("a", d_in, "d_in"), ("b", d_out, "d_out")):
        if rows < d:
            out.append(
                {
                    "kind": "few_rows",
                    "message": f"{rows} probe rows < {label} = {d}: H_{side} and G_{side} "
                    f"have rank ≤ {rows}, so side {side}'s relations and PAH fits see "
                    "only that subspace (use more probe samples)",
                    "affects": list(FEW_ROWS_AFFECTS[side]),
                }
            )
    if spectra is not None:
        for name in crh.MATRIX_NAMES:
            sp = spectra.get(name)
            if sp is not None and sp.note:
                affects = [rid for rid, a, b, _ in (*crh.RELATIONS, *crh.CROSS_TERMS)
                           if name in (a, b)]
                out.append({"kind": "solver_fallback", "message": f"{name}: {sp.note}",
                            "affects": affects})
    return out


def layer_json(layer: AlignLayer) -> dict[str, Any]:
    """A layer's report entry; ``warnings``, ``collapse`` and ``nfa`` only when present."""
    d = to_jsonable(layer)
    for key in ("warnings", "collapse", "nfa"):  # written only when there is something
        if not d.get(key):
            d.pop(key, None)
    return d


def why_failed(name: str, failed: dict[str, str], bad_weights: list[str]) -> str:
    """Why a layer has no matrices, naming the layers with non-finite weights if any."""
    why = failed.get(name, "no matrices")
    if name in bad_weights:
        return f"non-finite weights; {why}"
    if bad_weights:
        return f"{why}, propagated from non-finite weights in {', '.join(bad_weights)}"
    return why


def relation(r: crh.Relation) -> dict[str, Any]:
    d = to_jsonable(r)
    d.pop("id")
    return d


def pah_record(pw: pah.LayerPowers) -> dict[str, Any]:
    fits = {}
    for f in pw.fits:
        d = to_jsonable(f)
        fits[f"{f.target}~{f.reference}"] = d
    return {
        "fits": fits,
        "consistency": to_jsonable(pw.consistency),
        "phase": to_jsonable(pw.phase),
    }


COLLAPSE_NUMBERS = ("nc1", "equinorm", "equiangularity", "cos_mean", "cos_std", "nc3", "nc4")
"""The numbers of a ``collapse`` record (docs/reports.md), ``None`` where undefined."""


def collapse_skipped(why: str) -> dict[str, Any]:
    """The ``collapse`` record of a layer whose rows carry no labels of their own."""
    return {
        "status": "skipped", "reason": why, "classes": 0, "rows": 0, "ignored_rows": 0,
        **dict.fromkeys(COLLAPSE_NUMBERS), "classifier": None,
    }


def collapse_record(
    col: collapse.Collapse, nc4: nearest.Disagreement | None, classifier: str | None
) -> dict[str, Any]:
    """A layer's ``collapse`` record: NC1–NC3 from its sums, NC4 from the second pass."""
    d: dict[str, Any] = {"status": "ok" if col.nc1 is not None else "failed", "reason": None}
    d.update(col.record())
    reasons = [col.reason] if col.reason else []
    d["nc4"] = None if nc4 is None else nc4.rate
    if nc4 is not None and nc4.reason and col.nc1 is not None:
        reasons.append(f"NC4: {nc4.reason}")
    d["reason"] = "; ".join(reasons) or None
    d["classifier"] = classifier
    return d


def nfa_record(result: agop.Nfa, relations: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """A layer's ``nfa`` record, with f-GWA's α of the same layer beside it."""
    d = result.record()
    gwa = (relations or {}).get("f-GWA") or {}
    d["f_gwa_alpha"] = gwa.get("alpha")
    return d
