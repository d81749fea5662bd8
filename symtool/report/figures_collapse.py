"""The ``collapse`` figure of ``align`` reports: neural collapse and the NFA over training.

One row per layer that has a ``collapse`` or ``nfa`` record (``align --collapse``,
``--nfa``; docs/theory.md §3, docs/metrics.md): on the left NC1 = tr(Σ_W Σ_B⁺)/C over steps
on a log axis (collapse drives it to 0); on the right α(Z_a, AGOP_a) (NFA) and
α(Z_a, AGOP_a^1/2) (NFA_sqrt) beside f-GWA's α(G_a, Z_a), with NFA's rotation-null band
and the α threshold, as in the ``relations`` figure. Steps are on the x axis as in every
align figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from symtool.errors import ReportError
from symtool.report import entries as en
from symtool.report.figure_parts import (
    Gaps,
    PlotOptions,
    as_float,
    layer_label,
    layer_names,
    layer_of,
    legend_caption,
    names_caption,
    ok_entries,
    shape_label,
    short_names,
    source_label,
    step_axis,
    x_steps,
)

#: Line colours: NFA, NFA_sqrt, and f-GWA as in the relations figure.
COLOURS = {"NC1": "#7f3b08", "NFA": "#6a3d9a", "NFA_sqrt": "#e7298a", "f-GWA": "#2ca02c"}


def has_collapse(report: Mapping[str, Any]) -> bool:
    """Whether any layer of a checkpoint that succeeded has a ``collapse`` or ``nfa`` record."""
    return any(
        layer.get("collapse") or layer.get("nfa")
        for e in en.checkpoint_entries(report)
        if en.is_ok(e)
        for layer in en.layer_entries(report, e)
    )


def collapse_layers(report: Mapping[str, Any], options: PlotOptions) -> list[str]:
    """Layers (``--layer`` filtered) with a collapse or NFA record at some step.

    Raises:
        ReportError: the report has no such record (made without ``--collapse``/``--nfa``).
    """
    if not has_collapse(report):
        raise ReportError(
            "nothing to plot: this report has no neural collapse or NFA fields "
            "(made without symtool align --collapse / --nfa)"
        )
    entries = ok_entries(report)
    names = [
        n for n in layer_names(report, options)
        if any(layer_of(report, e, n).get("collapse") or layer_of(report, e, n).get("nfa")
               for e in entries)
    ]
    if not names:
        raise ReportError(f"--layer {' '.join(options.layers)} matches no layer with "
                          "neural collapse or NFA fields")
    return names


def collapse_size(report: Mapping[str, Any], options: PlotOptions) -> tuple[float, float]:
    return 11.0, 1.2 + 2.0 * len(collapse_layers(report, options))


def series(report: Mapping[str, Any], name: str) -> dict[str, list[float]]:
    """The figure's data for one layer, per ok checkpoint (NaN where undefined): ``NC1``,
    ``NFA``, ``NFA_sqrt`` (α), ``null_mean``/``null_std`` (NFA's null) and ``f-GWA`` (from
    the NFA record, else the relations)."""
    out: dict[str, list[float]] = {k: [] for k in
                                   ("NC1", "NFA", "NFA_sqrt", "null_mean", "null_std", "f-GWA")}
    for e in ok_entries(report):
        layer = layer_of(report, e, name)
        c, n = layer.get("collapse") or {}, layer.get("nfa") or {}
        rels = n.get("relations") or {}
        out["NC1"].append(as_float(c.get("nc1")))
        out["NFA"].append(as_float((rels.get("NFA") or {}).get("alpha")))
        out["NFA_sqrt"].append(as_float((rels.get("NFA_sqrt") or {}).get("alpha")))
        out["null_mean"].append(as_float((rels.get("NFA") or {}).get("null_mean")))
        out["null_std"].append(as_float((rels.get("NFA") or {}).get("null_std")))
        f_gwa = n.get("f_gwa_alpha") if n else None
        if f_gwa is None:
            f_gwa = ((layer.get("relations") or {}).get("f-GWA") or {}).get("alpha")
        out["f-GWA"].append(as_float(f_gwa))
    return out


def _nc1_panel(ax: Any, report: Mapping[str, Any], name: str, xs: list[float],
               values: list[float], gaps: Gaps, where: str) -> list[str]:
    """NC1 on a log axis; returns the ``layer @ step`` of values at 0 (not on the axis)."""
    entries = ok_entries(report)
    records = [layer_of(report, e, name).get("collapse") or {} for e in entries]
    shown = [v if v > 0 else math.nan for v in values]
    zeros = [f"{where} @ {x:g}" for x, v in zip(xs, values, strict=True) if v == 0]
    if any(not math.isnan(v) for v in shown):
        ax.plot(xs, shown, color=COLOURS["NC1"], marker="o", markersize=3, linewidth=1.4,
                label="NC1")
        ax.set_yscale("log")
        reasons = [r.get("reason") if r and r.get("status") != "skipped" else None
                   for r in records]
        gaps.mark(ax, xs, values, reasons, ax.get_ylim()[0], f"{where} NC1")
    else:
        why = next((r.get("reason") for r in records if r and r.get("reason")), None)
        text = ("NC1 = 0 at every step (exact collapse)" if zeros else
                f"no NC1: {why}" if why else "no collapse record")
        ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center",
                fontsize=8, wrap=True)
        ax.set_yticks([])
    ax.grid(True, which="major", linewidth=0.3, alpha=0.5)
    return zeros


def align_collapse(fig: Any, report: Mapping[str, Any], options: PlotOptions) -> None:
    """Per layer: NC1 over steps (log) and NFA / NFA_sqrt / f-GWA α over steps."""
    layers = collapse_layers(report, options)
    entries = ok_entries(report)
    xs = x_steps(entries)
    threshold = (report.get("thresholds") or {}).get("alpha")
    shown, prefix = short_names(layers)
    gaps = Gaps()
    zeros: list[str] = []
    axes = fig.subplots(len(layers), 2, sharex=True, squeeze=False)
    for i, name in enumerate(layers):
        data = series(report, name)
        left, right = axes[i]
        zeros += _nc1_panel(left, report, name, xs, data["NC1"], gaps, shown[name])
        lo = [m - 2 * s for m, s in zip(data["null_mean"], data["null_std"], strict=True)]
        hi = [m + 2 * s for m, s in zip(data["null_mean"], data["null_std"], strict=True)]
        right.fill_between(xs, lo, hi, color="0.6", alpha=0.35, linewidth=0,
                           label="NFA null ± 2σ")
        for key, style in (("NFA", "-"), ("NFA_sqrt", "--"), ("f-GWA", ":")):
            right.plot(xs, data[key], color=COLOURS[key], linestyle=style, marker="o",
                       markersize=3, linewidth=1.3, label=f"{key} α")
        held = [
            (x, a) for x, a, e in zip(xs, data["NFA"], entries, strict=True)
            if (((layer_of(report, e, name).get("nfa") or {}).get("relations") or {})
                .get("NFA") or {}).get("holds")
        ]
        if held:
            right.plot(*zip(*held, strict=True), linestyle="none", marker="o", markersize=7,
                       markerfacecolor="none", markeredgecolor="black", label="NFA holds")
        nfa = [layer_of(report, e, name).get("nfa") or {} for e in entries]
        gaps.mark(right, xs, data["NFA"],
                  [n.get("reason") or ((n.get("relations") or {}).get("NFA") or {}).get("reason")
                   for n in nfa], -0.2, f"{shown[name]} NFA")
        if threshold is not None:
            right.axhline(threshold, color="black", linestyle=":", linewidth=0.8)
        right.set_ylim(-0.25, 1.05)
        right.grid(True, linewidth=0.3, alpha=0.5)
        last = i == len(layers) - 1
        step_axis(left, xs, label=last)
        step_axis(right, xs, label=last)
        left.set_ylabel(f"{layer_label(shown[name])}\n"
                        f"{shape_label(report, entries, name).strip()}\nNC1")
        right.set_ylabel("α")
        if i == 0:
            left.set_title(r"NC1 = tr($\Sigma_W \Sigma_B^+$)/C (log; lower = more collapsed)")
            right.set_title(r"NFA: $Z_a \sim AGOP_a$, NFA_sqrt: $Z_a \sim AGOP_a^{1/2}$, "
                            r"f-GWA: $G_a \sim Z_a$")
    handles: dict[str, Any] = {}
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    zero_line = f"NC1 = 0, not on the log axis: {', '.join(zeros)}" if zeros else ""
    legend_caption(fig, list(handles.values()), list(handles), names_caption(prefix),
                   zero_line, gaps.caption())
    fig.suptitle(
        f"Neural collapse and the neural feature ansatz over training{source_label(options)}\n"
        f"grey band: NFA's rotation null mean ± 2 std; dotted: threshold α = {threshold}"
    )
