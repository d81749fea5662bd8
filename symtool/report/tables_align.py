"""Table and CSV rows of ``align`` reports: α and z per relation, PAH exponents, the trend.

Neural collapse and the NFA (docs/theory.md §3; optional records) are rendered by
:mod:`symtool.report.tables_collapse`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from symtool.report.tables import alpha_row, fmt_num, heading, layer_rows
from symtool.report.tables_collapse import (
    collapse_rows,
    collapse_table,
    has_collapse_or_nfa,
    trend_cells,
)

_REL_IDS = ("f-RGA", "f-GWA", "f-RWA", "b-RGA", "b-GWA", "b-RWA")


def _alpha_cell(rel: dict[str, Any] | None) -> str:
    if not rel:
        return "—"
    a, z = rel.get("alpha"), rel.get("z")
    text = f"{fmt_num(a)} [dim]{z:.1f}[/dim]" if z is not None else fmt_num(a)
    if rel.get("borderline"):
        text += "[yellow]≈[/yellow]"
    if rel.get("holds"):
        return f"[bold green]{text}[/bold green]"
    return text


def align_table(report: dict[str, Any], out: Console) -> None:
    th = report.get("thresholds", {})
    formulas = report.get("relations", {})
    for e in report["checkpoints"]:
        title = heading(e, out)
        if title is None:
            continue
        t = Table(
            title=title,
            title_justify="left",
            caption=f"cells: α ({report['provenance']['settings'].get('metric', 'pearson')}) "
            f"and its exact rotation-null z; bold green = holds (α ≥ {th.get('alpha')} and "
            f"z ≥ {th.get('z')}); ≈ = borderline (z within the null's error of its threshold)",
            caption_justify="left",
        )
        t.add_column("layer")
        t.add_column("W", justify="right")
        for rid in _REL_IDS:
            t.add_column(f"{rid}\n{formulas.get(rid, '')}", justify="right")
        for layer in e["layers"]:
            shape = f"{layer['d_out']}×{layer['d_in']}"
            if layer["status"] != "ok":
                t.add_row(layer["name"], shape, f"[red]failed: {layer['reason']}[/red]")
                continue
            rels = layer["relations"]
            t.add_row(layer["name"], shape, *(_alpha_cell(rels.get(r)) for r in _REL_IDS))
        out.print(t)
        _undefined_notes(e, out)
        _warning_notes(e, out)
        _pah_table(e, out)
        collapse_table(report, e, out)
        for sk in e.get("skipped_layers") or []:
            out.print(f"  skipped {sk['name']}: {sk['reason']}")
    if sum(1 for e in report["checkpoints"] if e["status"] == "ok") > 1:
        _align_trend(report, out)


def _align_trend(report: dict[str, Any], out: Console) -> None:
    """Over training: per step, each relation's α averaged over layers, and how many hold."""
    formulas = report.get("relations", {})
    t = Table(
        title="Over training: mean α over layers (layers where the relation holds / layers)",
        title_justify="left",
    )
    t.add_column("step", justify="right")
    for rid in _REL_IDS:
        t.add_column(f"{rid}\n{formulas.get(rid, '')}", justify="right")
    extra = any(has_collapse_or_nfa(e.get("layers") or []) for e in report["checkpoints"])
    if extra:
        t.add_column("NC1\nclassifier input", justify="right")
        t.add_column("NFA\nZ_a ~ AGOP_a", justify="right")
    for e in report["checkpoints"]:
        if e["status"] != "ok":
            t.add_row(fmt_num(e["step"]), "[red]failed[/red]")
            continue
        ok = [la for la in e["layers"] if la["status"] == "ok"]
        cells = []
        for rid in _REL_IDS:
            alphas = [la["relations"][rid]["alpha"] for la in ok]
            vals = [a for a in alphas if a is not None]
            holds = sum(1 for la in ok if la["relations"][rid]["holds"])
            mean = sum(vals) / len(vals) if vals else None
            cells.append(f"{fmt_num(mean)} ({holds}/{len(ok)})")
        if extra:
            cells += trend_cells(ok)
        t.add_row(fmt_num(e["step"]), *cells)
    out.print(t)


def _notes(out: Console, notes: dict[tuple[str, str], list[str]]) -> None:
    """Print ``layer L: a, b undefined: reason`` lines, one per (layer, reason)."""
    for (layer, reason), what in notes.items():
        out.print(f"  [dim]layer {layer}: {', '.join(what)} undefined: {reason}[/dim]")


def _undefined_notes(e: dict[str, Any], out: Console) -> None:
    """Why the table's dashes are dashes: the reasons of undefined α."""
    notes: dict[tuple[str, str], list[str]] = {}
    for layer in e["layers"]:
        if layer["status"] != "ok":
            continue
        for rid in _REL_IDS:
            rel = (layer.get("relations") or {}).get(rid) or {}
            if rel.get("alpha") is None and rel.get("reason"):
                notes.setdefault((layer["name"], rel["reason"]), []).append(f"α({rid})")
    _notes(out, notes)


