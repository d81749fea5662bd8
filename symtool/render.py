"""The one output sink: a report as a rich table, JSON or CSV.

Tables are for people (stdout on a terminal, or stderr beside ``--out``); JSON and CSV
are for machines (stdout when piped, or ``--out`` written atomically). Each report
kind registers a table renderer and a tidy-rows function here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from symtool.errors import UsageError
from symtool.report import csv_text, dumps, write_atomic

TableFn = Callable[[dict[str, Any], Console], None]
RowsFn = Callable[[dict[str, Any]], tuple[list[str], Iterable[dict[str, Any]]]]

TABLES: dict[str, TableFn] = {}
ROWS: dict[str, RowsFn] = {}


def register(schema: str, table: TableFn, rows: RowsFn) -> None:
    """Register how a report kind is shown as a table and flattened to CSV rows."""
    TABLES[schema] = table
    ROWS[schema] = rows


def console(stderr: bool = False, width: int | None = None) -> Console:
    """A rich console: the terminal's width on a TTY, else ``$COLUMNS`` or 160 columns."""
    stream = sys.stderr if stderr else sys.stdout
    if width is None and not stream.isatty():
        width = int(os.environ.get("COLUMNS") or 160)
    return Console(stderr=stderr, width=width, highlight=False, soft_wrap=False)


@dataclass(frozen=True)
class Sink:
    """Where and how a report goes."""

    fmt: str
    out: Path | None

    @classmethod
    def choose(cls, fmt: str | None, out: Path | None) -> Sink:
        """Pick the format: explicit, else by ``--out`` suffix, else table on a TTY."""
        if fmt is None:
            if out is not None:
                fmt = "csv" if out.suffix.lower() == ".csv" else "json"
            else:
                fmt = "table" if sys.stdout.isatty() else "json"
        if fmt == "table" and out is not None:
            raise UsageError("--format table cannot be written to --out; use json or csv")
        return cls(fmt, out)

    def render(self, report: dict[str, Any]) -> str:
        """The report as JSON or CSV text."""
        if self.fmt == "json":
            return dumps(report)
        columns, rows = ROWS[report["schema"]](report)
        return csv_text(rows, columns)

    def emit(self, report: dict[str, Any]) -> None:
        """Write the report; show a table on stderr too when writing a file from a TTY."""
        if self.fmt == "table":
            TABLES[report["schema"]](report, console())
            return
        text = self.render(report)
        if self.out is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        write_atomic(self.out, text)
        if sys.stderr.isatty():
            TABLES[report["schema"]](report, console(stderr=True))


def fmt_num(v: Any, digits: int = 3) -> str:
    """A number for a table cell; '—' for missing."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != 0 and (abs(v) < 10**-digits or abs(v) >= 10**6):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}f}"
    return str(v)


def human_size(n: int | None) -> str:
    """Bytes as B/KiB/MiB/GiB."""
    if n is None:
        return "—"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _layer_rows(
    report: dict[str, Any], fields: dict[str, str]
) -> Iterable[tuple[dict[str, Any], dict[str, Any] | None]]:
    """``(row, layer)`` for every ok layer of every checkpoint; failed checkpoints and
    layers come as ``(row with the reason, None)``. ``fields``: CSV column → layer key."""
    for e in report["checkpoints"]:
        base = {"step": e["step"], "checkpoint": e["path"]}
        if e["status"] != "ok":
            yield {**base, "status": "failed", "reason": e["error"]}, None
            continue
        for layer in e["layers"]:
            row = {**base, **{c: layer[k] for c, k in fields.items()}, "status": layer["status"]}
            if layer["status"] != "ok":
                yield {**row, "reason": layer["reason"]}, None
            else:
                yield row, layer
        for sk in e.get("skipped_layers") or []:  # align: layers not captured, and why
            row = {c: sk.get(k) for c, k in fields.items()}
            yield {**base, **row, "status": "skipped", "reason": sk.get("reason")}, None


def _heading(e: dict[str, Any], out: Console) -> str | None:
    """A checkpoint's table title, or None after printing why it failed."""
    title = f"step {fmt_num(e['step'])} · {e['path']}"
    if e["status"] != "ok":
        out.print(f"[red]{title}: failed: {e['error']}[/red]")
        return None
    return title


