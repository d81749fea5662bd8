"""`symtool ode` end to end: discovery from state dicts, verdicts, custom cells, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from symtool.cli.app import app
from symtool.report import metric_names, schema

runner = CliRunner()


def _invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def _rnn_checkpoint(path: Path, scale: float) -> None:
    """An nn.RNN (tanh, no input) whose recurrent matrix is orthogonal × scale."""
    torch.manual_seed(0)
    rnn = torch.nn.RNN(3, 8, bias=False)
    q, _ = torch.linalg.qr(torch.randn(8, 8))
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(scale * q)
    save_file({f"encoder.{k}": v.contiguous() for k, v in rnn.state_dict().items()}, str(path))


def test_fixture_bidirectional_lstm(fixtures_dir: Path) -> None:
    res = _invoke("ode", fixtures_dir / "lstm2", "-f", "json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["schema"] == "symtool/ode"
    layers = rep["checkpoints"][0]["layers"]
    assert [lay["name"] for lay in layers] == [
        "rnn.l0",
        "rnn.l0_reverse",
        "rnn.l1",
        "rnn.l1_reverse",
    ]
    for lay in layers:
        assert (lay["n"], lay["t"]) == (2, 2)
        assert lay["state_size"] == 32  # (h, c)
        assert lay["verdict"]["label"] in ("contracting", "marginal", "expanding")
        assert lay["lyapunov"]["sequences"] == 16  # the probe's sequences drive the cells
    assert rep["provenance"]["probe"]["shape"] == [16, 50, 8]


def test_damped_is_contracting_and_scaled_past_the_edge_is_expanding(tmp_path: Path) -> None:
    _rnn_checkpoint(tmp_path / "step_1.safetensors", 0.5)
    _rnn_checkpoint(tmp_path / "step_2.safetensors", 1.5)
    res = _invoke("ode", tmp_path, "-f", "json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    damped, edge = (e["layers"][0] for e in rep["checkpoints"])
    assert damped["verdict"]["label"] == "contracting"
    assert edge["verdict"]["label"] == "expanding"
    # at rest, J = W_hh (tanh'(0) = 1): its spectral radius is the scale
    assert math.isclose(damped["rest"]["spectral_radius"], 0.5, rel_tol=1e-5)
    assert math.isclose(edge["rest"]["spectral_radius"], 1.5, rel_tol=1e-5)


def test_csv_rows(tmp_path: Path) -> None:
    _rnn_checkpoint(tmp_path / "step_1.safetensors", 0.9)
    res = _invoke("ode", tmp_path, "-f", "csv")
    lines = res.stdout.strip().splitlines()
    assert lines[0] == "step,checkpoint,layer,cell,quantity,value,status,reason"
    verdict = [ln for ln in lines if ",verdict," in ln]
    assert len(verdict) == 1 and verdict[0].endswith("contracting,ok,")


def test_no_recurrent_cell_is_a_clear_error(tmp_path: Path) -> None:
    save_file({"fc.weight": torch.zeros(3, 3)}, str(tmp_path / "m.safetensors"))
    res = _invoke("ode", tmp_path / "m.safetensors")
    assert res.exit_code == 2
    assert "no recurrent cell found" in res.stderr and "m.safetensors" in res.stderr


CELL = """
import torch

class Cell(torch.nn.Module):
    state_size = 4
    input_size = 2

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(4, 4))
        self.u = torch.nn.Parameter(torch.zeros(4, 2))

    def step(self, h, x):
        return torch.tanh(self.w @ h + self.u @ x)

def make():
    return Cell()
