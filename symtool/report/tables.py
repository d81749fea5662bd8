"""Tables and CSV rows shared by every report kind, and those of ``inspect``, ``check`` and
``diff``.

Each kind has a table function ``(report, console) -> None`` (for people) and a rows
function ``report -> (columns, rows)`` (tidy CSV); :mod:`symtool.report.sink` maps report
kinds to them. Tables of align, symmetry and ode reports live in ``tables_<kind>.py``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from symtool.report import check as ck


def console(stderr: bool = False, width: int | None = None) -> Console:
    """A rich console: the terminal's width on a TTY, else ``$COLUMNS`` or 160 columns."""
    stream = sys.stderr if stderr else sys.stdout
    if width is None and not stream.isatty():
        width = int(os.environ.get("COLUMNS") or 160)
    return Console(stderr=stderr, width=width, highlight=False, soft_wrap=False)


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


def layer_rows(
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


def alpha_row(label: dict[str, Any], rid: str, r: dict[str, Any]) -> dict[str, Any]:
    """The CSV row of one scored relation record (the six, the cross terms, NFA)."""
    return {
        **label,
        "metric": "alpha",
        "quantity": rid,
        "formula": r["formula"],
        "value": r["alpha"],
        "null_mean": r["null_mean"],
        "null_std": r["null_std"],
        "z": r["z"],
        "holds": r["holds"],
        "borderline": r.get("borderline"),
        "reason": r["reason"],
    }


def heading(e: dict[str, Any], out: Console) -> str | None:
    """A checkpoint's table title, or None after printing why it failed."""
    title = f"step {fmt_num(e['step'])} · {e['path']}"
    if e["status"] != "ok":
        out.print(f"[red]{title}: failed: {e['error']}[/red]")
        return None
    return title


def inspect_table(report: dict[str, Any], out: Console) -> None:
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
        est = listing.get("estimate")
        if est:
            out.print("align, estimated duration and memory per checkpoint:")
            for line in est.get("summary") or []:
                out.print(f"  {line}")


def inspect_rows(report: dict[str, Any]) -> tuple[list[str], Iterable[dict[str, Any]]]:
    cols = ["step", "path", "format", "size", "sha256", "error"]
    return cols, report["checkpoints"]


def failure_line(f: dict[str, Any]) -> str:
    """One failure as a line: checkpoint, layer, metric = value [reason], requirement."""
    where = f"step {f['step']}" if f["step"] is not None else str(f["checkpoint"])
    if f["layer"] is not None:
        where += f" · layer {f['layer']}"
    why = f" [{f['reason']}]" if f["reason"] else ""
    value = "null" if f["value"] is None else ck.show(f["value"])
    return f"FAIL {where} · {f['metric']} = {value}{why} · needs {f['requirement']}"


def failure_table(rep: dict[str, Any]) -> Table:
    t = Table(title="Failed requirements", title_justify="left")
    for col in ("checkpoint", "layer", "metric", "value", "requirement", "reason"):
        t.add_column(col, justify="right" if col == "value" else "left", overflow="fold")
    for f in rep["failures"]:
        where = f"step {f['step']}" if f["step"] is not None else (f["checkpoint"] or "—")
        t.add_row(
            where,
            f["layer"] or "—",
            f["metric"],
            fmt_num(f["value"]),
            f["requirement"],
            f["reason"] or "",
        )
    return t


def check_table(rep: dict[str, Any], out: Console) -> None:
    t = Table(title="Requirements", title_justify="left", caption=rep["summary"])
    for col in ("requirement", "metric", "level", "evaluated", "held", "failures"):
        t.add_column(col, justify="right" if col in ("evaluated", "failures") else "left")
    for r in rep["requirements"]:
        metrics = ", ".join(r["metrics"][:3]) + (" …" if len(r["metrics"]) > 3 else "")
        held = "[green]yes[/green]" if r["held"] else "[red]no[/red]"
        t.add_row(
            r["requirement"], metrics, r["level"], str(r["evaluated"]), held, str(r["failures"])
        )
    out.print(t)
    if rep["failures"]:
        out.print(failure_table(rep))


def check_rows(rep: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    cols = ["requirement", "held", "step", "checkpoint", "layer", "metric", "value", "reason"]
    rows: list[dict[str, Any]] = []
    for r in rep["requirements"]:
        fails = [f for f in rep["failures"] if f["requirement"] == r["requirement"]]
        if not fails:
            rows.append({"requirement": r["requirement"], "held": True})
        rows.extend({**f, "held": False} for f in fails)
    return cols, rows


def _side(rep: dict[str, Any], key: str) -> str:
    s = rep[key]
    where = f"step {s['step']}" if s["step"] is not None else s["checkpoint"]
    return f"{key.upper()}: {s['source']} ({where})"


def diff_table(rep: dict[str, Any], out: Console) -> None:
    t = Table(
        title=f"{rep['kind']} diff — {_side(rep, 'a')} · {_side(rep, 'b')}",
        title_justify="left",
    )
    for col, just in (("layer", "left"), ("metric", "left"), ("A", "right"), ("B", "right")):
        t.add_column(col, justify=just)
    t.add_column("B − A", justify="right")
    rows = rep["rows"]
    for i, r in enumerate(rows):
        last = i + 1 == len(rows) or rows[i + 1]["layer"] != r["layer"]
        if r["only"] and r["metric"] is None:
            t.add_row(r["layer"] or "—", f"(layer only in {r['only'].upper()})", "", "", "")
        else:
            t.add_row(
                r["layer"] or "—",
                r["metric"],
                "(absent)" if r["only"] == "b" else fmt_num(r["a"]),
                "(absent)" if r["only"] == "a" else fmt_num(r["b"]),
                _delta(r["delta"]),
                end_section=last,
            )
    out.print(t)


def _delta(v: float | None) -> str:
    if v is None:
        return ""
    text = fmt_num(v)
    return f"+{text}" if v > 0 else text


def diff_rows(rep: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    return ["layer", "metric", "a", "b", "delta", "only"], rep["rows"]