# ------------------------------------------------------------------------- inspect


def _inspect_table(report: dict[str, Any], out: Console) -> None:
    t = Table(title="Checkpoints (in step order)", title_justify="left")
    for col in ("step", "checkpoint", "format", "size", "sha256"):
        t.add_column(
            col,
            justify="right" if col in ("step", "size") else "left",
            overflow="fold",
            no_wrap=col != "checkpoint",
        )
    for c in report["checkpoints"]:
        sha = (c["sha256"] or "")[:12]
        t.add_row(
            fmt_num(c["step"]),
            c["path"],
            c["format"],
            human_size(c["size"]),
            sha if not c["error"] else f"[red]error: {c['error']}[/red]",
        )
    out.print(t)
    listing = report.get("tensors")
    if listing:
        tt = Table(title=f"Tensors of {listing['checkpoint']}", title_justify="left")
        for col in ("tensor", "shape", "dtype", "kind", "analyses", "how"):
            tt.add_column(col)
        for it in listing["items"]:
            tt.add_row(
                it["name"],
                "×".join(map(str, it["shape"])) or "scalar",
                it["dtype"],
                it["kind"],
                ", ".join(it["analyses"]) or "—",
                "; ".join(it.get("notes") or []),
            )
        out.print(tt)


def _inspect_rows(report: dict[str, Any]) -> tuple[list[str], Iterable[dict[str, Any]]]:
    cols = ["step", "path", "format", "size", "sha256", "error"]
    return cols, report["checkpoints"]


register("symtool/inspect", _inspect_table, _inspect_rows)


# --------------------------------------------------------------------------- align

_REL_IDS = ("f-RGA", "f-GWA", "f-RWA", "b-RGA", "b-GWA", "b-RWA")


def _alpha_cell(rel: dict[str, Any] | None) -> str:
    if not rel:
        return "—"
    a, z = rel.get("alpha"), rel.get("z")
    text = f"{fmt_num(a)} [dim]{z:.1f}[/dim]" if z is not None else fmt_num(a)
    if rel.get("holds"):
        return f"[bold green]{text}[/bold green]"
    return text


def _align_table(report: dict[str, Any], out: Console) -> None:
    th = report.get("thresholds", {})
    formulas = report.get("relations", {})
    for e in report["checkpoints"]:
        title = _heading(e, out)
        if title is None:
            continue
        t = Table(
            title=title,
            title_justify="left",
            caption=f"cells: α ({report['provenance']['settings'].get('metric', 'pearson')}) "
            f"and its rotation-null z; bold green = holds (α ≥ {th.get('alpha')} and "
            f"z ≥ {th.get('z')})",
            caption_justify="left",
        )
        t.add_column("layer")
        t.add_column("W", justify="right")
        for rid in _REL_IDS:
            t.add_column(f"{rid}\n{formulas.get(rid, '')}", justify="right")
        for layer in e["layers"]:
            shape = f"{layer['d_out']}×{layer['d_in']}"
            if layer["status"] != "ok":
                t.add_row(layer["name"], shape, f"[red]failed: {layer['reason']}[/red]")
                continue
            rels = layer["relations"]
            t.add_row(layer["name"], shape, *(_alpha_cell(rels.get(r)) for r in _REL_IDS))
        out.print(t)
        _undefined_notes(e, out)
        _pah_table(e, out)
        for sk in e.get("skipped_layers") or []:
            out.print(f"  skipped {sk['name']}: {sk['reason']}")
    if sum(1 for e in report["checkpoints"] if e["status"] == "ok") > 1:
        _align_trend(report, out)


