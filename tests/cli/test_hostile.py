"""Hostile and broken inputs through every command: one clear line, a documented exit
code, no traceback, nothing run that the user did not ask for, nothing lost."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from symtool.cli.app import app
from symtool.report.files import VOLATILE_FIELDS

runner = CliRunner()
COMMANDS = ("inspect", "align", "ode", "symmetry")


def _invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def _has_command(name: str) -> bool:
    import typer.main

    return name in typer.main.get_command(app).commands  # type: ignore[attr-defined]


def _args(command: str, target: Path, probe: Path) -> list[object]:
    if command == "align":
        return [command, target, "--data", probe, "--loss", "mse", "--null-samples", "2"]
    if command == "inspect":
        return [command, target, "--tensors"]
    return [command, target]


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_pt(p: Path) -> Path:
    torch.save({"weight": _Evil(p.parent / "PWNED")}, p)
    return p


def _evil_plain_pickle(p: Path) -> Path:
    with open(p, "wb") as fh:
        pickle.dump({"weight": _Evil(p.parent / "PWNED")}, fh)
    return p


def _good_sd() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"0.weight": torch.randn(6, 4), "0.bias": torch.randn(6), "2.weight": torch.randn(1, 6)}


def _truncated(p: Path) -> Path:
    save_file(_good_sd(), str(p))
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) - 40])
    return p


def _lying_header(p: Path) -> Path:
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}}
    )
    p.write_bytes(len(header).to_bytes(8, "little") + header.encode() + b"\x00" * 64)
    return p


def _huge_header_length(p: Path) -> Path:
    p.write_bytes((10**15).to_bytes(8, "little") + b"{}")
    return p


HOSTILE: dict[str, tuple[str, Callable[[Path], Path], str]] = {
    "code-running torch pickle": ("model.pt", _evil_pt, "--trust-pickle"),
    "code-running plain pickle": ("model.pkl.pt", _evil_plain_pickle, "--trust-pickle"),
    "empty file": ("step_1.safetensors", lambda p: (p.write_bytes(b""), p)[1], "safetensors"),
    "empty pt": ("step_1.pt", lambda p: (p.write_bytes(b""), p)[1], "empty"),
    "random bytes": ("step_1.pt", lambda p: (p.write_bytes(os.urandom(300)), p)[1], "cannot read"),
    "random safetensors": (
        "step_1.safetensors",
        lambda p: (p.write_bytes(os.urandom(300)), p)[1],
        "not a valid safetensors",
    ),
    "truncated": ("step_1.safetensors", _truncated, "not a valid safetensors"),
    "header lies about sizes": ("step_1.safetensors", _lying_header, "not a valid safetensors"),
    "absurd header length": ("step_1.safetensors", _huge_header_length, "not a valid safetensors"),
    "empty directory": ("empty", lambda p: (p.mkdir(), p)[1], "no checkpoints found"),
    "missing file": ("nope.safetensors", lambda p: p, "no such file"),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_inputs_give_one_line_and_exit_2(tmp_path: Path, command: str, case: str) -> None:
    if not _has_command(command):
        pytest.skip(f"no {command} command")
    name, make, needle = HOSTILE[case]
    target = make(tmp_path / name)
    probe = tmp_path / "probe.safetensors"
    save_file({"x": torch.randn(8, 4), "y": torch.randn(8, 1)}, str(probe))
    res = _invoke(*_args(command, target, probe))
    assert res.exit_code == 2, (res.exit_code, res.output)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("symtool: error:")]
    assert errors, res.stderr
    assert any(needle in ln and target.name in ln for ln in errors), res.stderr
    assert "Traceback" not in res.output
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("command", ("align", "ode", "symmetry"))
def test_a_bad_checkpoint_among_good_ones_is_reported_and_the_rest_analysed(
    tmp_path: Path, command: str, fixtures_dir: Path
) -> None:
    if not _has_command(command):
        pytest.skip(f"no {command} command")
    src = fixtures_dir / ("rnn" if command == "ode" else "mlp_wd")
    for step in ("000000", "000050"):
        (tmp_path / f"step_{step}.safetensors").write_bytes(
            (src / f"step_{step}.safetensors").read_bytes()
        )
    (tmp_path / "step_000025.safetensors").write_bytes(os.urandom(100))
    args: list[object] = [command, tmp_path, "-f", "json"]
    if command == "align":
        args += ["--data", src / "probe.safetensors", "--null-samples", "2"]
    res = _invoke(*args)
    assert res.exit_code == 1, res.output
    rep = json.loads(res.stdout)
    assert [(e["step"], e["status"]) for e in rep["checkpoints"]] == [
        (0, "ok"),
        (25, "failed"),
        (50, "ok"),
    ]
    assert "step_000025.safetensors" in rep["checkpoints"][1]["error"]


def test_nan_weights_fail_that_layer_with_the_reason(tmp_path: Path) -> None:
    sd = _good_sd()
    sd["2.weight"][0, 0] = float("nan")
    save_file(sd, str(tmp_path / "step_1.safetensors"))
    save_file(
        {"x": torch.randn(16, 4), "y": torch.randn(16, 1)}, str(tmp_path / "probe.safetensors")
    )
    res = _invoke(
        "align", tmp_path, "--data", tmp_path / "probe.safetensors", "--loss", "mse", "-f", "json"
    )
    assert res.exit_code == 1
    layers = {la["name"]: la for la in json.loads(res.stdout)["checkpoints"][0]["layers"]}
    assert layers["2"]["status"] == "failed" and "non-finite weights" in layers["2"]["reason"]
    assert "NaN" not in res.stdout  # never a NaN in JSON


def test_constant_matrices_give_null_alpha_with_reason_and_1x1_layers_work(tmp_path: Path) -> None:
    sd = {"0.weight": torch.ones(1, 1), "0.bias": torch.zeros(1), "2.weight": torch.ones(1, 1)}
    save_file(sd, str(tmp_path / "step_1.safetensors"))
    save_file(
        {"x": torch.randn(16, 1), "y": torch.randn(16, 1)}, str(tmp_path / "probe.safetensors")
    )
    res = _invoke(
        "align",
        tmp_path,
        "--data",
        tmp_path / "probe.safetensors",
        "--loss",
        "mse",
        "--activation",
        "identity",
        "-f",
        "json",
    )
    assert res.exit_code == 0, res.output
    layer = json.loads(res.stdout)["checkpoints"][0]["layers"][0]
    assert (layer["d_in"], layer["d_out"]) == (1, 1)
    for rel in layer["relations"].values():
        assert rel["alpha"] is None and "undefined" in rel["reason"]


def test_zero_norm_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    save_file(_good_sd(), str(tmp_path / "step_1.safetensors"))
    x = torch.randn(20, 4)
    x[:5] = 0.0
    save_file({"x": x, "y": torch.randn(20, 1)}, str(tmp_path / "probe.safetensors"))
    res = _invoke(
        "align", tmp_path, "--data", tmp_path / "probe.safetensors", "--loss", "mse", "-f", "json"
    )
    layer = json.loads(res.stdout)["checkpoints"][0]["layers"][0]
    assert layer["skipped_rows"]["h_a"] == 5 and layer["rows"] == 20


def test_layer_over_the_limit_is_skipped_with_the_reason(tmp_path: Path) -> None:
    sd = {"0.weight": torch.randn(3, 4), "2.weight": torch.randn(9, 3)}
    save_file(sd, str(tmp_path / "step_1.safetensors"))
    save_file({"x": torch.randn(8, 4), "y": torch.randn(8, 9)}, str(tmp_path / "probe.safetensors"))
    res = _invoke(
        "align",
        tmp_path,
        "--data",
        tmp_path / "probe.safetensors",
        "--loss",
        "mse",
        "--max-layer-dim",
        "5",
        "-f",
        "json",
    )
    assert res.exit_code == 0, res.output
    entry = json.loads(res.stdout)["checkpoints"][0]
    assert [la["name"] for la in entry["layers"]] == ["0"]
    skipped = {s["name"]: s["reason"] for s in entry["skipped_layers"]}
    assert "--max-layer-dim" in skipped["2"]


def test_probe_with_wrong_shapes_is_a_clear_error(tmp_path: Path) -> None:
    save_file(_good_sd(), str(tmp_path / "step_1.safetensors"))
    save_file({"x": torch.randn(8, 5), "y": torch.randn(8, 1)}, str(tmp_path / "probe.safetensors"))
    res = _invoke("align", tmp_path, "--data", tmp_path / "probe.safetensors", "--loss", "mse")
    assert res.exit_code == 2 and "shapes cannot be multiplied" in res.stderr
    save_file({"x": torch.randn(8, 4), "y": torch.randn(7, 1)}, str(tmp_path / "probe.safetensors"))
    res = _invoke("align", tmp_path, "--data", tmp_path / "probe.safetensors", "--loss", "mse")
    assert res.exit_code == 2 and "first axes" in res.stderr and "probe.safetensors" in res.stderr


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE_FIELDS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def test_ctrl_c_leaves_a_valid_partial_report_and_resume_completes_it(
    tmp_path: Path, fixtures_dir: Path
) -> None:
    """Interrupt a real run mid-sequence with SIGINT, then --resume: same final report."""
    run = tmp_path / "run"
    run.mkdir()
    for f in (fixtures_dir / "mlp_wd").iterdir():
        (run / f.name).write_bytes(f.read_bytes())
    base = [
        sys.executable,
        "-m",
        "symtool",
        "align",
        str(run),
        "--null-samples",
        "4",
        "--bootstrap",
        "20",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = tmp_path / "full.json"
    subprocess.run([*base, "-o", str(full)], check=True, env=env, timeout=600)
    part = tmp_path / "part.json"
    proc = subprocess.Popen([*base, "-o", str(part)], env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until at least two checkpoints are done
        if part.exists():
            try:
                done = len(json.loads(part.read_text())["checkpoints"])
            except ValueError:
                pytest.fail("partial report is not valid JSON")
            if done >= 2:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    from symtool.report import schema

    schema.validate_text(part.read_text())  # a valid report after the interruption
    rep = json.loads(part.read_text())
    if rep["complete"]:
        pytest.skip("the run finished before it could be interrupted")
    assert proc.returncode == 130, err.decode()
    assert 2 <= len(rep["checkpoints"]) < 10
    subprocess.run([*base, "-o", str(part), "--resume"], check=True, env=env, timeout=600)
    assert _strip(json.loads(part.read_text())) == _strip(json.loads(full.read_text()))


@pytest.mark.parametrize(
    ("command", "fixture", "extra"),
    [
        ("align", "mlp_wd", ["--last", "2", "--null-samples", "4"]),
        ("symmetry", "mlp_wd", ["--last", "3"]),
        ("ode", "gru", ["--last", "2"]),
    ],
)
def test_reports_are_byte_identical_apart_from_volatile_fields(
    fixtures_dir: Path, command: str, fixture: str, extra: list[str]
) -> None:
    from symtool.report.files import dumps

    outs = []
    for _ in range(2):
        res = _invoke(command, fixtures_dir / fixture, *extra, "-f", "json")
        assert res.exit_code == 0, res.output
        outs.append(dumps(_strip(json.loads(res.stdout))))
    assert outs[0] == outs[1]
