"""What every figure of ``symtool plot`` shares: options, entry selection, step axes, labels.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from symtool.errors import ReportError, UsageError
from symtool.report import entries as en


@dataclass(frozen=True)
class PlotOptions:
    """What to draw.

    Attributes:
        layers: layer-name globs (all layers when empty).
        step: ``last``, ``all`` or a step number, for figures of one checkpoint.
        matrices: ``--save-matrices`` file of an align run (eigenvalue scatter).
        title: a label for the report (its file name), shown in figure titles.
    """

    layers: tuple[str, ...] = ()
    step: str | int = "last"
    matrices: Path | None = None
    title: str = ""


Builder = Callable[[Any, Mapping[str, Any], PlotOptions], None]


Sizer = Callable[[Mapping[str, Any], PlotOptions], tuple[float, float]]


def ok_entries(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Checkpoint entries that succeeded (an error when there is none)."""
    entries = [e for e in en.checkpoint_entries(report) if en.is_ok(e)]
    if not entries:
        raise ReportError("nothing to plot: no checkpoint of the report succeeded")
    return entries


def layer_names(report: Mapping[str, Any], options: PlotOptions) -> list[str]:
    """Layer names in report order, filtered by ``--layer``."""
    names: dict[str, None] = {}
    for e in ok_entries(report):
        for layer in en.layer_entries(report, e):
            names[en.layer_name(layer)] = None
    chosen = [n for n in names if en.match_layers([n], options.layers)]
    if not chosen:
        raise ReportError(
            f"--layer {' '.join(options.layers)} matches no layer (layers: {', '.join(names)})"
        )
    return chosen


def layer_of(report: Mapping[str, Any], entry: Mapping[str, Any], name: str) -> dict[str, Any]:
    for layer in en.layer_entries(report, entry):
        if en.layer_name(layer) == name:
            return layer
    return {}


def x_steps(entries: Sequence[Mapping[str, Any]]) -> list[float]:
    """x positions: steps, or checkpoint order when a step is unknown."""
    steps = [e.get("step") for e in entries]
    if any(s is None for s in steps):
        return [float(i) for i in range(len(entries))]
    return [float(s) for s in steps]


def step_axis(ax: Any, xs: Sequence[float], label: bool) -> None:
    """Symlog steps when they span a decade or are unevenly spaced (0/10/50, 0/10/100/1000),
    so early checkpoints are not bunched; ticks at the steps themselves when there are at
    most 8 of them, else at 0 and powers of ten."""
    positive = sorted({x for x in xs if x > 0})
    steps = sorted(set(xs))
    gaps = [b - a for a, b in itertools.pairwise(steps)]
    uneven = len(gaps) >= 2 and max(gaps) >= 4 * min(gaps)
    if positive and (max(positive) / min(positive) >= 10 or uneven):
        lin = min(positive)
        ax.set_xscale("symlog", linthresh=lin, linscale=0.5)
        if len(steps) <= 8:
            ticks = steps
            names = [f"{t:g}" for t in ticks]
        else:
            lo, hi = math.ceil(math.log10(lin)), math.floor(math.log10(max(positive)))
            ticks = ([0.0] if min(xs) <= 0 else []) + [10.0**k for k in range(lo, hi + 1)]
            names = ["0" if t == 0 else f"$10^{{{round(math.log10(t))}}}$" for t in ticks]
        ax.set_xticks(ticks, names)
        ax.set_xticks([], minor=True)
        left = min(xs) - 0.3 * lin if min(xs) <= 0 else min(xs) / 1.3
        ax.set_xlim(left, max(xs) * 1.3)
    if label:
        ax.set_xlabel("training step" + (" (symlog)" if ax.get_xscale() == "symlog" else ""))


def short_names(names: Sequence[str]) -> tuple[dict[str, str], str]:
    """Layer names without the dotted prefix they all share, and that prefix.

    ``transformer.h.0.attn.c_attn``, ``transformer.h.1.mlp.c_fc`` → ``0.attn.c_attn``,
    ``1.mlp.c_fc`` (prefix ``transformer.h.``). The last component is always kept, so a
    single layer keeps its own name's last part.
    """
    parts = [n.split(".") for n in names]
    common = 0
    if parts:
        shortest = min(len(p) for p in parts)
        while common < shortest - 1 and len({p[common] for p in parts}) == 1:
            common += 1
    prefix = ".".join(parts[0][:common]) + "." if common else ""
    return {n: ".".join(p[common:]) for n, p in zip(names, parts, strict=True)}, prefix


LABEL_WIDTH = 16
"""Characters of a layer name on one line of an axis label; longer names wrap at a dot."""


def layer_label(short: str) -> str:
    """``layer 4`` for a bare number (Sequential indices), else the name, wrapped at the
    dot nearest its middle when longer than :data:`LABEL_WIDTH` (so a vertical label does
    not run into the next panel: ``transformer.h.0`` / ``.attn.c_attn``)."""
    if not any(ch.isalpha() for ch in short):
        return f"layer {short}"
    dots = [i for i, ch in enumerate(short) if ch == "."]
    if len(short) <= LABEL_WIDTH or not dots:
        return short
    # nearest the middle, preferring a cut after a block index (``h.0`` | ``.attn``)
    cut = min(dots, key=lambda i: abs(i - len(short) / 2)
              - (LABEL_WIDTH / 4 if short[:i].rsplit(".", 1)[-1].isdigit() else 0))
    return f"{short[:cut]}\n{short[cut:]}"


