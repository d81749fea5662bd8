"""``symtool inspect``: what checkpoints were found and what each analysis will see.

A dry run: checkpoints in step order with format, size and hash; for one checkpoint,
every tensor with its shape, dtype, kind and the analyses that apply to it.
"""

from __future__ import annotations

from typing import Any

from symtool.errors import SymtoolError
from symtool.inputs import checkpoints as ck
from symtool.report.files import SCHEMA_VERSION, provenance


def inspect_checkpoints(
    ckpts: list[ck.Checkpoint], *, tensors: bool, trust_pickle: bool = False
) -> dict[str, Any]:
    """The inspect report; a checkpoint that cannot be read gets an ``error`` entry."""
    entries: list[dict[str, Any]] = []
    for c in ckpts:
        entry: dict[str, Any] = {
            "step": c.step,
            "path": str(c.path),
            "format": c.format,
            "files": len(c.files),
            "size": None,
            "sha256": None,
            "error": None,
        }
        try:
            entry["size"] = c.size
            entry["sha256"] = ck.checkpoint_sha256(c)
        except (OSError, SymtoolError) as exc:
            entry["error"] = str(exc)
        entries.append(entry)
    report: dict[str, Any] = {
        "schema": "symtool/inspect",
        "schema_version": SCHEMA_VERSION,
        "provenance": provenance({"trust_pickle": trust_pickle, "tensors": tensors}),
        "checkpoints": entries,
        "tensors": None,
    }
    if tensors:
        target = next(
            (c for c, e in zip(ckpts[::-1], entries[::-1], strict=True) if not e["error"]), None
        )
        if target is not None:
            report["tensors"] = _tensor_listing(target, entries, trust_pickle=trust_pickle)
    return report


def _tensor_listing(
    c: ck.Checkpoint, entries: list[dict[str, Any]], *, trust_pickle: bool
) -> dict[str, Any] | None:
    try:
        infos = ck.tensor_infos(c, trust_pickle=trust_pickle)
    except SymtoolError as exc:
        for e in entries:
            if e["path"] == str(c.path):
                e["error"] = str(exc)
        return None
    plan, dense = _dry_run(infos)
    items = []
    for info in infos:
        kind = ck.tensor_kind(info.name, info.shape)
        analyses, notes = plan.get(info.name, ([], []))
        items.append(
            {
                "name": info.name,
                "shape": list(info.shape),
                "dtype": info.dtype,
                "kind": kind,
                "analyses": analyses,
                "notes": notes,
            }
        )
    listing: dict[str, Any] = {"checkpoint": str(c.path), "step": c.step, "items": items}
    if dense:
        listing["estimate"] = align_estimate(dense)
    return listing


def align_estimate(dense: list[tuple[str, int, int]]) -> dict[str, Any]:
    """``align``'s estimated cost per checkpoint for these ``(name, d_out, d_in)`` layers
    (:mod:`symtool.align.estimate`; without probe rows, capture is not counted).
    ``duration_s`` uses this machine's measured GEMM rate, so it is volatile."""
    from symtool.align import estimate as est

    cost = est.checkpoint_cost([est.layer_cost(n, d_in, d_out) for n, d_out, d_in in dense])
    return {
        "layers": len(cost.layers),
        "sums_bytes": cost.sums_bytes,
        "peak_bytes": cost.peak_bytes,
        "decompose_flops": sum(c.decompose_flops for c in cost.layers),
        "duration_s": round(cost.decompose_seconds, 3),
        "suggest_layers": cost.suggest_layers,
        "summary": est.describe(cost),
    }


def _dry_run(
    infos: list[ck.TensorInfo],
) -> tuple[dict[str, tuple[list[str], list[str]]], list[tuple[str, int, int]]]:
    """Per tensor: which analyses would read it and how, from the analyses' own discovery
    (run on shape-only ``meta`` tensors, so no data is loaded); and the layers ``align``
    would capture, ``(name, d_out, d_in)``."""
    import torch

    from symtool.ode.cells import discover_cells
    from symtool.symmetry.layout import discover

    meta = {}
    for i in infos:
        dtype = getattr(torch, i.dtype, None)
        if isinstance(dtype, torch.dtype):
            meta[i.name] = torch.empty(i.shape, dtype=dtype, device="meta")
    plan: dict[str, tuple[list[str], list[str]]] = {n: ([], []) for n in meta}
    dense: dict[str, tuple[str, int, int]] = {}

    def add(name: str | None, analysis: str | None, note: str | None) -> None:
        if name not in plan:
            return
        analyses, notes = plan[name]
        if analysis and analysis not in analyses:
            analyses.append(analysis)
        if note and note not in notes:
            notes.append(note)

    try:
        layout = discover(meta)
    except SymtoolError as exc:
        for name in plan:
            add(name, None, f"symmetry: {exc.message}")
    else:
        for lm in layout.layers:
            add(lm.key, "symmetry", f"rank of {lm.name}")
            add(lm.bias_key, "symmetry", None)
            # align captures every dense module, q/k/v/o too; not MultiheadAttention's fused
            # in_proj_weight, a parameter that no Linear module owns
            if lm.kind in ("linear", "conv", "conv1d") and not lm.key.endswith("in_proj_weight"):
                add(lm.key, "align", None)
                if lm.key in meta:  # one module per key (GPT-2's c_attn is one map)
                    w = meta[lm.key]
                    d_out, d_in = (w.shape[1], w.shape[0]) if lm.kind == "conv1d" else (
                        w.shape[0], w.numel() // max(w.shape[0], 1))
                    dense.setdefault(lm.key, (lm.key.removesuffix(".weight"), d_out, d_in))
                add(lm.bias_key, "align", "subtracted from h_b")
            block = ck.block_role(lm.key)
            if block is not None:
                add(lm.key, None, f"{block} projection")
        for pair in layout.pairs:
            note = f"units {pair.incoming}→{pair.outgoing} ({pair.activation})"
            inc, outg = layout.layer(pair.incoming), layout.layer(pair.outgoing)
            for key in (inc.key, inc.bias_key, outg.key):
                add(key, None, note)
        for block in layout.attention:
            for name in (block.q, block.k, block.v, block.o):
                if name:
                    add(layout.layer(name).key, None, f"attention block {block.name}")
        if layout.classifier:
            add(layout.classifier, None, "classifier (softmax translation)")
        for sk in layout.skipped:
            add(sk.name, None, f"symmetry skips: {sk.reason}")
    cells = discover_cells({k: tuple(v.shape) for k, v in meta.items()})
    for cell in cells.cells:
        for name in plan:
            prefix = f"{cell.prefix}." if cell.prefix else ""
            suffix = "" if cell.layer is None else f"_l{cell.layer}"
            suffix += "_reverse" if cell.reverse else ""
            tail = name[len(prefix) :] if name.startswith(prefix) else None
            if tail and tail.endswith(suffix) and tail.split("_")[0] in ("weight", "bias"):
                add(
                    name,
                    "ode",
                    f"{cell.kind} layer {cell.layer}{' reverse' if cell.reverse else ''}",
                )
    return plan, list(dense.values())
