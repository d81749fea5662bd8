"""Table and CSV rows of the neural-collapse and NFA fields of ``align`` reports.

Neural collapse (NC1–NC4) and the neural feature ansatz (NFA, NFA_sqrt) are optional
per-layer records (``align --collapse``, ``--nfa``; schema version 5): their formulas are
in docs/theory.md §3, their reading in docs/metrics.md. :func:`collapse_table` prints one
table per checkpoint beside the relations table; :func:`collapse_rows` adds their numbers
to the long CSV of :func:`symtool.report.tables_align.align_rows` without a new column.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.table import Table

from symtool.report.tables import alpha_row, fmt_num

#: Numbers of a ``collapse`` record, in table and CSV order, with the CSV formula text.
NC_QUANTITIES: dict[str, str] = {
    "nc1": "tr(Σ_W Σ_B⁺)/C",
    "equiangularity": "mean |cos(μ_c−μ_G, μ_c'−μ_G) + 1/(C−1)|",
    "equinorm": "CV of ‖μ_c − μ_G‖",
    "cos_mean": "mean cos(μ_c−μ_G, μ_c'−μ_G)",
    "cos_std": "std cos(μ_c−μ_G, μ_c'−μ_G)",
    "nc3": "‖W/‖W‖_F − M/‖M‖_F‖²_F",
    "nc4": "P[prediction ≠ argmin_c ‖h − μ_c‖]",
    "classes": "classes present (C)",
    "rows": "labelled rows",
    "ignored_rows": "rows with label < 0 or masked",
}
#: The NFA relations, in table and CSV order.
NFA_IDS = ("NFA", "NFA_sqrt")
_NC_CELLS = ("nc1", "equiangularity", "equinorm", "nc3", "nc4")


def has_collapse_or_nfa(layers: list[dict[str, Any]]) -> bool:
    """Whether any layer entry carries a ``collapse`` or ``nfa`` record."""
    return any(layer.get("collapse") or layer.get("nfa") for layer in layers)


def _alpha_cell(rel: dict[str, Any] | None) -> str:
    """α with its z, ≈ when borderline, bold green when it holds (as the relations table)."""
    if not rel or rel.get("alpha") is None:
        return "—"
    a, z = rel["alpha"], rel.get("z")
    text = f"{fmt_num(a)} [dim]{z:.1f}[/dim]" if z is not None else fmt_num(a)
    if rel.get("borderline"):
        text += "[yellow]≈[/yellow]"
    return f"[bold green]{text}[/bold green]" if rel.get("holds") else text


def _nc_cells(c: dict[str, Any] | None) -> list[str]:
    if not c:
        return ["—"] * len(_NC_CELLS)
    if c.get("status") != "ok":  # the reason is a note under the table
        colour = "red" if c.get("status") == "failed" else "dim"
        return [f"[{colour}]{c.get('status')}[/{colour}]"] + [""] * (len(_NC_CELLS) - 1)
    cells = [fmt_num(c.get(k)) for k in _NC_CELLS]
    if c.get("nc3") is not None and c.get("classifier"):
        cells[3] += f" [dim]({c['classifier']})[/dim]"
    return cells


def _nfa_cells(n: dict[str, Any] | None) -> list[str]:
    if not n:
        return ["—", "—", "—", "—"]
    if n.get("status") != "ok":
        return ["[red]failed[/red]", "", fmt_num(n.get("f_gwa_alpha")), ""]
    rels = n.get("relations") or {}
    agop = n.get("agop") or {}
    if agop.get("method") == "projection":
        how = f"R={agop.get('projections')} ±{fmt_num(agop.get('error'), 2)}"
    else:
        how = str(agop.get("method") or "—")
    return [_alpha_cell(rels.get("NFA")), _alpha_cell(rels.get("NFA_sqrt")),
            fmt_num(n.get("f_gwa_alpha")), how]


def collapse_table(report: dict[str, Any], e: dict[str, Any], out: Console) -> None:
    """One checkpoint's NC1–NC4 and NFA α per layer, when any layer has them."""
    layers = e.get("layers") or []
    if not has_collapse_or_nfa(layers):
        return
    th = report.get("thresholds", {})
    t = Table(
        title="Neural collapse (lower = more collapsed) and neural feature ansatz",
        title_justify="left",
        caption="NC1 = tr(Σ_W Σ_B⁺)/C; NC2 = equiangularity, mean |cos + 1/(C−1)| of centred "
        "class means, and equinorm, CV of their norms; NC3 (layer feeding the classifier, named "
        "in brackets) = ‖W/‖W‖ − M/‖M‖‖²; NC4 = share of rows where the prediction ≠ nearest "
        "class mean. NFA = α(Z_a, AGOP_a), NFA_sqrt = α(Z_a, AGOP_a^1/2) with their exact "
        f"rotation-null z, bold green = holds (α ≥ {th.get('alpha')}, z ≥ {th.get('z')}), "
        "≈ = borderline; f-GWA = α(G_a, Z_a). docs/metrics.md",
        caption_justify="left",
    )
    t.add_column("layer")
    for head in ("NC1", "NC2\nequiangularity", "equinorm", "NC3", "NC4",
                 "NFA\nZ_a ~ AGOP_a", "NFA_sqrt\nZ_a ~ AGOP_a^1/2", "f-GWA α", "AGOP"):
        t.add_column(head, justify="right")
    for layer in layers:
        if not (layer.get("collapse") or layer.get("nfa")):
            continue
        if layer["status"] != "ok":
            t.add_row(layer["name"], "[red]layer failed[/red]")  # reason: the relations table
            continue
        t.add_row(layer["name"], *_nc_cells(layer.get("collapse")), *_nfa_cells(layer.get("nfa")))
    out.print(t)
    _collapse_notes(layers, out)


