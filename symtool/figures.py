"""Figures of ``symmetry`` and ``ode`` reports for ``symtool plot`` (see :mod:`symtool.plot`).

* symmetry ``ranks``: numerical rank ``#{k : σ_k/σ_1 > τ}`` over steps at every threshold,
  with the Gaussian-matrix expectation, and dead / independent units of each unit pair;
  the sequence's breaking and restoration events are marked (theory.md section 5).
* symmetry ``spectra``: ``σ_k/σ_1`` per checkpoint when the report keeps singular values,
  else effective and stable rank over steps.
* ode ``stability``: Jacobian eigenvalues ``μ`` as ``z = Δt·λ = Log μ`` against the
  stability regions ``|R_s(z)| ≤ 1`` of RK1–RK4, at rest and along data, one checkpoint.
* ode ``lyapunov``: ``λ_1`` and ``ln ρ(J)`` over steps with the marginal band.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from symtool import entries as en
from symtool.errors import ReportError
from symtool.plot import (
    FIGURES,
    PlotOptions,
    as_float,
    ok_entries,
    one_entry,
    short,
    source_label,
    step_axis,
    x_steps,
)


def _grid(fig: Any, n: int, cols: int = 4, **kw: Any) -> list[Any]:
    """``n`` axes in rows of ``cols``; the unused ones hidden."""
    cols = max(1, min(n, cols))
    rows = math.ceil(n / cols)
    axes = [ax for row in fig.subplots(rows, cols, squeeze=False, **kw) for ax in row]
    for ax in axes[n:]:
        ax.set_visible(False)
    return axes[:n]


def _panels(report: Mapping[str, Any], options: PlotOptions) -> list[tuple[str, str]]:
    """(group, name) of every layer entry to draw, in report order, filtered by --layer."""
    seen: dict[tuple[str, str], None] = {}
    for e in ok_entries(report):
        for group in en.layer_groups(report):
            for x in en.layer_entries(report, e, group):
                if en.match_layers([en.layer_name(x)], options.layers):
                    seen[group, en.layer_name(x)] = None
    if not seen:
        raise ReportError(f"--layer {' '.join(options.layers)} matches no layer")
    return list(seen)


def _entry_of(report: Mapping[str, Any], e: Mapping[str, Any], group: str, name: str) -> dict:
    return next((x for x in en.layer_entries(report, e, group) if en.layer_name(x) == name), {})


def _at(items: Any, tau: Any, key: str) -> float:
    """``key`` of the item of a per-threshold list at threshold ``tau``."""
    for it in items or []:
        if it.get("tau") == tau:
            return as_float(it.get(key))
    return math.nan


def _events(ax: Any, report: Mapping[str, Any], layer: str, quantities: Sequence[str]) -> None:
    for ev in (report.get("sequence") or {}).get("events") or []:
        if ev.get("layer") == layer and ev.get("quantity") in quantities:
            colour = "#d62728" if ev.get("label") == "breaking" else "#2ca02c"
            ax.axvline(ev["step"], color=colour, linestyle="--", linewidth=0.9)
            ax.annotate(
                f"{ev['label']}\n{ev['quantity']} {ev['before']}→{ev['after']}",
                (ev["step"], 1.0),
                xycoords=("data", "axes fraction"),
                fontsize=6,
                color=colour,
                ha="right",
                va="top",
            )


def _n_panels(report: Mapping[str, Any], options: PlotOptions) -> tuple[float, float]:
    return 13.0, 1.0 + 2.7 * math.ceil(len(_panels(report, options)) / 4)


def _n_square(report: Mapping[str, Any], options: PlotOptions) -> tuple[float, float]:
    return 13.0, 1.0 + 4.6 * math.ceil(len(_panels(report, options)) / 3)


def _symmetry_ranks(fig: Any, report: Mapping[str, Any], options: PlotOptions) -> None:
    entries = ok_entries(report)
    xs = x_steps(entries)
    settings = (report.get("provenance") or {}).get("settings") or {}
    panels = _panels(report, options)
    for ax, (group, name) in zip(_grid(fig, len(panels)), panels, strict=True):
        recs = [_entry_of(report, e, group, name) for e in entries]
        if group == "layers":
            tau0 = settings.get("rank_tau")
            for tau in settings.get("rank_taus") or [tau0]:
                ys = [_at(r.get("ranks"), tau, "rank") for r in recs]
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
            g = [_at(r.get("ranks"), tau0, "gaussian_rank") for r in recs]
            ax.plot(xs, g, color="0.4", linestyle=":", label=f"Gaussian matrix, τ = {tau0:g}")
            _events(ax, report, name, ("rank",))
            ax.set_title(f"layer {name} ({'×'.join(map(str, recs[-1].get('shape') or []))})")
        else:
            tau0 = settings.get("dead_tau")
            ax.plot(
                xs,
                [_at(r.get("dead"), tau0, "dead") for r in recs],
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
            _events(ax, report, name, ("dead", "independent", "dead_heads", "independent_heads"))
            out = recs[-1].get("outgoing")
            ax.set_title(f"{group}: {name} → {out}" if out else f"{group}: {name}")
        ax.set_ylim(bottom=0)
        ax.grid(True, linewidth=0.3, alpha=0.5)
        ax.legend(loc="lower left", frameon=False, fontsize=6)
        step_axis(ax, xs, label=True)
    fig.suptitle(
        f"Parameter symmetries over training{source_label(options)}\nnumerical rank "
        "#{k : σ_k/σ_1 > τ} and dead / independent units; dashed lines: events "
        "(red breaking, green restoration)"
    )


def _symmetry_spectra(fig: Any, report: Mapping[str, Any], options: PlotOptions) -> None:
    entries = ok_entries(report)
    xs = x_steps(entries)
    names = [n for g, n in _panels(report, options) if g == "layers"]
    if not names:
        raise ReportError("--layer matches no weight layer")
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    settings = (report.get("provenance") or {}).get("settings") or {}
    have = any(
        _entry_of(report, e, "layers", n).get("singular_values") for e in entries for n in names
    )
    for ax, name in zip(_grid(fig, len(names)), names, strict=True):
        recs = [_entry_of(report, e, "layers", name) for e in entries]
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
            _events(ax, report, name, ("rank",))
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


# ---------------------------------------------------------------------------- ode


def _log_mu(pairs: Any) -> tuple[list[float], list[float]]:
    """``z = Log μ`` (the exact-flow ``Δt λ``) of eigenvalue pairs; zero modes left out."""
    zs = [complex(*p) for p in pairs or [] if p and None not in p and (p[0] or p[1])]
    return [math.log(abs(z)) for z in zs], [math.atan2(z.imag, z.real) for z in zs]


def _ode_stability(fig: Any, report: Mapping[str, Any], options: PlotOptions) -> None:
    from symtool.stability import stability_function

    entry = one_entry(report, options)
    names = [n for _, n in _panels(report, options)]
    import numpy as np

    x, y = np.meshgrid(np.linspace(-4.0, 1.0, 251), np.linspace(-3.5, 3.5, 351))
    styles = {1: "-", 2: "--", 3: "-.", 4: ":"}
    amps = {s: np.abs(stability_function(x + 1j * y, s)) for s in styles}
    for ax, name in zip(_grid(fig, len(names), cols=3), names, strict=True):
        layer = _entry_of(report, entry, "layers", name)
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


def _ode_lyapunov(fig: Any, report: Mapping[str, Any], options: PlotOptions) -> None:
    entries = ok_entries(report)
    xs = x_steps(entries)
    names = [n for _, n in _panels(report, options)]
    for ax, name in zip(_grid(fig, len(names)), names, strict=True):
        recs = [_entry_of(report, e, "layers", name) for e in entries]
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
        band = next(((r.get("verdict") or {}).get("band") for r in recs if r.get("verdict")), 0)
        ax.axhspan(-(band or 0), band or 0, color="0.7", alpha=0.5, label="marginal band")
        ax.axhline(0, color="black", linewidth=0.5)
        ax.grid(True, linewidth=0.3, alpha=0.5)
        ax.set_title(f"{name} ({recs[-1].get('kind')})")
        ax.legend(loc="best", frameon=False, fontsize=6)
        step_axis(ax, xs, label=True)
    fig.suptitle(
        "Largest Lyapunov exponent and Jacobian spectral radii over training"
        f"{source_label(options)}\nbelow 0: contracting, above: expanding"
    )


FIGURES["symmetry"] = {
    "ranks": (_symmetry_ranks, _n_panels),
    "spectra": (_symmetry_spectra, _n_panels),
}
FIGURES["ode"] = {
    "stability": (_ode_stability, _n_square),
    "lyapunov": (_ode_lyapunov, _n_panels),
}
