"""The cost estimate of ``inspect``/``align --dry-run`` (:mod:`symtool.align.estimate`):
memory against the measured sizes of the sums, rows against the model, the suggestion."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from symtool.align import estimate as est
from symtool.align.moments import LayerAccumulator
from symtool.inputs.models import LayerRef
from symtool.inputs.probes import Batch


@pytest.mark.parametrize(("recipe", "raw_too"), [("paper", False), ("paper", True), ("raw", False)])
@pytest.mark.parametrize(("d_in", "d_out"), [(7, 3), (12, 20)])
def test_memory_is_the_measured_size_of_the_sums(
    recipe: str, raw_too: bool, d_in: int, d_out: int
) -> None:
    """Streaming sums plus finished matrices, counted from the live tensors (O(d) vectors
    and counters aside)."""
    g = torch.Generator().manual_seed(0)
    acc = LayerAccumulator(recipe, raw_too=raw_too)
    W = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    x = torch.randn(30, d_in, generator=g, dtype=torch.float64)
    y = torch.randn(30, d_out, generator=g, dtype=torch.float64)
    acc.add(x, x @ W.T, y, y @ W)
    sums = sum(t.nbytes for t in acc.sums() if t.ndim == 2)
    m = acc.finish(W)
    finished = [m.W, m.H_a, m.G_a, m.H_b, m.G_b, m.C_a, m.C_b]
    if raw_too:
        finished += list(m.raw.values())
    measured = sums + sum(t.nbytes for t in finished)
    assert est.layer_cost("l", d_in, d_out, raw_too=raw_too).sums_bytes == measured


def test_flops_follow_the_formula() -> None:
    a, b = est.layer_cost("a", 100, 50, rows=1000), est.layer_cost("b", 200, 100, rows=1000)
    assert a.capture_flops == 2 * 1000 * (100**2 + 50**2 + 100 * 50)
    v = est.values_factor()  # the test session runs torch on one thread: 4/3
    assert v == pytest.approx(4 / 3)
    assert a.decompose_flops == 11 * (100**3 + 50**3) + 9 * 50**3 + 4 * 100**2 * 50
    sampled = est.layer_cost("a", 100, 50, rows=1000, null_samples=4)  # G, X decomposed too
    assert sampled.decompose_flops == pytest.approx(a.decompose_flops + 2 * v * (100**3 + 50**3))
    assert b.decompose_flops == 8 * a.decompose_flops  # cubic in the sides
    assert est.layer_cost("a", 100, 50, rows=3000).capture_flops == 3 * a.capture_flops
    assert est.layer_cost("a", 100, 50).capture_flops is None


def test_checkpoint_cost_peak_and_suggestion(monkeypatch: pytest.MonkeyPatch) -> None:
    layers = [est.layer_cost(n, d, 10, rows=100) for n, d in (("x", 40), ("y", 30), ("z", 10))]
    cost = est.checkpoint_cost(layers, null_samples=4, groups=[["x"], ["y", "z"]], rate=1e9)
    sums = max(layers[0].sums_bytes, layers[1].sums_bytes + layers[2].sums_bytes)
    bank = 8 * 4 * (40**2 + 30**2 + 10**2)
    assert cost.sums_bytes == sums and cost.bank_bytes == bank
    assert cost.peak_bytes == sums + layers[0].work_bytes + bank
    flops = sum(c.decompose_flops for c in layers)
    assert cost.decompose_seconds == pytest.approx(flops / 0.5e9)
    assert cost.capture_seconds == pytest.approx(sum(c.capture_flops for c in layers) / 0.5e9)
    assert cost.bank_seconds == pytest.approx(8 / 3 * 4 * (40**3 + 30**3 + 10**3) / 0.5e9)
    assert cost.suggest_layers == []
    monkeypatch.setattr(est, "LARGE_BYTES", 0)
    big = est.checkpoint_cost(layers, rate=1e9)
    assert big.suggest_layers == ["y", "z"]
    assert est.checkpoint_cost(layers[1:], rate=1e9).suggest_layers == []  # nothing to drop
    assert "--layers y --layers z" in est.describe(big)[-1]


def test_rows_per_batch_counts_positions_and_tokens() -> None:
    conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
    lin = torch.nn.Linear(4, 2)

    class Net(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = conv(x)  # (B, 4, 4, 4)
            return lin(h.permute(0, 2, 3, 1))  # a linear map over 16 positions per sample

    refs = [LayerRef("conv", conv, "conv2d", 27, 4), LayerRef("lin", lin, "linear", 4, 2)]
    rows = est.rows_per_batch(Net(), refs, Batch(torch.randn(5, 3, 8, 8), None, None))
    assert rows == {"conv": 5 * 16, "lin": 5 * 16}


def test_dry_run_of_the_lightning_resnet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from symtool.cli.app import app
    from tests.cli.resnet_model import resnet18

    src = Path(__file__).parents[1] / "cli" / "resnet_model.py"
    (tmp_path / "resnet_model.py").write_text(src.read_text())
    state = {"model." + k: v for k, v in resnet18().state_dict().items()}
    torch.save({"state_dict": state, "global_step": 5}, tmp_path / "epoch=0-step=5.ckpt")
    from safetensors.torch import save_file

    save_file({"x": torch.randn(40, 3, 8, 8), "y": torch.randint(0, 5, (40,))},
              str(tmp_path / "probe.safetensors"))
    monkeypatch.setattr(est, "LARGE_BYTES", 0)
    res = CliRunner().invoke(
        app, ["align", str(tmp_path), "--model", f"{tmp_path / 'resnet_model.py'}:resnet18",
              "--dry-run", "--batch-size", "16"],
    )
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert any(line.strip().startswith("conv1  4×27  rows 640 ") for line in lines)  # 40·4·4
    assert any(line.strip().startswith("layer4.1.conv2  12×108  rows 40 ") for line in lines)
    assert "21 layers; per checkpoint" in res.stdout
    assert "--layers layer4.1.conv2 --layers fc" in res.stdout
    assert not list(tmp_path.glob("*.json"))  # nothing analysed, nothing written
