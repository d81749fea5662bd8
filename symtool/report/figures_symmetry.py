"""Figures of ``symmetry`` reports: numerical ranks and units over training (``ranks``),
singular-value spectra (``spectra``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from symtool.errors import ReportError
from symtool.report.figure_parts import (
    PlotOptions,
    as_float,
    entry_of,
    grid,
    layer_label,
    layer_panels,
    mark_events,
    names_caption,
    ok_entries,
    short_names,
    source_label,
    step_axis,
    value_at,
    x_steps,
)


def symmetry_ranks(fig: Any, report: Mapping[str, Any], options: PlotOptions) -> None:
    entries = ok_entries(report)
    xs = x_steps(entries)
    settings = (report.get("provenance") or {}).get("settings") or {}
    panels = layer_panels(report, options)
    shown, prefix = short_names([n for _, n in panels])
    for ax, (group, name) in zip(grid(fig, len(panels)), panels, strict=True):
        recs = [entry_of(report, e, group, name) for e in entries]
        if group == "layers":
            tau0 = settings.get("rank_tau")
            for tau in settings.get("rank_taus") or [tau0]:
                ys = [value_at(r.get("ranks"), tau, "rank") for r in recs]
                bold = tau == tau0
                ax.plot(
                    xs,
                    ys,
                    marker="o" if bold else None,
                    markersize=3,
                    linewidth=1.8 if bold else 0.9,
                    alpha=1 if bold else 0.6,
                    label=f"rank, σ_k/σ_1 > {tau:g}",
                )
            g = [value_at(r.get("ranks"), tau0, "gaussian_rank") for r in recs]
            ax.plot(xs, g, color="0.4", linestyle=":", label=f"Gaussian matrix, τ = {tau0:g}")
            mark_events(ax, report, name, ("rank",))
            shape = next((r.get("shape") for r in reversed(recs) if r.get("shape")), None) or []
            ax.set_title(f"{layer_label(shown[name])} ({'×'.join(map(str, shape))})")
        else:
            tau0 = settings.get("dead_tau")
            ax.plot(
                xs,
                [value_at(r.get("dead"), tau0, "dead") for r in recs],
                marker="o",
                markersize=3,
                color="#d62728",
                label=f"dead units (ν < {tau0:g})",
            )
            ax.plot(
                xs,
                [as_float(r.get("independent_units")) for r in recs],
                marker="s",
                markersize=3,
                color="#1f77b4",
                label="independent units",
            )
            ax.plot(
                xs,
                [as_float(r.get("units")) for r in recs],
                color="0.5",
                linestyle=":",
                label="units",
            )
            mark_events(
                ax, report, name, ("dead", "independent", "dead_heads", "independent_heads")
            )
            out = recs[-1].get("outgoing")
            out = out.removeprefix(prefix) if isinstance(out, str) else out
            ax.set_title(f"{group}: {shown[name]} → {out}" if out else f"{group}: {shown[name]}")
        ax.set_ylim(bottom=0)
        ax.grid(True, linewidth=0.3, alpha=0.5)
        ax.legend(loc="lower left", frameon=False, fontsize=6)
        step_axis(ax, xs, label=True)
    fig.suptitle(
        f"Parameter symmetries over training{source_label(options)}\nnumerical rank "
        "#{k : σ_k/σ_1 > τ} and dead / independent units; dashed lines: events "
        "(red breaking, green restoration)"
    )
    if prefix:
        fig.supxlabel(names_caption(prefix), x=0.01, ha="left", fontsize=7, color="0.25")


def symmetry_spectra(fig: Any, report: Mapping[str, Any], options: PlotOptions) -> None:
    entries = ok_entries(report)
    xs = x_steps(entries)
    names = [n for g, n in layer_panels(report, options) if g == "layers"]
    if not names:
        raise ReportError("--layer matches no weight layer")
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    settings = (report.get("provenance") or {}).get("settings") or {}
    have = any(
        entry_of(report, e, "layers", n).get("singular_values") for e in entries for n in names
    )
    for ax, name in zip(grid(fig, len(names)), names, strict=True):
        recs = [entry_of(report, e, "layers", name) for e in entries]
        if have:
            for i, r in enumerate(recs):
                sv = [v for v in r.get("singular_values") or [] if v is not None]
                if sv and sv[0] > 0:
                    ax.plot(
                        range(1, len(sv) + 1),
                        [v / sv[0] for v in sv],
                        linewidth=1,
                        color=cmap(i / max(1, len(recs) - 1)),
                        label=f"step {xs[i]:g}",
                    )
            for tau in settings.get("rank_taus") or []:
                ax.axhline(tau, color="0.5", linestyle=":", linewidth=0.7)
            ax.set_yscale("log")
            ax.set_xlabel("k")
            ax.set_ylabel("σ_k / σ_1")
        else:
            ax.plot(
                xs,
                [as_float(r.get("effective_rank")) for r in recs],
                marker="o",
                markersize=3,
                label="effective rank exp(H(σ/Σσ))",
            )
            ax.plot(
                xs,
                [as_float(r.get("stable_rank")) for r in recs],
                marker="s",
                markersize=3,
                label="stable rank ‖W‖²_F/σ_1²",
            )
            ax.set_ylim(bottom=0)
            mark_events(ax, report, name, ("rank",))
            step_axis(ax, xs, label=True)
        ax.grid(True, linewidth=0.3, alpha=0.5)
        ax.legend(loc="best", frameon=False, fontsize=6)
        ax.set_title(f"layer {name}")
    note = (
        "σ_k/σ_1 per checkpoint (dark: early, light: late); dotted: rank thresholds τ"
        if have
        else "the report keeps no singular values: spectrum summaries over training"
    )
    fig.suptitle(f"Singular-value spectra{source_label(options)} — {note}")
