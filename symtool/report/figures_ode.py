"""Figures of ``ode`` reports: Jacobian eigenvalues against RK stability regions
(``stability``), Lyapunov exponents over training (``lyapunov``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from symtool.report.figure_parts import (
    PlotOptions,
    as_float,
    entry_of,
    grid,
    layer_panels,
    ok_entries,
    one_entry,
    short,
    source_label,
    step_axis,
    x_steps,
)


def _log_mu(pairs: Any) -> tuple[list[float], list[float]]:
    """``z = Log μ`` (the exact-flow ``Δt λ``) of eigenvalue pairs; zero modes left out."""
    zs = [complex(*p) for p in pairs or [] if p and None not in p and (p[0] or p[1])]
    return [math.log(abs(z)) for z in zs], [math.atan2(z.imag, z.real) for z in zs]


def ode_stability(fig: Any, report: Mapping[str, Any], options: PlotOptions) -> None:
    from symtool.stability import stability_function

    entry = one_entry(report, options)
    names = [n for _, n in layer_panels(report, options)]
    import numpy as np

    x, y = np.meshgrid(np.linspace(-4.0, 1.0, 251), np.linspace(-3.5, 3.5, 351))
    styles = {1: "-", 2: "--", 3: "-.", 4: ":"}
    amps = {s: np.abs(stability_function(x + 1j * y, s)) for s in styles}
    for ax, name in zip(grid(fig, len(names), cols=3), names, strict=True):
        layer = entry_of(report, entry, "layers", name)
        for s, style in styles.items():
            ax.contour(x, y, amps[s], levels=[1.0], colors="0.3", linestyles=style, linewidths=0.9)
            ax.plot([], [], color="0.3", linestyle=style, label=f"|R_{s}(z)| = 1 (RK{s})")
        for point, marker in (("rest", "o"), ("along", "x")):
            reading = layer.get(point) or {}
            re_z, im_z = _log_mu(reading.get("eigenvalues"))
            if re_z:
                ax.scatter(
                    re_z,
                    im_z,
                    marker=marker,
                    s=18,
                    facecolors="none" if marker == "o" else "#d62728",
                    edgecolors="#1f77b4" if marker == "o" else None,
                    label=f"{point}: ρ(J) = {short(reading.get('spectral_radius'))}",
                )
        ax.axhline(0, color="black", linewidth=0.4)
        ax.axvline(0, color="black", linewidth=0.4)
        lows = [
            v
            for p in ("rest", "along")
            for v in _log_mu((layer.get(p) or {}).get("eigenvalues"))[0]
        ]
        ax.set_xlim(max(-12.0, min([-4.0, *lows]) - 0.3), 1.0)
        ax.set_ylim(-3.5, 3.5)
        ax.set_aspect("equal")
        ax.set_xlabel("Re z")
        ax.set_ylabel("Im z")
        verdict = layer.get("verdict") or {}
        ax.set_title(f"{name} ({layer.get('kind')}) — {verdict.get('label', 'no verdict')}")
        ax.legend(loc="lower left", frameon=False, fontsize=6)
    where = f"step {entry.get('step')}" if entry.get("step") is not None else entry.get("path")
    fig.suptitle(
        f"Jacobian eigenvalues μ as z = Δt·λ = Log μ against the RK-s stability regions "
        f"|R_s(z)| ≤ 1 at {where}{source_label(options)}"
    )


def ode_lyapunov(fig: Any, report: Mapping[str, Any], options: PlotOptions) -> None:
    entries = ok_entries(report)
    xs = x_steps(entries)
    names = [n for _, n in layer_panels(report, options)]
    for ax, name in zip(grid(fig, len(names)), names, strict=True):
        recs = [entry_of(report, e, "layers", name) for e in entries]
        lyap = [as_float((r.get("lyapunov") or {}).get("lambda_1")) for r in recs]
        ax.plot(xs, lyap, marker="o", markersize=3, label="λ_1 (probe sequences)")
        for point, style in (("rest", "--"), ("along", ":")):
            rho = [as_float((r.get(point) or {}).get("spectral_radius")) for r in recs]
            ax.plot(
                xs,
                [math.log(v) if v > 0 else math.nan for v in rho],
                linestyle=style,
                label=f"ln ρ(J_{point})",
            )
        low = [as_float((r.get("lyapunov") or {}).get("lambda_1_low")) for r in recs]
        high = [as_float((r.get("lyapunov") or {}).get("lambda_1_high")) for r in recs]
        if any(math.isfinite(v) for v in low + high):
            ax.fill_between(
                xs, low, high, color="#1f77b4", alpha=0.2, linewidth=0,
                label="λ_1 interval (t·SE + frame range): marginal where it holds 0",
            )
        rests = [r for r in recs if (r.get("verdict") or {}).get("basis") == "log_radius_at_rest"]
        bands = [(r.get("verdict") or {}).get("band") for r in rests]
        if bands and (band := max(b or 0.0 for b in bands)) > 0:  # weights-only verdicts
            ax.axhspan(-band, band, color="0.7", alpha=0.5, label="marginal band of ln ρ(J_rest)")
        elif not any(math.isfinite(v) for v in low + high):  # reports before the interval
            band = next(((r.get("verdict") or {}).get("band") for r in recs if r.get("verdict")), 0)
            ax.axhspan(-(band or 0), band or 0, color="0.7", alpha=0.5, label="marginal band")
        ax.axhline(0, color="black", linewidth=0.5)
        ax.grid(True, linewidth=0.3, alpha=0.5)
        ax.set_title(f"{name} ({recs[-1].get('kind')})")
        ax.legend(loc="best", frameon=False, fontsize=6)
        step_axis(ax, xs, label=True)
    fig.suptitle(
        "Largest Lyapunov exponent and Jacobian spectral radii over training"
        f"{source_label(options)}\nverdict: interval below 0 contracting, holding 0 marginal, "
        "above 0 expanding"
    )