"""


def test_custom_cell_through_model(tmp_path: Path) -> None:
    (tmp_path / "cell.py").write_text(CELL)
    w = torch.diag(torch.tensor([0.9, 0.5, -0.3, 0.1]))
    save_file({"w": w, "u": torch.zeros(4, 2)}, str(tmp_path / "step_5.safetensors"))
    res = _invoke(
        "ode", tmp_path / "step_5.safetensors", "--model", tmp_path / "cell.py:make", "-f", "json"
    )
    assert res.exit_code == 0, res.output
    layer = json.loads(res.stdout)["checkpoints"][0]["layers"][0]
    assert layer["name"] == "Cell"
    assert math.isclose(layer["rest"]["spectral_radius"], 0.9, rel_tol=1e-7)  # float32 file
    assert layer["verdict"]["label"] == "contracting"


# ------------------------------------------------------------ λ_1's interval in reports

NEW_LYAPUNOV = ("lambda_1_se", "frame_lambda_1", "frame_range", "lambda_1_low",
                "lambda_1_high", "interval_rule")
NEW_SETTINGS = ("lyapunov_frames", "confidence", "single_sequence_band")


@pytest.fixture(scope="module")
def ode_json(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("ode")
    gen = torch.Generator().manual_seed(0)
    rnn = {"weight_ih_l0": torch.randn(6, 2, generator=gen),
           "weight_hh_l0": 0.5 * torch.eye(6), "bias_ih_l0": torch.zeros(6),
           "bias_hh_l0": torch.zeros(6)}
    save_file({f"rnn.{k}": v for k, v in rnn.items()}, str(folder / "step_1.safetensors"))
    save_file({"x": torch.randn(4, 30, 2, generator=gen)}, str(folder / "probe.safetensors"))
    res = _invoke("ode", folder / "step_1.safetensors", "--data", folder / "probe.safetensors",
                  "--batch-first", "--nonlinearity", "linear", "-f", "json")
    assert res.exit_code == 0, res.output
    (folder / "ode.json").write_text(res.stdout)
    return folder, json.loads(res.stdout)


def test_report_fields_check_and_older_reports(ode_json: tuple[Path, dict]) -> None:
    folder, rep = ode_json
    layer = rep["checkpoints"][0]["layers"][0]
    ly = layer["lyapunov"]
    assert ly["lambda_1"] == pytest.approx(math.log(0.5), abs=1e-6)
    assert ly["lambda_1_high"] < 0 and layer["verdict"]["label"] == "contracting"
    assert rep["provenance"]["settings"]["lyapunov_frames"] == 3
    for metric, path in (("lambda_1_se", ("lyapunov", "lambda_1_se")),
                         ("lambda_1_high", ("lyapunov", "lambda_1_high")),
                         ("frame_lambda_1.2", ("lyapunov", "frame_lambda_1", "2"))):
        assert metric_names.resolve(rep, metric).paths == (path,)
    res = _invoke("check", folder / "ode.json", "-r", "lambda_1_se < 1e-6", "-r",
                  "lambda_1_high < 0", "-r", "verdict.band <= 0.001")
    assert res.exit_code == 0, res.output
    old = json.loads(json.dumps(rep))  # a version-3 report made before the interval
    for key in NEW_SETTINGS:
        del old["provenance"]["settings"][key]
    for lay in old["checkpoints"][0]["layers"]:
        for key in NEW_LYAPUNOV:
            del lay["lyapunov"][key]
        del lay["verdict"]["evidence"]
    assert schema.validate(old) == "ode"
    broken = json.loads(json.dumps(rep))
    broken["checkpoints"][0]["layers"][0]["lyapunov"]["lambda_1_se"] = "small"
    with pytest.raises(Exception, match="lambda_1_se"):
        schema.validate(broken)


def test_table_and_csv_show_the_interval(ode_json: tuple[Path, dict]) -> None:
    folder, _ = ode_json
    table = _invoke("ode", folder / "step_1.safetensors", "--nonlinearity", "linear",
                    "-f", "table", "--data", folder / "probe.safetensors", "--batch-first")
    assert table.exit_code == 0, table.output
    assert "interval" in table.output and "[-0.694, -0.692]" in table.output
    rest = _invoke("ode", folder / "step_1.safetensors", "--nonlinearity", "linear",
                   "-f", "table")
    assert "contracting (rest)" in rest.output
    csv = _invoke("ode", folder / "step_1.safetensors", "--nonlinearity", "linear", "-f", "csv",
                  "--data", folder / "probe.safetensors", "--batch-first")
    quantities = {line.split(",")[4] for line in csv.stdout.splitlines()[1:]}
    assert {"lyapunov.lambda_1_se", "lyapunov.lambda_1_low", "lyapunov.lambda_1_high",
            "lyapunov.frame_range", "verdict.band", "verdict.basis"} <= quantities