def _align_trend(report: dict[str, Any], out: Console) -> None:
    """Over training: per step, each relation's α averaged over layers, and how many hold."""
    formulas = report.get("relations", {})
    t = Table(
        title="Over training: mean α over layers (layers where the relation holds / layers)",
        title_justify="left",
    )
    t.add_column("step", justify="right")
    for rid in _REL_IDS:
        t.add_column(f"{rid}\n{formulas.get(rid, '')}", justify="right")
    for e in report["checkpoints"]:
        if e["status"] != "ok":
            t.add_row(fmt_num(e["step"]), "[red]failed[/red]")
            continue
        ok = [la for la in e["layers"] if la["status"] == "ok"]
        cells = []
        for rid in _REL_IDS:
            alphas = [la["relations"][rid]["alpha"] for la in ok]
            vals = [a for a in alphas if a is not None]
            holds = sum(1 for la in ok if la["relations"][rid]["holds"])
            mean = sum(vals) / len(vals) if vals else None
            cells.append(f"{fmt_num(mean)} ({holds}/{len(ok)})")
        t.add_row(fmt_num(e["step"]), *cells)
    out.print(t)


def _notes(out: Console, notes: dict[tuple[str, str], list[str]]) -> None:
    """Print ``layer L: a, b undefined: reason`` lines, one per (layer, reason)."""
    for (layer, reason), what in notes.items():
        out.print(f"  [dim]layer {layer}: {', '.join(what)} undefined: {reason}[/dim]")


def _undefined_notes(e: dict[str, Any], out: Console) -> None:
    """Why the table's dashes are dashes: the reasons of undefined α."""
    notes: dict[tuple[str, str], list[str]] = {}
    for layer in e["layers"]:
        if layer["status"] != "ok":
            continue
        for rid in _REL_IDS:
            rel = (layer.get("relations") or {}).get(rid) or {}
            if rel.get("alpha") is None and rel.get("reason"):
                notes.setdefault((layer["name"], rel["reason"]), []).append(f"α({rid})")
    _notes(out, notes)


def _pah_table(e: dict[str, Any], out: Console) -> None:
    rows = [layer for layer in e["layers"] if layer.get("pah")]
    if not rows:
        return
    t = Table(
        title="PAH exponents κ (M ~ Z^κ; R² in brackets) and nearest phase",
        title_justify="left",
    )
    t.add_column("layer")
    keys = ("H_a~Z_a", "G_a~Z_a", "H_b~Z_b", "G_b~Z_b")
    for k in keys:
        t.add_column(k.replace("~", " ~ ") + "^κ", justify="right")
    t.add_column("Δκ_H, Δκ_G", justify="right")
    t.add_column("phase", justify="left")
    for layer in rows:
        p = layer["pah"]
        cells = []
        for k in keys:
            f = p["fits"].get(k) or {}
            cells.append(
                f"{fmt_num(f.get('kappa'), 2)} [{fmt_num(f.get('r2'), 2)}]"
                if f.get("kappa") is not None
                else "—"
            )
        c = p.get("consistency") or {}
        ph = p.get("phase") or {}
        cells.append(f"{fmt_num(c.get('h_shift'), 2)}, {fmt_num(c.get('g_shift'), 2)}")
        cells.append(
            f"{ph.get('name')} (d {fmt_num(ph.get('distance'), 2)})" if ph.get("name") else "—"
        )
        t.add_row(layer["name"], *cells)
    out.print(t)
    notes: dict[tuple[str, str], list[str]] = {}
    for layer in rows:
        p = layer["pah"]
        for k in keys:
            f = p["fits"].get(k) or {}
            if f.get("kappa") is None and f.get("reason"):
                notes.setdefault((layer["name"], f["reason"]), []).append(f"κ({k})")
        c, ph = p.get("consistency") or {}, p.get("phase") or {}
        if (c.get("h_shift") is None or c.get("g_shift") is None) and c.get("reason"):
            notes.setdefault((layer["name"], c["reason"]), []).append("Δκ")
        if not ph.get("name") and ph.get("reason"):
            notes.setdefault((layer["name"], ph["reason"]), []).append("phase")
    _notes(out, notes)


