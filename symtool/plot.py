"""``symtool plot``: figures of a report, as PNG, SVG or PDF.

matplotlib is the optional ``plot`` extra: it is imported only here, lazily, and drawn
through its object API on the Agg canvas (no pyplot, no global state). Output is
deterministic: a fixed SVG hash salt and no dates or software versions in the file.

Figures per report kind (``--kind``; ``all`` puts every figure of the kind on one page):

* align ``relations``: α of each CRH relation over steps, one panel per (layer,
  relation), with the rotation null band ``null_mean ± 2 null_std`` (docs/metrics.md).
* align ``kappa``: PAH exponents κ of ``M ~ Z^κ`` over steps with their bootstrap 95%
  interval, one panel per layer.
* align ``pah``: log-log ``m_i`` against ``z_i`` with the report's fitted line
  ``e^c z^κ`` for one checkpoint (``--step``), per layer (``--layer``). The report has no
  eigenvalues: with ``--matrices`` (from ``symtool align --save-matrices``) the points
  are recomputed from the saved matrices; without it only the fitted lines are drawn.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from symtool import entries as en
from symtool.errors import ReportError, UsageError

SUFFIXES = (".png", ".svg", ".pdf")
DPI = 100
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


class PlotUnavailable(UsageError):
    """matplotlib is not installed (exit 2)."""


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


def _matplotlib() -> Any:
    """The matplotlib package, or a one-line error naming the extra to install."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        raise PlotUnavailable("plotting needs matplotlib: pip install 'symtool[plot]'") from None
    return matplotlib


def figure_kinds(report_kind: str) -> tuple[str, ...]:
    """Figure names available for a report kind, the default first."""
    return tuple(FIGURES.get(report_kind, {}))


def plot_report(
    report: Mapping[str, Any], out: Path, *, kind: str | None = None, options: PlotOptions
) -> Path:
    """Draw one figure (or ``all`` on one page) of a validated report into ``out``.

    Args:
        report: the report.
        out: ``.png``, ``.svg`` or ``.pdf`` path; written atomically.
        kind: figure name (:func:`figure_kinds`), ``all``, or None for the default.
        options: layers, step, matrices, title.

    Raises:
        PlotUnavailable: matplotlib is missing.
        UsageError: unknown suffix or figure name.
        ReportError: nothing to draw (no ok checkpoint, no matching layer, ...).
    """
    suffix = out.suffix.lower()
    if suffix not in SUFFIXES:
        raise UsageError(f"-o must end in {', '.join(SUFFIXES)} (got {out.name!r})")
    report_kind = en.report_kind(report)
    figures = FIGURES.get(report_kind)
    if not figures:
        raise UsageError(f"no figures for {report_kind} reports")
    names = list(figures) if kind == "all" else [kind or next(iter(figures))]
    for name in names:
        if name not in figures:
            raise UsageError(
                f"--kind for {report_kind} reports must be one of "
                f"{', '.join([*figures, 'all'])} (got {name!r})"
            )
    mpl = _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sizes = [figures[n][1](report, options) for n in names]
    rc = {
        "svg.hashsalt": "symtool",
        "font.size": 9,
        "axes.titlesize": 9,
        "axes.labelsize": 9,
        "legend.fontsize": 8,
        "path.simplify": True,
    }
    with mpl.rc_context(rc):
        fig = Figure(
            figsize=(max(w for w, _ in sizes), sum(h for _, h in sizes)),
            dpi=DPI,
            layout="constrained",
        )
        FigureCanvasAgg(fig)
        panels = (
            [fig]
            if len(names) == 1
            else fig.subfigures(len(names), 1, height_ratios=[h for _, h in sizes])
        )
        for panel, name in zip(panels, names, strict=True):
            figures[name][0](panel, report, options)
        buf = io.BytesIO()
        meta = {".png": {"Software": None}, ".svg": {"Date": None}, ".pdf": {"CreationDate": None}}
        extra = {"pil_kwargs": {"optimize": True}} if suffix == ".png" else {}
        fig.savefig(buf, format=suffix[1:], metadata=meta[suffix], dpi=DPI, **extra)
    _write_bytes(out, buf.getvalue())
    return out


def _write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file and a rename, so a figure is never half-written."""
    parent = path.parent if str(path.parent) else Path(".")
    tmp = parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ReportError(f"cannot write ({exc.strerror or exc})", path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------ helpers


def ok_entries(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Checkpoint entries that succeeded (an error when there is none)."""
    entries = [e for e in en.checkpoint_entries(report) if en.is_ok(e)]
    if not entries:
        raise ReportError("nothing to plot: no checkpoint of the report succeeded")
    return entries


def _layer_names(report: Mapping[str, Any], options: PlotOptions) -> list[str]:
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


def _layer(report: Mapping[str, Any], entry: Mapping[str, Any], name: str) -> dict[str, Any]:
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
    """Symlog steps when they span decades, with ticks at 0 and powers of ten only."""
    positive = [x for x in xs if x > 0]
    if positive and max(positive) / min(positive) >= 100:
        lin = min(positive)
        ax.set_xscale("symlog", linthresh=lin, linscale=0.5)
        lo, hi = math.ceil(math.log10(lin)), math.floor(math.log10(max(positive)))
        ticks = ([0.0] if min(xs) <= 0 else []) + [10.0**k for k in range(lo, hi + 1)]
        ax.set_xticks(ticks, ["0" if t == 0 else f"$10^{{{round(math.log10(t))}}}$" for t in ticks])
        ax.set_xticks([], minor=True)
        left = min(xs) - 0.3 * lin if min(xs) <= 0 else min(xs) / 1.3
        ax.set_xlim(left, max(xs) * 1.3)
    if label:
        ax.set_xlabel("training step")


