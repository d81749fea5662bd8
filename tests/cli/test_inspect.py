"""`symtool inspect`: checkpoints in step order, tensors and the analyses that would read them."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_inspect_json_lists_checkpoints_in_step_order(tmp_path: Path) -> None:
    _ckpts(tmp_path)
    result = _invoke("inspect", str(tmp_path), "--format", "json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["schema"] == "symtool/inspect" and report["schema_version"] >= 1
    assert [c["step"] for c in report["checkpoints"]] == [0, 100, 200]
    assert all(len(c["sha256"]) == 64 for c in report["checkpoints"])


def test_inspect_one_checkpoint_lists_tensors_and_analyses(tmp_path: Path) -> None:
    _ckpts(tmp_path, steps=(5,))
    result = _invoke("inspect", str(tmp_path / "step_000005.safetensors"), "-f", "json")
    items = {i["name"]: i for i in json.loads(result.stdout)["tensors"]["items"]}
    assert items["fc1.weight"]["shape"] == [4, 3]
    assert items["fc1.weight"]["kind"] == "linear"
    assert "align" in items["fc1.weight"]["analyses"]


def test_inspect_table_and_csv(tmp_path: Path) -> None:
    _ckpts(tmp_path)
    table = _invoke("inspect", str(tmp_path), "--format", "table")
    assert table.exit_code == 0 and "step_000100.safetensors" in table.output
    csv = _invoke("inspect", str(tmp_path), "--format", "csv")
    lines = csv.stdout.strip().splitlines()
    assert lines[0].startswith("step,path") and len(lines) == 4


def test_refused_pickle_through_cli(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"model": torch.nn.Linear(3, 2)}, path)
    result = _invoke("inspect", str(path), "--tensors")
    assert result.exit_code == 2  # the only checkpoint failed
    assert "--trust-pickle" in result.stderr and str(path) in result.stderr
    ok = _invoke("inspect", str(path), "--tensors", "--trust-pickle", "-f", "json")
    assert ok.exit_code == 0 and "warning" in ok.stderr
    names = {i["name"] for i in json.loads(ok.stdout)["tensors"]["items"]}
    assert names == {"weight", "bias"}


def test_inspect_dry_run_uses_the_analyses_own_discovery(tmp_path: Path) -> None:
    """Attention blocks, unit pairs and recurrent cells are named as the analyses see them."""
    rnn = torch.nn.LSTM(4, 6)
    sd = {f"enc.{k}": v for k, v in rnn.state_dict().items()}
    sd |= {
        "blk.attn.in_proj_weight": torch.randn(24, 8),
        "blk.attn.out_proj.weight": torch.randn(8, 8),
        "blk.fc1.weight": torch.randn(16, 8),
        "blk.fc2.weight": torch.randn(8, 16),
        "norm.weight": torch.ones(8),
    }
    path = tmp_path / "m.safetensors"
    save_file(sd, str(path))
    res = _invoke("inspect", str(path), "-f", "json")
    assert res.exit_code == 0, res.output
    items = {i["name"]: i for i in json.loads(res.stdout)["tensors"]["items"]}
    assert items["enc.weight_hh_l0"]["analyses"] == ["ode"]
    assert any("units blk.fc1→blk.fc2" in n for n in items["blk.fc1.weight"]["notes"])
    assert any("attention block" in n for n in items["blk.attn.in_proj_weight"]["notes"])
    assert "align" not in items["blk.attn.in_proj_weight"]["analyses"]
    assert items["norm.weight"]["analyses"] == []