_ALIGN_COLUMNS = [
    "step",
    "checkpoint",
    "layer",
    "kind",
    "d_in",
    "d_out",
    "metric",
    "quantity",
    "formula",
    "value",
    "null_mean",
    "null_std",
    "z",
    "holds",
    "status",
    "reason",
]


def _align_rows(report: dict[str, Any]) -> tuple[list[str], Iterable[dict[str, Any]]]:
    def rows() -> Iterable[dict[str, Any]]:
        fields = {"layer": "name", "kind": "kind", "d_in": "d_in", "d_out": "d_out"}
        for lb, layer in _layer_rows(report, fields):
            if layer is None:
                yield lb
                continue
            for group in ("relations", "cross_terms"):
                for rid, r in (layer.get(group) or {}).items():
                    yield {
                        **lb,
                        "metric": "alpha",
                        "quantity": rid,
                        "formula": r["formula"],
                        "value": r["alpha"],
                        "null_mean": r["null_mean"],
                        "null_std": r["null_std"],
                        "z": r["z"],
                        "holds": r["holds"],
                        "reason": r["reason"],
                    }
            v = layer.get("verify")
            if v:
                for key in ("h_b_error", "g_a_error"):
                    yield {**lb, "metric": "verify", "quantity": key, "value": v.get(key),
                           "reason": v.get("reason")}
            p = layer.get("pah")
            if p:
                for fid, f in p["fits"].items():
                    for metric in (
                        "kappa",
                        "r2",
                        "ci_low",
                        "ci_high",
                        "agreement",
                        "kappa_star",
                        "alpha_star",
                        "n_kept",
                    ):
                        yield {
                            **lb,
                            "metric": metric,
                            "quantity": fid,
                            "formula": f.get("formula"),
                            "value": f.get(metric),
                            "reason": f.get("reason"),
                        }
                c = p.get("consistency") or {}
                for key in ("h_shift", "g_shift"):
                    yield {**lb, "metric": "consistency", "quantity": key, "value": c.get(key),
                           "reason": c.get("reason")}
                ph = p.get("phase") or {}
                yield {
                    **lb,
                    "metric": "phase_distance",
                    "quantity": ph.get("name") or "phase",
                    "value": ph.get("distance"),
                    "reason": ph.get("reason"),
                }

    return _ALIGN_COLUMNS, rows()


register("symtool/align", _align_table, _align_rows)


# ----------------------------------------------------------------------------- ode


def _ode_table(report: dict[str, Any], out: Console) -> None:
    for e in report["checkpoints"]:
        title = _heading(e, out)
        if title is None:
            continue
        t = Table(
            title=title,
            title_justify="left",
            caption="ρ(W): largest spectral radius of W_hh's gate blocks; ρ(J), δ = ‖J − I‖₂: "
            "one-step Jacobian at rest; Δt: gate-derived step; λ₁: leading Lyapunov exponent "
            "per step ± spread over sequences; KY: Kaplan–Yorke dimension",
            caption_justify="left",
        )
        t.add_column("layer", no_wrap=True)
        for col in ("cell", "(n,t)", "ρ(W)", "ρ(J)", "δ", "Δt", "λ₁", "KY"):
            t.add_column(col, justify="left" if col == "cell" else "right", no_wrap=True)
        t.add_column("verdict", no_wrap=True)
        for layer in e["layers"]:
            if layer["status"] != "ok":
                t.add_row(layer["name"], layer["kind"], "", f"[red]failed: {layer['reason']}[/red]")
                continue
            radii = [
                w["spectral_radius"]
                for w in layer["weights"]
                if w.get("spectral_radius") is not None
            ]
            rest = layer.get("rest") or {}
            ly = layer.get("lyapunov") or {}
            lam = ly.get("lambda_1")
            spread = (ly.get("spread") or [None])[0] if ly.get("spread") else None
            v = layer.get("verdict") or {}
            colour = {"contracting": "green", "marginal": "yellow", "expanding": "red"}.get(
                v.get("label", ""), "white"
            )
            t.add_row(
                layer["name"],
                layer["kind"],
                f"({layer['n']},{layer['t']})" if layer.get("n") is not None else "—",
                fmt_num(max(radii) if radii else None),
                fmt_num(rest.get("spectral_radius")),
                fmt_num(rest.get("delta")),
                fmt_num((rest.get("step") or {}).get("dt")),
                f"{fmt_num(lam)}±{fmt_num(spread, 2)}" if spread is not None else fmt_num(lam),
                fmt_num(ly.get("kaplan_yorke"), 2),
                f"[{colour}]{v.get('label', '—')}[/{colour}]",
            )
        out.print(t)