def _warning_notes(e: dict[str, Any], out: Console) -> None:
    """The layers' warnings (fewer probe rows than a dimension, solver fallbacks)."""
    for layer in e["layers"]:
        for w in layer.get("warnings") or []:
            affects = ", ".join(w.get("affects") or [])
            out.print(
                f"  [yellow]layer {layer['name']}: {w['message']}[/yellow]"
                + (f" [dim](affects {affects})[/dim]" if affects else "")
            )


def _pah_table(e: dict[str, Any], out: Console) -> None:
    rows = [layer for layer in e["layers"] if layer.get("pah")]
    if not rows:
        return
    t = Table(
        title="PAH exponents κ (M ~ Z^κ; R² in brackets) and nearest phase",
        title_justify="left",
    )
    t.add_column("layer")
    keys = ("H_a~Z_a", "G_a~Z_a", "H_b~Z_b", "G_b~Z_b")
    for k in keys:
        t.add_column(k.replace("~", " ~ ") + "^κ", justify="right")
    t.add_column("Δκ_H, Δκ_G", justify="right")
    t.add_column("phase", justify="left")
    for layer in rows:
        p = layer["pah"]
        cells = []
        for k in keys:
            f = p["fits"].get(k) or {}
            cells.append(
                f"{fmt_num(f.get('kappa'), 2)} [{fmt_num(f.get('r2'), 2)}]"
                if f.get("kappa") is not None
                else "—"
            )
        c = p.get("consistency") or {}
        ph = p.get("phase") or {}
        cells.append(f"{fmt_num(c.get('h_shift'), 2)}, {fmt_num(c.get('g_shift'), 2)}")
        cells.append(
            f"{ph.get('name')} (d {fmt_num(ph.get('distance'), 2)})" if ph.get("name") else "—"
        )
        t.add_row(layer["name"], *cells)
    out.print(t)
    notes: dict[tuple[str, str], list[str]] = {}
    for layer in rows:
        p = layer["pah"]
        for k in keys:
            f = p["fits"].get(k) or {}
            if f.get("kappa") is None and f.get("reason"):
                notes.setdefault((layer["name"], f["reason"]), []).append(f"κ({k})")
        c, ph = p.get("consistency") or {}, p.get("phase") or {}
        if (c.get("h_shift") is None or c.get("g_shift") is None) and c.get("reason"):
            notes.setdefault((layer["name"], c["reason"]), []).append("Δκ")
        if not ph.get("name") and ph.get("reason"):
            notes.setdefault((layer["name"], ph["reason"]), []).append("phase")
    _notes(out, notes)


_ALIGN_COLUMNS = [
    "step",
    "checkpoint",
    "layer",
    "kind",
    "d_in",
    "d_out",
    "metric",
    "quantity",
    "formula",
    "value",
    "null_mean",
    "null_std",
    "z",
    "holds",
    "borderline",
    "status",
    "reason",
]


def align_rows(report: dict[str, Any]) -> tuple[list[str], Iterable[dict[str, Any]]]:
    def rows() -> Iterable[dict[str, Any]]:
        fields = {"layer": "name", "kind": "kind", "d_in": "d_in", "d_out": "d_out"}
        for lb, layer in layer_rows(report, fields):
            if layer is None:
                yield lb
                continue
            for group in ("relations", "cross_terms"):
                for rid, r in (layer.get(group) or {}).items():
                    yield alpha_row(lb, rid, r)
            for w in layer.get("warnings") or []:
                yield {**lb, "metric": "warning", "quantity": w["kind"],
                       "formula": ", ".join(w.get("affects") or []), "reason": w["message"]}
            v = layer.get("verify")
            if v:
                for key in ("h_b_error", "g_a_error"):
                    yield {**lb, "metric": "verify", "quantity": key, "value": v.get(key),
                           "reason": v.get("reason")}
            p = layer.get("pah")
            if p:
                for fid, f in p["fits"].items():
                    for metric in (
                        "kappa",
                        "r2",
                        "ci_low",
                        "ci_high",
                        "agreement",
                        "agreement_blocks",
                        "kappa_star",
                        "alpha_star",
                        "n_kept",
                    ):
                        yield {
                            **lb,
                            "metric": metric,
                            "quantity": fid,
                            "formula": f.get("formula"),
                            "value": f.get(metric),
                            "reason": f.get("reason"),
                        }
                c = p.get("consistency") or {}
                for key in ("h_shift", "g_shift"):
                    yield {**lb, "metric": "consistency", "quantity": key, "value": c.get(key),
                           "reason": c.get("reason")}
                ph = p.get("phase") or {}
                yield {
                    **lb,
                    "metric": "phase_distance",
                    "quantity": ph.get("name") or "phase",
                    "value": ph.get("distance"),
                    "reason": ph.get("reason"),
                }
            yield from collapse_rows(lb, layer)

    return _ALIGN_COLUMNS, rows()
