"""``symtool plot``: figures of a report, as PNG, SVG or PDF.

matplotlib is the optional ``plot`` extra: it is imported only here, lazily, and drawn
through its object API on the Agg canvas (no pyplot, no global state). Output is
deterministic: a fixed SVG hash salt and no dates or software versions in the file.

Figures per report kind (``--kind``; ``all`` puts every figure of the kind on one page):

* align ``relations``: α of each CRH relation over steps, one panel per (layer,
  relation), with the rotation null band ``null_mean ± 2 null_std`` (docs/metrics.md).
* align ``kappa``: PAH exponents κ of ``M ~ Z^κ`` over steps with their bootstrap 95%
  interval, one panel per layer.
* align ``collapse``: per layer, NC1 over steps (log axis) and the NFA's α(Z_a, AGOP_a),
  α(Z_a, AGOP_a^1/2) beside f-GWA's α, for reports made with ``align --collapse``/``--nfa``
  (docs/theory.md §3); ``all`` includes it only for those reports.
* align ``pah``: log-log ``m_i`` against ``z_i`` with the report's fitted line
  ``e^c z^κ`` for one checkpoint (``--step``), per layer (``--layer``). The report has no
  eigenvalues: with ``--matrices`` (from ``symtool align --save-matrices``) the points
  are recomputed from the saved matrices; without it only the fitted lines are drawn.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from symtool.errors import UsageError
from symtool.report import entries as en
from symtool.report import figures_align, figures_collapse, figures_ode, figures_symmetry
from symtool.report.figure_parts import Builder, PlotOptions, Sizer, n_panels, n_square
from symtool.report.files import write_atomic

SUFFIXES = (".png", ".svg", ".pdf")


DPI = 100


class PlotUnavailable(UsageError):
    """matplotlib is not installed (exit 2)."""


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
    if kind == "all":  # optional figures only where the report has their fields
        names = [n for n in figures if OPTIONAL.get((report_kind, n), _always)(report)]
    else:
        names = [kind or next(iter(figures))]
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
    write_atomic(out, buf.getvalue())
    return out


FIGURES: dict[str, dict[str, tuple[Builder, Sizer]]] = {
    "align": {
        "relations": (figures_align.align_relations, figures_align.relations_size),
        "kappa": (figures_align.align_kappa, figures_align.kappa_size),
        "pah": (figures_align.align_pah, figures_align.pah_size),
        "collapse": (figures_collapse.align_collapse, figures_collapse.collapse_size),
    },
    "symmetry": {
        "ranks": (figures_symmetry.symmetry_ranks, n_panels),
        "spectra": (figures_symmetry.symmetry_spectra, n_panels),
    },
    "ode": {
        "stability": (figures_ode.ode_stability, n_square),
        "lyapunov": (figures_ode.ode_lyapunov, n_panels),
    },
}
"""Figure builders and their page sizes, per report kind and ``--kind``."""


def _always(report: Mapping[str, Any]) -> bool:
    return True


OPTIONAL: dict[tuple[str, str], Callable[[Mapping[str, Any]], bool]] = {
    ("align", "collapse"): figures_collapse.has_collapse,
}
"""Figures drawn only for reports with their (opt-in) fields: ``--kind all`` leaves them
out of other reports; asked for by name they say what is missing."""