_ODE_COLUMNS = ["step", "checkpoint", "layer", "cell", "quantity", "value", "status", "reason"]


def _ode_rows(report: dict[str, Any]) -> tuple[list[str], Iterable[dict[str, Any]]]:
    def rows() -> Iterable[dict[str, Any]]:
        for lb, layer in _layer_rows(report, {"layer": "name", "cell": "kind"}):
            if layer is None:
                yield lb
                continue
            values: dict[str, Any] = {"n": layer["n"], "t": layer["t"]}
            for w in layer["weights"]:
                g = w["gate"]
                for k in (
                    "spectral_radius",
                    "sigma_max",
                    "gamma_sigma_max",
                    "departure_from_normality",
                    "unitarity_defect",
                    "max_timescale",
                ):
                    values[f"weights.{g}.{k}"] = w.get(k)
            for point in ("rest", "along"):
                r = layer.get(point)
                if not r:
                    continue
                for k in ("spectral_radius", "norm", "delta", "euler_dt_limit"):
                    values[f"{point}.{k}"] = r.get(k)
                values[f"{point}.dt"] = (r.get("step") or {}).get("dt")
                for sch in r.get("schemes") or []:
                    values[f"{point}.{sch['scheme']}.spectral_abscissa"] = sch["spectral_abscissa"]
                    values[f"{point}.{sch['scheme']}.n_unstable"] = sch["n_unstable"]
                for reg in r.get("regions") or []:
                    values[f"{point}.rk{reg['stages']}.in_region"] = reg["in_region"]
                    values[f"{point}.rk{reg['stages']}.margin"] = reg["margin"]
            ly = layer.get("lyapunov") or {}
            for i, x in enumerate(ly.get("exponents") or []):
                values[f"lyapunov.{i + 1}"] = x
            for k in ("kaplan_yorke", "participation_ratio"):
                values[k] = ly.get(k)
            v = layer.get("verdict") or {}
            values["verdict"] = v.get("label")
            values["verdict.value"] = v.get("value")
            for q, val in values.items():
                yield {**lb, "quantity": q, "value": val}

    return _ODE_COLUMNS, rows()


register("symtool/ode", _ode_table, _ode_rows)


# ------------------------------------------------------------------------ symmetry


def _at(items: list[dict[str, Any]] | None, tau: float, key: str) -> Any:
    """The ``key`` of the entry of ``items`` at threshold ``tau``."""
    for it in items or []:
        if abs(it["tau"] - tau) <= 1e-12 * max(1.0, tau):
            return it.get(key)
    return None


def _symmetry_table(report: dict[str, Any], out: Console) -> None:
    st = report["provenance"]["settings"]
    r_tau, d_tau, u_tau = st["rank_tau"], st["dead_tau"], st["dup_tau"]
    for e in report["checkpoints"]:
        title = _heading(e, out)
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


def _symmetry_rows(report: dict[str, Any]) -> tuple[list[str], Iterable[dict[str, Any]]]:
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


register("symtool/symmetry", _symmetry_table, _symmetry_rows)
