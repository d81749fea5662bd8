"""Shared helpers of the API tests: run the CLI, compare reports number by number."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from symtool.cli.app import app
from symtool.report.files import VOLATILE_FIELDS

runner = CliRunner()


def cli_report(tmp_path: Path, *args: object) -> dict[str, Any]:
    """``symtool <args> -o FILE.json`` and the report it wrote."""
    out = tmp_path / f"cli-{len(list(tmp_path.glob('cli-*.json')))}.json"
    res = runner.invoke(app, [*map(str, args), "-o", str(out)], env={"COLUMNS": "200"})
    assert res.exit_code in (0, 1), res.output
    return json.loads(out.read_text())


def differences(
    a: Any, b: Any, *, tol: float = 1e-12, skip: tuple[str, ...] = (), path: str = ""
) -> list[str]:
    """Where two reports differ: keys, lengths, values; floats within ``tol`` (relative to
    max(1, |a|)). ``VOLATILE_FIELDS`` and ``skip`` keys are not compared."""
    out: list[str] = []
    ignored = (*VOLATILE_FIELDS, *skip)
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in ignored:
                continue
            if k not in a or k not in b:
                out.append(f"{path}.{k}: only in {'first' if k in a else 'second'}")
            else:
                out += differences(a[k], b[k], tol=tol, skip=skip, path=f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out += differences(x, y, tol=tol, skip=skip, path=f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, int | float) and not isinstance(b, bool):
        if not math.isclose(a, b, rel_tol=0, abs_tol=tol * max(1.0, abs(a))):
            out.append(f"{path}: {a!r} vs {b!r}")
    elif a != b:
        out.append(f"{path}: {a!r} vs {b!r}")
    return out
