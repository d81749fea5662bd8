"""Table and CSV rows of ``symmetry`` reports: ranks, units, heads, softmax, the sequence.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from symtool.report.tables import fmt_num, heading


def _at(items: list[dict[str, Any]] | None, tau: float, key: str) -> Any:
    """The ``key`` of the entry of ``items`` at threshold ``tau``."""
    for it in items or []:
        if abs(it["tau"] - tau) <= 1e-12 * max(1.0, tau):
            return it.get(key)
    return None


def symmetry_table(report: dict[str, Any], out: Console) -> None:
    st = report["provenance"]["settings"]
    r_tau, d_tau, u_tau = st["rank_tau"], st["dead_tau"], st["dup_tau"]
    for e in report["checkpoints"]:
        title = heading(e, out)
        if title is None:
            continue
        t = Table(title=f"{title} — rotation symmetry (rank)", title_justify="left")
        for col in (
            "layer",
            "W",
            "σ₁",
            f"rank@{r_tau:g}",
            "rank@1e-3",
            "eff. rank",
            "stable rank",
            "excess vs Gaussian",
            "excess vs first",
        ):
            t.add_column(col, justify="left" if col == "layer" else "right", no_wrap=True)
        for la in e["layers"]:
            if la.get("reason"):
                t.add_row(la["name"], "×".join(map(str, la["shape"])), fmt_num(la["sigma_max"]),
                          f"[red]{la['reason']}[/red]")
                continue
            t.add_row(
                la["name"],
                "×".join(map(str, la["shape"])),
                fmt_num(la["sigma_max"]),
                fmt_num(_at(la["ranks"], r_tau, "rank")),
                fmt_num(_at(la["ranks"], 1e-3, "rank")),
                fmt_num(la["effective_rank"], 2),
                fmt_num(la["stable_rank"], 2),
                fmt_num(_at(la["ranks"], r_tau, "excess_nullity_gaussian"), 1),
                fmt_num(_at(la["ranks"], r_tau, "excess_nullity_reference")),
            )
        out.print(t)
        if e["units"]:
            u = Table(
                title="Hidden units (rescaling, sign and permutation symmetries)",
                title_justify="left",
            )
            for col in (
                "pair",
                "activation",
                "units",
                f"dead@{d_tau:g}",
                "half-dead in/out",
                f"identical pairs@{u_tau:g}",
                "independent",
                "imbalance mean|C|",
            ):
                u.add_column(col, justify="left" if col in ("pair", "activation") else "right")
            for un in e["units"]:
                if un.get("reason"):
                    u.add_row(f"{un['incoming']} → {un['outgoing']}", un["activation"],
                              fmt_num(un["units"]), f"[red]{un['reason']}[/red]")
                    continue
                u.add_row(
                    f"{un['incoming']} → {un['outgoing']}",
                    un["activation"],
                    fmt_num(un["units"]),
                    fmt_num(_at(un["dead"], d_tau, "dead")),
                    f"{fmt_num(_at(un['dead'], d_tau, 'half_dead_in'))}/"
                    f"{fmt_num(_at(un['dead'], d_tau, 'half_dead_out'))}",
                    fmt_num(_at(un["duplicates"], u_tau, "pairs")),
                    fmt_num(un["independent_units"]),
                    fmt_num((un.get("imbalance") or {}).get("mean_abs")),
                )
            out.print(u)
            for un in e["units"]:
                lp = un.get("linear_pair")
                if lp:
                    out.print(
                        f"linear pair {un['incoming']} → {un['outgoing']}: rank of K = AAᵀ + BᵀB "
                        f"@{r_tau:g} {fmt_num(_at(lp['ranks'], r_tau, 'count'))}, "
                        f"‖AAᵀ − BᵀB‖_F {fmt_num(lp['imbalance_norm'])} "
                        f"(‖K‖_F {fmt_num(lp['k_norm'])})"
                    )
        for at in e["attention"] or []:
            heads = at.get("head_records") or []
            if at.get("reason"):
                out.print(f"attention {at['name']} ({at['layout']}): no per-head analysis: "
                          f"[red]{at['reason']}[/red]")
                continue
            out.print(
                f"attention {at['name']} ({at['layout']}): {fmt_num(at.get('heads'))} heads, "
                f"dead@{d_tau:g} {fmt_num(_at(at.get('dead'), d_tau, 'dead'))}, identical "
                f"pairs@{u_tau:g} {fmt_num(_at(at.get('duplicates'), u_tau, 'pairs'))}; "
                f"QK ranks@{r_tau:g} "
                + ", ".join(fmt_num(_at(h["qk_ranks"], r_tau, "count")) for h in heads)
                + f"; OV ranks@{r_tau:g} "
                + ", ".join(fmt_num(_at(h["ov_ranks"], r_tau, "count")) for h in heads)
            )
        sm = e.get("softmax")
        if sm and sm.get("translation") is not None:
            out.print(
                f"softmax translation of {sm['layer']}: ‖1ᵀW‖/(√K‖W‖_F) = "
                f"{fmt_num(sm['translation'])} (Gaussian level {fmt_num(sm['gaussian_level'])})"
            )
        elif sm:
            out.print(f"softmax translation of {sm['layer']}: [red]{sm.get('reason')}[/red]")
    seq = report.get("sequence")
    if seq:
        _symmetry_sequence(seq, out)


def _symmetry_sequence(seq: dict[str, Any], out: Console) -> None:
    t = Table(
        title="Over training: events (held ≥ 2 checkpoints, with hysteresis)", title_justify="left"
    )
    for col in ("step", "layer", "quantity", "change", "event"):
        t.add_column(col, justify="right" if col == "step" else "left")
    for ev in seq["events"]:
        colour = "yellow" if ev["label"] == "breaking" else "cyan"
        t.add_row(
            str(ev["step"]),
            ev["layer"],
            ev["quantity"],
            f"{ev['before']} → {ev['after']}",
            f"[{colour}]{ev['label']}[/{colour}]",
        )
    if not seq["events"]:
        t.add_row("—", "", "", "", "no events")
    out.print(t)
    if seq["modes"]:
        out.print(
            "modes learned (σ_k/σ_1 from < 1e-2 to > 1e-1): "
            + "; ".join(f"{m['layer']} mode {m['mode']} at step {m['step']}" for m in seq["modes"])
        )
    for im in seq["imbalance"]:
        what = "‖AAᵀ − BᵀB‖_F" if im.get("quantity") == "matrix" else "imbalance"
        law = im["law"] if im["law"] is not None else f"no fit: {im['reason']}"
        out.print(
            f"{what} of {im['layer']}: {law} (rate {fmt_num(im['rate'])}, "
            f"R² {fmt_num(im['r2'], 2)}) — {im['label']}"
        )


_SYM_COLUMNS = [
    "step",
    "checkpoint",
    "layer",
    "group",
    "quantity",
    "tau",
    "value",
    "status",
    "reason",
]


def _why(record: dict[str, Any]) -> dict[str, Any]:
    """A symmetry record's own CSV status: ``failed`` with its reason when it has one."""
    reason = record.get("reason")
    return {"reason": reason, **({"status": "failed"} if reason else {})}