def names_caption(prefix: str) -> str:
    """The caption line that gives the full names back."""
    return f"layer names without their common prefix '{prefix}'" if prefix else ""


class Gaps:
    """Values a figure cannot draw, marked on their axes and explained in its caption.

    Each distinct reason gets a number; :meth:`mark` puts a red ``×`` with that number where
    the value would be, and :meth:`caption` lists ``[k] reason (where)``.
    """

    def __init__(self) -> None:
        self.reasons: dict[str, list[str]] = {}

    def mark(
        self,
        ax: Any,
        xs: Sequence[float],
        values: Sequence[float],
        reasons: Sequence[Any],
        y: float,
        where: str,
    ) -> None:
        """Mark each NaN value that has a reason at height ``y`` (axes data units)."""
        for x, v, why in zip(xs, values, reasons, strict=True):
            if not math.isnan(v) or not why:
                continue
            where_list = self.reasons.setdefault(why, [])
            k = list(self.reasons).index(why) + 1
            step = f"{x:g}"
            if f"{where} @ {step}" not in where_list:
                where_list.append(f"{where} @ {step}")
            ax.plot([x], [y], linestyle="none", marker="x", color="#d62728", markersize=6,
                    markeredgewidth=1.5, clip_on=False, zorder=5)
            ax.annotate(str(k), (x, y), xytext=(3, 2), textcoords="offset points",
                        fontsize=6, color="#d62728")

    def caption(self, limit: int = 6) -> str:
        """``× undefined: [1] reason (where, …)`` lines, or empty."""
        if not self.reasons:
            return ""
        lines = []
        for k, (why, where) in enumerate(self.reasons.items(), 1):
            shown = ", ".join(where[:limit]) + (f", … {len(where) - limit} more" if
                                                len(where) > limit else "")
            lines.append(f"× [{k}] undefined: {_clip(why, 110)} ({shown})")
        return "\n".join(lines)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def legend_caption(fig: Any, handles: Sequence[Any], labels: Sequence[str], *lines: str) -> None:
    """The figure's legend under the panels, with the caption lines (empty ones skipped)
    as its left-aligned title: constrained layout makes room for both."""
    text = "\n".join(line for line in lines if line)
    fig.legend(handles, labels, loc="outside lower center", ncols=max(len(labels), 1),
               frameon=False, title=text or None, title_fontsize=7, alignment="left")


def math_label(formula: str) -> str:
    """``H_a ~ Z_a^κ`` → mathtext."""
    text = formula.replace("κ", r"\kappa").replace("~", r"\sim").replace("-sym", r"-\mathrm{sym}\,")
    return f"${text}$"


def as_float(v: Any) -> float:
    """A number from a report for plotting; NaN (a gap) for null."""
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan


def one_entry(report: Mapping[str, Any], options: PlotOptions) -> dict[str, Any]:
    """The one checkpoint ``--step`` names (``last``: the last that succeeded)."""
    step = en.parse_step(options.step)
    if step == "all":
        raise UsageError("--step all is not a single checkpoint; use last or a step number")
    entry = en.select_checkpoints(report, step)[-1]
    if not en.is_ok(entry):
        raise ReportError(f"checkpoint at step {entry.get('step')} failed: {en.entry_error(entry)}")
    return entry


def shape_label(report: Mapping[str, Any], entries: Sequence[Mapping[str, Any]], name: str) -> str:
    for e in reversed(entries):  # the last entry that has the layer
        layer = layer_of(report, e, name)
        if "d_out" in layer and "d_in" in layer:
            return f" ({layer['d_out']}×{layer['d_in']})"
    return ""


def source_label(options: PlotOptions) -> str:
    """`` (report.json)`` for titles."""
    return f" ({options.title})" if options.title else ""


def short(v: Any) -> str:
    """A number with two decimals for legends; a dash for null."""
    return "—" if v is None else f"{v:.2f}"


def grid(fig: Any, n: int, cols: int = 4, **kw: Any) -> list[Any]:
    """``n`` axes in rows of ``cols``; the unused ones hidden."""
    cols = max(1, min(n, cols))
    rows = math.ceil(n / cols)
    axes = [ax for row in fig.subplots(rows, cols, squeeze=False, **kw) for ax in row]
    for ax in axes[n:]:
        ax.set_visible(False)
    return axes[:n]


def layer_panels(report: Mapping[str, Any], options: PlotOptions) -> list[tuple[str, str]]:
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


def entry_of(report: Mapping[str, Any], e: Mapping[str, Any], group: str, name: str) -> dict:
    return next((x for x in en.layer_entries(report, e, group) if en.layer_name(x) == name), {})


def value_at(items: Any, tau: Any, key: str) -> float:
    """``key`` of the item of a per-threshold list at threshold ``tau``."""
    for it in items or []:
        if it.get("tau") == tau:
            return as_float(it.get(key))
    return math.nan


def mark_events(ax: Any, report: Mapping[str, Any], layer: str, quantities: Sequence[str]) -> None:
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


def n_panels(report: Mapping[str, Any], options: PlotOptions) -> tuple[float, float]:
    return 13.0, 1.0 + 2.7 * math.ceil(len(layer_panels(report, options)) / 4)


def n_square(report: Mapping[str, Any], options: PlotOptions) -> tuple[float, float]:
    return 13.0, 1.0 + 4.6 * math.ceil(len(layer_panels(report, options)) / 3)