def _collapse_notes(layers: list[dict[str, Any]], out: Console) -> None:
    """Why a record was skipped or failed, and why a number of an ok record is a dash (NC3
    off the layer feeding the classifier is a dash by design and gets no note)."""
    for layer in layers:
        c = layer.get("collapse") or {}
        if c and c.get("status") != "ok":
            out.print(f"  [dim]layer {layer['name']}: collapse {c.get('status')}: "
                      f"{c.get('reason')}[/dim]")
        n = layer.get("nfa") or {}
        if n and n.get("status") != "ok":
            out.print(f"  [red]layer {layer['name']}: NFA {n.get('status')}: "
                      f"{n.get('reason')}[/red]")
        if c.get("status") == "ok" and c.get("reason"):
            missing = [k for k in _NC_CELLS if c.get(k) is None
                       and not (k == "nc3" and c.get("classifier") is None)]
            if missing:
                out.print(f"  [dim]layer {layer['name']}: {', '.join(missing)} undefined: "
                          f"{c['reason']}[/dim]")
        for rid in NFA_IDS:
            rel = (n.get("relations") or {}).get(rid) or {}
            if n.get("status") == "ok" and rel.get("alpha") is None and rel.get("reason"):
                out.print(f"  [dim]layer {layer['name']}: α({rid}) undefined: "
                          f"{rel['reason']}[/dim]")


def trend_cells(layers: list[dict[str, Any]]) -> list[str]:
    """The over-training table's two cells of one checkpoint (its ok layers): NC1 of the
    layer feeding the classifier (the last layer with an ok collapse record when none is
    marked), and NFA's α averaged over layers with how many hold, as for the relations."""
    ok = [la for la in layers if (la.get("collapse") or {}).get("status") == "ok"]
    fed = [la for la in ok if la["collapse"].get("classifier")] or ok[-1:]
    nc1 = fmt_num(fed[0]["collapse"].get("nc1")) if fed else "—"
    rels = [((la.get("nfa") or {}).get("relations") or {}).get("NFA") or {} for la in layers]
    alphas = [r["alpha"] for r in rels if r.get("alpha") is not None]
    holds = sum(1 for r in rels if r.get("holds"))
    mean = sum(alphas) / len(alphas) if alphas else None
    nfa = f"{fmt_num(mean)} ({holds}/{len(layers)})" if any(la.get("nfa") for la in layers) \
        else "—"
    return [f"{nc1} ({fed[0]['name']})" if fed else nc1, nfa]


def collapse_rows(lb: dict[str, Any], layer: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Long CSV rows of one layer's ``collapse`` and ``nfa`` records (docs/reports.md, CSV).

    ``metric`` is ``collapse`` (``quantity`` one of :data:`NC_QUANTITIES`), ``alpha``
    (``quantity`` ``NFA`` / ``NFA_sqrt``, the columns of a relation) or ``agop``
    (``outputs``, ``projections``, ``error``; ``formula`` the method). A record that was
    skipped or failed gives its rows with empty values and ``status: reason``.
    """
    c = layer.get("collapse")
    if c:
        why = c.get("reason")
        if c.get("status") != "ok":
            why = f"{c.get('status')}: {why}"
        for q, formula in NC_QUANTITIES.items():
            if q == "nc3" and c.get("classifier"):
                formula = f"{formula}, W = {c['classifier']}"
            yield {**lb, "metric": "collapse", "quantity": q, "formula": formula,
                   "value": c.get(q), "reason": why}
    n = layer.get("nfa")
    if n:
        rels = n.get("relations") or {}
        for rid in NFA_IDS:
            r = rels.get(rid)
            if not r:
                why = n.get("reason") if n.get("status") == "ok" else f"failed: {n.get('reason')}"
                yield {**lb, "metric": "alpha", "quantity": rid, "reason": why}
                continue
            yield alpha_row(lb, rid, r)
        agop = n.get("agop") or {}
        for key in ("outputs", "projections", "error"):
            yield {**lb, "metric": "agop", "quantity": key, "formula": agop.get("method"),
                   "value": agop.get(key), "reason": n.get("reason")}
