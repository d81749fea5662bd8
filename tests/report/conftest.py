"""Real reports the check and metric-name tests share (made once per session: read only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from symtool.cli.app import app
from symtool.report import schema

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


@pytest.fixture(scope="session")
def align_text() -> str:
    """A real align report (last two mlp_wd checkpoints, small null and bootstrap)."""
    result = _invoke(
        "align",
        str(ROOT / "fixtures" / "mlp_wd"),
        "--last",
        "2",
        "--null-samples",
        "4",
        "--bootstrap",
        "20",
        "-f",
        "json",
    )
    assert result.exit_code == 0, result.stderr
    schema.validate_text(result.stdout)
    return result.stdout


@pytest.fixture(scope="session")
def symmetry_report() -> dict[str, Any]:
    result = _invoke("symmetry", str(ROOT / "fixtures" / "mlp_wd"), "--last", "3", "-f", "json")
    assert result.exit_code == 0, result.stderr
    return schema.validate_text(result.stdout)