def symmetry_rows(report: dict[str, Any]) -> tuple[list[str], Iterable[dict[str, Any]]]:
    def rows() -> Iterable[dict[str, Any]]:
        for e in report["checkpoints"]:
            base = {"step": e["step"], "checkpoint": e["path"], "status": e["status"]}
            if e["status"] != "ok":
                yield {**base, "reason": e["error"]}
                continue
            for la in e["layers"]:
                lb = {**base, "layer": la["name"], "group": "rank", **_why(la)}
                for k in ("sigma_max", "effective_rank", "stable_rank"):
                    yield {**lb, "quantity": k, "value": la.get(k)}
                for r in la["ranks"] or []:
                    for k in (
                        "rank",
                        "gaussian_rank",
                        "excess_nullity_gaussian",
                        "excess_nullity_reference",
                    ):
                        yield {**lb, "quantity": k, "tau": r["tau"], "value": r[k]}
            for un in e["units"]:
                ub = {
                    **base,
                    "layer": f"{un['incoming']}->{un['outgoing']}",
                    "group": "units",
                    **_why(un),
                }
                yield {**ub, "quantity": "units", "value": un["units"]}
                yield {**ub, "quantity": "independent_units", "value": un["independent_units"]}
                for d in un["dead"] or []:
                    for k in ("dead", "half_dead_in", "half_dead_out"):
                        yield {**ub, "quantity": k, "tau": d["tau"], "value": d[k]}
                for d in un["duplicates"] or []:
                    for k in ("pairs", "clusters", "independent"):
                        yield {**ub, "quantity": f"duplicate_{k}", "tau": d["tau"], "value": d[k]}
                for k, v in (un.get("imbalance") or {}).items():
                    yield {**ub, "quantity": f"imbalance_{k}", "value": v}
                lp = un.get("linear_pair")
                if lp:
                    for k in ("sigma_max", "imbalance_norm", "k_norm"):
                        yield {**ub, "quantity": f"pair_{k}", "value": lp[k]}
                    for r in lp["ranks"]:
                        yield {**ub, "quantity": "pair_k_rank", "tau": r["tau"],
                               "value": r["count"]}
            for at in e["attention"] or []:
                ab = {**base, "layer": at["name"], "group": "attention", **_why(at)}
                if at.get("reason"):
                    yield {**ab, "quantity": "heads", "value": at.get("heads")}
                for d in at.get("dead") or []:
                    yield {**ab, "quantity": "dead_heads", "tau": d["tau"], "value": d["dead"]}
                for d in at.get("duplicates") or []:
                    for k in ("pairs", "clusters", "independent"):
                        yield {**ab, "quantity": f"duplicate_heads_{k}", "tau": d["tau"],
                               "value": d[k]}
                for h in at.get("head_records") or []:
                    for k in ("qk_ranks", "ov_ranks"):
                        for r in h[k]:
                            yield {
                                **ab,
                                "quantity": f"head{h['index']}.{k[:2]}_rank",
                                "tau": r["tau"],
                                "value": r["count"],
                            }
            sm = e.get("softmax")
            if sm:
                yield {
                    **base,
                    "layer": sm["layer"],
                    "group": "softmax",
                    "quantity": "translation",
                    "value": sm.get("translation"),
                    **_why(sm),
                }

    return _SYM_COLUMNS, rows()
