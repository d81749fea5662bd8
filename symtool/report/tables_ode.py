"""Table and CSV rows of ``ode`` reports: per cell and direction, stability and Lyapunov numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from symtool.report.tables import fmt_num, heading, layer_rows


def ode_table(report: dict[str, Any], out: Console) -> None:
    for e in report["checkpoints"]:
        title = heading(e, out)
        if title is None:
            continue
        t = Table(
            title=title,
            title_justify="left",
            caption="ρ(W): largest spectral radius of W_hh's gate blocks; ρ(J), δ = ‖J − I‖₂: "
            "one-step Jacobian at rest; Δt: gate-derived step; λ₁: leading Lyapunov exponent "
            "per step; interval: λ₁ ± (t·SE over sequences + range over starting frames), "
            "the verdict's evidence (contracting below 0, marginal across 0, expanding above); "
            "SE: standard error of λ₁; KY: Kaplan–Yorke dimension; (rest): verdict from "
            "ln ρ(J) at rest, without probe data",
            caption_justify="left",
        )
        t.add_column("layer", no_wrap=True)
        for col in ("cell", "(n,t)", "ρ(W)", "ρ(J)", "δ", "Δt", "λ₁", "interval", "SE", "KY"):
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
            low, high = ly.get("lambda_1_low"), ly.get("lambda_1_high")
            lam = fmt_num(ly.get("lambda_1"))
            spread = (ly.get("spread") or [None])[0]
            if "lambda_1_low" not in ly and spread is not None:  # a report before the interval
                lam = f"{lam}±{fmt_num(spread, 2)}"
            v = layer.get("verdict") or {}
            colour = {"contracting": "green", "marginal": "yellow", "expanding": "red"}.get(
                v.get("label", ""), "white"
            )
            at_rest = " (rest)" if v.get("basis") == "log_radius_at_rest" else ""
            t.add_row(
                layer["name"],
                layer["kind"],
                f"({layer['n']},{layer['t']})" if layer.get("n") is not None else "—",
                fmt_num(max(radii) if radii else None),
                fmt_num(rest.get("spectral_radius")),
                fmt_num(rest.get("delta")),
                fmt_num((rest.get("step") or {}).get("dt")),
                lam,
                "—" if low is None or high is None else f"[{fmt_num(low)}, {fmt_num(high)}]",
                fmt_num(ly.get("lambda_1_se"), 2),
                fmt_num(ly.get("kaplan_yorke"), 2),
                f"[{colour}]{v.get('label', '—')}{at_rest}[/{colour}]",
            )
        out.print(t)


_ODE_COLUMNS = ["step", "checkpoint", "layer", "cell", "quantity", "value", "status", "reason"]


def ode_rows(report: dict[str, Any]) -> tuple[list[str], Iterable[dict[str, Any]]]:
    def rows() -> Iterable[dict[str, Any]]:
        for lb, layer in layer_rows(report, {"layer": "name", "cell": "kind"}):
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
            for k in ("lambda_1_se", "frame_range", "lambda_1_low", "lambda_1_high"):
                if k in ly:
                    values[f"lyapunov.{k}"] = ly[k]
            for k in ("kaplan_yorke", "participation_ratio"):
                values[k] = ly.get(k)
            v = layer.get("verdict") or {}
            values["verdict"] = v.get("label")
            values["verdict.basis"] = v.get("basis")
            values["verdict.value"] = v.get("value")
            values["verdict.band"] = v.get("band")
            for q, val in values.items():
                yield {**lb, "quantity": q, "value": val}

    return _ODE_COLUMNS, rows()