def _math(formula: str) -> str:
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


# -------------------------------------------------------------------------- align


def _relations_size(report: Mapping[str, Any], options: PlotOptions) -> tuple[float, float]:
    n = len(_layer_names(report, options))
    return 13.0, 0.9 + 1.75 * n


def _align_relations(fig: Any, report: Mapping[str, Any], options: PlotOptions) -> None:
    entries = ok_entries(report)
    layers = _layer_names(report, options)
    rels = [r for r in report.get("relations", {}) if r in _REL_COLOURS] or list(_REL_COLOURS)
    threshold = (report.get("thresholds") or {}).get("alpha")
    xs = x_steps(entries)
    axes = fig.subplots(len(layers), len(rels), sharex=True, sharey=True, squeeze=False)
    for i, name in enumerate(layers):
        for j, rid in enumerate(rels):
            ax = axes[i][j]
            recs = [
                (_layer(report, e, name).get("relations") or {}).get(rid) or {} for e in entries
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
            if threshold is not None:
                ax.axhline(threshold, color="black", linestyle=":", linewidth=0.8)
            ax.set_ylim(-0.25, 1.05)
            ax.grid(True, linewidth=0.3, alpha=0.5)
            step_axis(ax, xs, label=i == len(layers) - 1)
            if i == 0:
                formula = (report.get("relations") or {}).get(rid, "")
                ax.set_title(f"{rid}: {_math(formula)}" if formula else rid)
            if j == 0:
                shape = _shape(report, entries, name)
                ax.set_ylabel(f"layer {name}{shape}\nα")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), frameon=False)
    metric = ((report.get("provenance") or {}).get("settings") or {}).get("metric", "pearson")
    fig.suptitle(
        f"CRH alignment α = {metric}(A, B) over training{source_label(options)} — grey band: "
        f"rotation null α(A, QBQᵀ) mean ± 2 std; dotted: threshold α = {threshold}; circled: holds"
    )


def _shape(report: Mapping[str, Any], entries: Sequence[Mapping[str, Any]], name: str) -> str:
    layer = _layer(report, entries[-1], name)
    if "d_out" in layer and "d_in" in layer:
        return f" ({layer['d_out']}×{layer['d_in']})"
    return ""


def source_label(options: PlotOptions) -> str:
    """`` (report.json)`` for titles."""
    return f" ({options.title})" if options.title else ""


def _kappa_size(report: Mapping[str, Any], options: PlotOptions) -> tuple[float, float]:
    n = len(_layer_names(report, options))
    cols = min(n, 4)
    return 13.0, 1.0 + 2.6 * math.ceil(n / cols)


def _align_kappa(fig: Any, report: Mapping[str, Any], options: PlotOptions) -> None:
    entries = ok_entries(report)
    layers = _layer_names(report, options)
    xs = x_steps(entries)
    cols = min(len(layers), 4)
    rows = math.ceil(len(layers) / cols)
    axes = fig.subplots(rows, cols, sharex=True, squeeze=False)
    for k, name in enumerate(layers):
        ax = axes[k // cols][k % cols]
        for fid in _FITS:
            fits = [
                ((_layer(report, e, name).get("pah") or {}).get("fits") or {}).get(fid) or {}
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
                label=_math(fid.replace("~", " ~ ") + "^κ"),
            )
        ax.axhline(0, color="black", linewidth=0.5)
        _kappa_limits(ax, report, entries, name)
        ax.grid(True, linewidth=0.3, alpha=0.5)
        ax.set_title(f"layer {name}{_shape(report, entries, name)}")
        step_axis(ax, xs, label=k // cols == rows - 1)
        if k % cols == 0:
            ax.set_ylabel("κ")
    for k in range(len(layers), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), frameon=False)
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
        for f in ((_layer(report, e, name).get("pah") or {}).get("fits") or {}).values()
        if f and f.get("target") and f.get("reference", "").startswith("Z")
        for v in [f.get("kappa")]
        if isinstance(v, int | float)
    ]
    if values:
        ax.set_ylim(min(min(values), 0.0) - 0.5, max(max(values), 0.0) + 0.5)


def _pah_size(report: Mapping[str, Any], options: PlotOptions) -> tuple[float, float]:
    n = len(_layer_names(report, options))
    cols = min(n, 4)
    return 13.0, 1.0 + 3.0 * math.ceil(n / cols)


def _align_pah(fig: Any, report: Mapping[str, Any], options: PlotOptions) -> None:
    entry = one_entry(report, options)
    layers = _layer_names(report, options)
    floor = float(((report.get("provenance") or {}).get("settings") or {}).get("pah_floor", 1e-8))
    cols = min(len(layers), 4)
    rows = math.ceil(len(layers) / cols)
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, name in enumerate(layers):
        ax = axes[k // cols][k % cols]
        pah = _layer(report, entry, name).get("pah") or {}
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
            label = _math(fid.replace("~", " ~ ") + "^κ")
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
        ax.set_title(f"layer {name}{_shape(report, [entry], name)}")
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


def short(v: Any) -> str:
    """A number with two decimals for legends; a dash for null."""
    return "—" if v is None else f"{v:.2f}"


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


FIGURES: dict[str, dict[str, tuple[Builder, Sizer]]] = {
    "align": {
        "relations": (_align_relations, _relations_size),
        "kappa": (_align_kappa, _kappa_size),
        "pah": (_align_pah, _pah_size),
    },
}

import symtool.figures  # noqa: E402,F401  (registers the symmetry and ode figures)
