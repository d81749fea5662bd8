"""``symtool inspect``: what checkpoints were found and what each analysis will see.

A dry run: checkpoints in step order with format, size and hash; for one checkpoint,
every tensor with its shape, dtype, kind and the analyses that apply to it.
"""

from __future__ import annotations

from typing import Any

from symtool import checkpoints as ck
from symtool.errors import SymtoolError
from symtool.report import SCHEMA_VERSION, provenance


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
    items = []
    for info in infos:
        kind = ck.tensor_kind(info.name, info.shape)
        items.append(
            {
                "name": info.name,
                "shape": list(info.shape),
                "dtype": info.dtype,
                "kind": kind,
                "analyses": list(ck.ANALYSES_BY_KIND.get(kind, ())),
            }
        )
    return {"checkpoint": str(c.path), "step": c.step, "items": items}
