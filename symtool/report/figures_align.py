"""Figures of ``align`` reports: α over training (``relations``), PAH exponents (``kappa``),
log-log PAH fits (``pah``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from symtool.errors import ReportError
from symtool.report.figure_parts import (
    Gaps,
    PlotOptions,
    as_float,
    layer_label,
    layer_names,
    layer_of,
    legend_caption,
    math_label,
    names_caption,
    ok_entries,
    one_entry,
    shape_label,
    short,
    short_names,
    source_label,
    step_axis,
    x_steps,
)

_REL_COLOURS = {
    "f-RGA": "#1f77b4",
    "f-GWA": "#2ca02c",
    "f-RWA": "#9467bd",
    "b-RGA": "#d62728",
    "b-GWA": "#ff7f0e",
    "b-RWA": "#8c564b",
}


_FITS = ("H_a~Z_a", "G_a~Z_a", "H_b~Z_b", "G_b~Z_b")


_FIT_COLOURS = {
    "H_a~Z_a": "#1f77b4",
    "G_a~Z_a": "#2ca02c",
    "H_b~Z_b": "#d62728",
    "G_b~Z_b": "#ff7f0e",
}


def relations_size(report: Mapping[str, Any], options: PlotOptions) -> tuple[float, float]:
    n = len(layer_names(report, options))
    return 13.0, 0.9 + 1.75 * n


def align_relations(fig: Any, report: Mapping[str, Any], options: PlotOptions) -> None:
    entries = ok_entries(report)
    layers = layer_names(report, options)
    rels = [r for r in report.get("relations", {}) if r in _REL_COLOURS] or list(_REL_COLOURS)
    threshold = (report.get("thresholds") or {}).get("alpha")
    xs = x_steps(entries)
    shown, prefix = short_names(layers)
    gaps = Gaps()
    axes = fig.subplots(len(layers), len(rels), sharex=True, sharey=True, squeeze=False)
    for i, name in enumerate(layers):
        for j, rid in enumerate(rels):
            ax = axes[i][j]
            recs = [
                (layer_of(report, e, name).get("relations") or {}).get(rid) or {} for e in entries
            ]
            alpha = [as_float(r.get("alpha")) for r in recs]
            mean = [as_float(r.get("null_mean")) for r in recs]
            std = [as_float(r.get("null_std")) for r in recs]
            lo = [m - 2 * s for m, s in zip(mean, std, strict=True)]
            hi = [m + 2 * s for m, s in zip(mean, std, strict=True)]
            colour = _REL_COLOURS.get(rid, "C0")
            ax.fill_between(xs, lo, hi, color="0.6", alpha=0.35, linewidth=0, label="null ± 2σ")
            ax.plot(xs, mean, color="0.45", linewidth=0.8)
            ax.plot(xs, alpha, color=colour, marker="o", markersize=3, linewidth=1.4, label="α")
            held = [(x, a) for x, a, r in zip(xs, alpha, recs, strict=True) if r.get("holds")]
            if held:
                ax.plot(
                    *zip(*held, strict=True),
                    linestyle="none",
                    marker="o",
                    markersize=6,
                    markerfacecolor="none",
                    markeredgecolor="black",
                    label="holds",
                )
            gaps.mark(ax, xs, alpha, [r.get("reason") for r in recs], -0.2,
                      f"{shown[name]} {rid}")
            if threshold is not None:
                ax.axhline(threshold, color="black", linestyle=":", linewidth=0.8)
            ax.set_ylim(-0.25, 1.05)
            ax.grid(True, linewidth=0.3, alpha=0.5)
            step_axis(ax, xs, label=i == len(layers) - 1)
            if i == 0:
                formula = (report.get("relations") or {}).get(rid, "")
                ax.set_title(f"{rid}: {math_label(formula)}" if formula else rid)
            if j == 0:
                shape = shape_label(report, entries, name)
                ax.set_ylabel(f"{layer_label(shown[name])}\n{shape.strip()}\nα")
    handles, labels = axes[0][0].get_legend_handles_labels()
    legend_caption(fig, handles, labels, names_caption(prefix), gaps.caption())
    metric = ((report.get("provenance") or {}).get("settings") or {}).get("metric", "pearson")
    fig.suptitle(
        f"CRH alignment α = {metric}(A, B) over training{source_label(options)} — grey band: "
        f"rotation null α(A, QBQᵀ) mean ± 2 std; dotted: threshold α = {threshold}; circled: holds"
    )


def kappa_size(report: Mapping[str, Any], options: PlotOptions) -> tuple[float, float]:
    n = len(layer_names(report, options))
    cols = min(n, 4)
    return 13.0, 1.0 + 2.6 * math.ceil(n / cols)


def align_kappa(fig: Any, report: Mapping[str, Any], options: PlotOptions) -> None:
    entries = ok_entries(report)
    layers = layer_names(report, options)
    xs = x_steps(entries)
    cols = min(len(layers), 4)
    rows = math.ceil(len(layers) / cols)
    shown, prefix = short_names(layers)
    gaps = Gaps()
    axes = fig.subplots(rows, cols, sharex=True, squeeze=False)
    for k, name in enumerate(layers):
        ax = axes[k // cols][k % cols]
        for fid in _FITS:
            fits = [
                ((layer_of(report, e, name).get("pah") or {}).get("fits") or {}).get(fid) or {}
                for e in entries
            ]
            kappa = [as_float(f.get("kappa")) for f in fits]
            lo = [as_float(f.get("ci_low")) for f in fits]
            hi = [as_float(f.get("ci_high")) for f in fits]
            colour = _FIT_COLOURS[fid]
            ax.fill_between(xs, lo, hi, color=colour, alpha=0.15, linewidth=0)
            ax.plot(
                xs,
                kappa,
                color=colour,
                marker="o",
                markersize=3,
                linewidth=1.3,
                label=math_label(fid.replace("~", " ~ ") + "^κ"),
            )
        ax.axhline(0, color="black", linewidth=0.5)
        _kappa_limits(ax, report, entries, name)
        for fid in _FITS:
            fits = [
                ((layer_of(report, e, name).get("pah") or {}).get("fits") or {}).get(fid) or {}
                for e in entries
            ]
            gaps.mark(ax, xs, [as_float(f.get("kappa")) for f in fits],
                      [f.get("reason") if str(f.get("reason") or "").startswith("failed") else None
                       for f in fits], ax.get_ylim()[0], f"{shown[name]} κ({fid})")
        ax.grid(True, linewidth=0.3, alpha=0.5)
        ax.set_title(f"{layer_label(shown[name])}{shape_label(report, entries, name)}")
        step_axis(ax, xs, label=k // cols == rows - 1)
        if k % cols == 0:
            ax.set_ylabel("κ")
    for k in range(len(layers), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    legend_caption(fig, handles, labels, names_caption(prefix), gaps.caption())
    fig.suptitle(
        f"PAH exponents κ of $M \\sim Z^\\kappa$ over training{source_label(options)} — "
        "least-squares fit of log Rayleigh quotients; band: bootstrap 95% interval"
    )


def _kappa_limits(
    ax: Any, report: Mapping[str, Any], entries: Sequence[Mapping[str, Any]], name: str
) -> None:
    """y range from the exponents themselves, so one wide interval does not flatten them."""
    values = [
        v
        for e in entries
        for f in ((layer_of(report, e, name).get("pah") or {}).get("fits") or {}).values()
        if f and f.get("target") and f.get("reference", "").startswith("Z")
        for v in [f.get("kappa")]
        if isinstance(v, int | float)
    ]
    if values:
        ax.set_ylim(min(min(values), 0.0) - 0.5, max(max(values), 0.0) + 0.5)


def pah_size(report: Mapping[str, Any], options: PlotOptions) -> tuple[float, float]:
    n = len(layer_names(report, options))
    cols = min(n, 4)
    return 13.0, 1.0 + 3.0 * math.ceil(n / cols)


def align_pah(fig: Any, report: Mapping[str, Any], options: PlotOptions) -> None:
    entry = one_entry(report, options)
    layers = layer_names(report, options)
    floor = float(((report.get("provenance") or {}).get("settings") or {}).get("pah_floor", 1e-8))
    cols = min(len(layers), 4)
    rows = math.ceil(len(layers) / cols)
    shown, prefix = short_names(layers)
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, name in enumerate(layers):
        ax = axes[k // cols][k % cols]
        pah = layer_of(report, entry, name).get("pah") or {}
        fits = pah.get("fits") or {}
        drawn = False
        for fid in _FITS:
            f = fits.get(fid) or {}
            colour = _FIT_COLOURS[fid]
            points = None
            if options.matrices is not None:
                target, reference = fid.split("~")
                points = pah_points(
                    options.matrices, entry.get("step"), name, target, reference, floor=floor
                )
                ax.scatter(points[0], points[1], s=9, color=colour, alpha=0.7, linewidths=0)
                drawn = drawn or bool(len(points[0]))
            kappa, c = f.get("kappa"), f.get("intercept")
            label = math_label(fid.replace("~", " ~ ") + "^κ")
            if kappa is None or c is None:
                ax.plot([], [], color=colour, label=f"{label}: undefined")
                continue
            if points is not None and len(points[0]):
                z0, z1 = min(points[0]), max(points[0])
            else:
                z0, z1 = 1e-3, 1e1
            zs = [z0 * (z1 / z0) ** (t / 32) for t in range(33)]
            ax.plot(
                zs,
                [math.exp(c) * z**kappa for z in zs],
                color=colour,
                linewidth=1.4,
                label=f"{label}: κ = {kappa:.2f}, R² = {short(f.get('r2'))}",
            )
            drawn = True
        if not drawn:  # nothing positive to put on log axes: say why instead
            ax.set_xlim(1e-3, 1e1)
            ax.set_ylim(1e-3, 1e1)
            why = pah.get("reason") or next(
                (f.get("reason") for f in fits.values() if isinstance(f, dict) and f.get("reason")),
                "PAH not in this report (align --no-pah)" if not pah else "no fit",
            )
            ax.text(0.5, 0.5, f"no PAH fit:\n{why}", transform=ax.transAxes, ha="center",
                    va="center", fontsize=8, wrap=True)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="major", linewidth=0.3, alpha=0.5)
        ax.set_title(f"{layer_label(shown[name])}{shape_label(report, [entry], name)}")
        ax.set_xlabel("$z_i$ (eigenvalue of $Z = W^TW$ or $WW^T$)")
        if k % cols == 0:
            ax.set_ylabel(r"$m_i = v_i^T M v_i$")
        ax.legend(loc="best", frameon=False, fontsize=7)
    for k in range(len(layers), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    where = f"step {entry.get('step')}" if entry.get("step") is not None else entry.get("path")
    note = (
        "points: eigenpairs kept by the floor, from --matrices"
        if options.matrices is not None
        else "report has no eigenvalues: fitted lines only, z range illustrative "
        "(pass --matrices from align --save-matrices for the points)"
    )
    fig.suptitle(
        f"PAH log-log fits $m_i \\approx e^c z_i^\\kappa$ at {where}{source_label(options)}\n{note}"
    )
    if prefix:
        fig.supxlabel(names_caption(prefix), x=0.01, ha="left", fontsize=7, color="0.25")


def pah_points(
    matrices: Path, step: int | None, layer: str, target: str, reference: str, *, floor: float
) -> tuple[list[float], list[float]]:
    """The kept eigenpairs ``(z_i, m_i)`` of one PAH fit, from ``--save-matrices`` output.

    Uses the analysis' own eigendecomposition, Rayleigh quotients and floor
    (:mod:`symtool.linalg`), reading only the two matrices needed.

    Raises:
        ReportError: the file is unreadable or lacks the matrices.
    """
    from safetensors import SafetensorError, safe_open

    from symtool.linalg import kept_support, spectrum

    keys = [f"step_{step}/{layer}/{target}", f"step_{step}/{layer}/{reference}"]
    try:
        with safe_open(str(matrices), framework="pt") as fh:
            present = set(fh.keys())
            missing = [k for k in keys if k not in present]
            if missing:
                raise ReportError(f"no matrix {', '.join(missing)} in --matrices", matrices)
            M, Z = (fh.get_tensor(k) for k in keys)
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise ReportError(f"cannot read --matrices ({exc})", matrices) from None
    s = spectrum(Z)
    m = s.rayleigh(M)
    keep = kept_support(s.values, floor) & kept_support(m, floor)
    return s.values[keep].tolist(), m[keep].tolist()
