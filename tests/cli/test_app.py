"""CLI behaviour: help, version, exit codes, one-line errors, output formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from symtool.cli.app import app

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def _ckpts(tmp_path: Path, steps=(200, 0, 100)) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for s in steps:
        save_file(
            {"fc1.weight": torch.randn(4, 3), "fc2.weight": torch.randn(2, 4)},
            str(tmp_path / f"step_{s:06d}.safetensors"),
        )
    return tmp_path


def test_every_command_has_help_text() -> None:
    result = _invoke("--help")
    assert result.exit_code == 0
    import typer.main

    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        assert cmd.help and len(cmd.help) > 20, name
        assert name in result.output
        sub = _invoke(name, "--help")
        assert sub.exit_code == 0, name


def test_version() -> None:
    import symtool

    result = _invoke("--version")
    assert result.exit_code == 0 and symtool.__version__ in result.output


def test_out_file_is_written(tmp_path: Path) -> None:
    _ckpts(tmp_path / "c")
    out = tmp_path / "r" / "inspect.json"
    result = _invoke("inspect", str(tmp_path / "c"), "--out", str(out))
    assert result.exit_code == 0 and result.stdout == ""
    assert json.loads(out.read_text())["schema"] == "symtool/inspect"
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        (lambda p: p / "missing.safetensors", "no such file"),
        (lambda p: p, "no checkpoints found"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path: Path, setup, needle: str) -> None:
    target = setup(tmp_path)
    result = _invoke("inspect", str(target))
    assert result.exit_code == 2
    assert needle in result.stderr and str(target) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_debug_adds_the_traceback_and_only_then(tmp_path: Path) -> None:
    """README: '--debug adds the traceback'; without it the error stays one line."""
    missing = str(tmp_path / "missing.safetensors")
    plain = _invoke("inspect", missing)
    loud = _invoke("--debug", "inspect", missing)
    assert plain.exit_code == loud.exit_code == 2
    assert "Traceback" not in plain.stderr and "Traceback" in loud.stderr
    assert "Traceback" not in _invoke("inspect", missing).stderr  # the flag does not stick


def test_the_cli_does_not_need_the_click_package() -> None:
    """Recent typer vendors click; symtool must start where the click package is absent."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("typer._click") is None:
        pytest.skip("this typer uses the click package itself")
    code = "import sys; sys.modules['click'] = None; from symtool.cli.app import main; main()"
    done = subprocess.run([sys.executable, "-c", code, "--version"], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("symtool ")


def test_bad_usage_exit_2(tmp_path: Path) -> None:
    _ckpts(tmp_path)
    assert _invoke("inspect", str(tmp_path), "--format", "xml").exit_code == 2
    assert _invoke("inspect", str(tmp_path), "--steps", "abc").exit_code == 2
    assert _invoke("inspect", str(tmp_path), "--steps", "999999").exit_code == 2


@pytest.mark.parametrize("args", [["schema"], ["inspect", "FIXTURE", "-f", "csv"]])
def test_a_closed_pipe_is_not_an_error(fixtures_dir: Path, args: list[str]) -> None:
    """`symtool ... | head`: when the reader has gone, no error message and exit 0."""
    import subprocess
    import sys

    argv = [str(fixtures_dir / "mlp_wd") if a == "FIXTURE" else a for a in args]
    proc = subprocess.Popen(
        [sys.executable, "-m", "symtool", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before symtool writes anything
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert b"error" not in err
