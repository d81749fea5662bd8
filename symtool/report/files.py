"""Reports: records to JSON / CSV / rich tables, written atomically.

One sink renders the same report as a table (humans, stderr or a TTY), JSON or CSV
(machines, stdout or ``--out``). Every report carries ``schema`` and
``schema_version`` (docs/reports.md says how the version changes) and a provenance
block. Floats that are not finite never reach JSON: they become ``null``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import platform
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from symtool._version import __version__
from symtool.errors import ReportError

SCHEMA_VERSION = 5
#: Fields whose values change between otherwise identical runs (docs/reports.md).
VOLATILE_FIELDS = ("created", "duration_s")


def to_jsonable(obj: Any) -> Any:
    """Plain JSON data from records, tensors, arrays and paths; non-finite floats → None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str):
        return obj
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def from_jsonable(cls: Any, data: Any) -> Any:
    """Rebuild a (nested) frozen record from :func:`to_jsonable` output, by its type hints.

    Used by ``--resume`` to continue sequence analyses from a partial report's entries.
    """
    import types
    import typing

    origin = typing.get_origin(cls)
    if data is None:
        return None
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(cls) if a is not type(None)]
        last: Exception | None = None
        for option in options:
            try:
                return from_jsonable(option, data)
            except (TypeError, ValueError, KeyError) as exc:
                last = exc
        raise TypeError(f"no type of {cls} fits {data!r}") from last
    if dataclasses.is_dataclass(cls):
        if not isinstance(data, Mapping):
            raise TypeError(f"{cls.__name__} needs an object")
        hints = typing.get_type_hints(cls)
        kwargs = {
            f.name: from_jsonable(hints[f.name], data[f.name])
            for f in dataclasses.fields(cls)
            if f.name in data
        }
        return cls(**kwargs)
    if origin is tuple:
        args = typing.get_args(cls)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_jsonable(args[0], v) for v in data)
        return tuple(from_jsonable(a, v) for a, v in zip(args, data, strict=True))
    if origin is list:
        (arg,) = typing.get_args(cls)
        return [from_jsonable(arg, v) for v in data]
    if origin is dict:
        _, arg = typing.get_args(cls)
        return {k: from_jsonable(arg, v) for k, v in data.items()}
    if cls is float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise TypeError("not a number")
        return float(data)
    if cls in (int, str, bool):
        if not isinstance(data, cls) or (cls is int and isinstance(data, bool)):
            raise TypeError(f"not {cls.__name__}")
        return data
    return data


def dumps(report: Mapping[str, Any]) -> str:
    """Stable JSON text: sorted keys where order is not meaningful is NOT applied
    (record order is the schema's order), fixed float repr, trailing newline."""
    return json.dumps(to_jsonable(report), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def provenance(settings: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """Versions, platform and every setting, recorded in each report."""
    return {
        "symtool": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": to_jsonable(settings),
        **to_jsonable(extra),
    }


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and a rename, so ``path`` is
    never half-written: an interrupted run leaves the old file or the new one.

    Text is written as UTF-8 without newline translation. Every file symtool writes (reports,
    figures, saved tensors) goes through here.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise ReportError(f"cannot write ({exc.strerror or exc})", path) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ReportError(f"cannot write ({exc.strerror or exc})", path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_tensors_atomic(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Save tensors as a safetensors file, atomically (:func:`write_atomic`)."""
    from safetensors.torch import save

    meta = {"format": "pt", "producer": f"symtool {__version__}"}
    write_atomic(path, save(tensors, metadata=meta))


def csv_text(rows: Iterable[Mapping[str, Any]], columns: list[str]) -> str:
    """Tidy CSV: one header, one row per value; None as an empty cell."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(row.get(k)) for k in columns})
    return buf.getvalue()


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ""
    return v


def read_report(source: str) -> dict[str, Any]:
    """A JSON report from a file path or ``-`` (stdin).

    Raises:
        ReportError: unreadable, not JSON, or not a symtool report.
    """
    import sys

    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"cannot read report ({exc.strerror or exc})", source) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ReportError(f"not JSON ({exc})", "<stdin>" if source == "-" else source) from None
    if not isinstance(data, dict) or "schema" not in data or "schema_version" not in data:
        raise ReportError(
            "not a symtool report (no schema/schema_version)",
            "<stdin>" if source == "-" else source,
        )
    return data
