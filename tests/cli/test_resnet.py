"""A Lightning-trained, torchvision-style ResNet-18 end to end through ``align`` (issue 15):
the ``model.`` prefix stripped, all 21 conv/linear layers analysed, every undefined value
explained, the fewer-rows-than-d_in warning on the 1×1-map layers, and the same numbers at
1 and 2 torch threads (one thread runs SciPy's LAPACK, two run torch's MKL)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from symtool.cli.app import app
from tests.cli.resnet_model import resnet18

runner = CliRunner()
MODEL = Path(__file__).with_name("resnet_model.py")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two Lightning checkpoints (steps 0 and 10) and a probe file beside them."""
    folder = tmp_path_factory.mktemp("resnet_wd")
    shutil.copy(MODEL, folder / "resnet_model.py")
    torch.manual_seed(0)
    net = resnet18()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(40, 3, 8, 8, generator=g), torch.randint(0, 5, (40,), generator=g)
    save_file({"x": x, "y": y}, str(folder / "probe.safetensors"))
    opt = torch.optim.SGD(net.parameters(), lr=0.05, weight_decay=5e-4)
    for step in range(11):
        if step in (0, 10):
            state = {"model." + k: v.clone() for k, v in net.state_dict().items()}
            torch.save(
                {"epoch": 0, "global_step": step, "pytorch-lightning_version": "2.6.0",
                 "state_dict": state, "optimizer_states": [], "lr_schedulers": []},
                folder / f"epoch=0-step={step}.ckpt",
            )
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return folder


def _align(folder: Path, threads: int) -> tuple[int, dict, str]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        res = runner.invoke(
            app,
            ["align", str(folder), "--model", str(folder / "resnet_model.py") + ":resnet18",
             "--null-samples", "4", "--bootstrap", "10", "-f", "json"],
            env={"COLUMNS": "200"},
        )
    finally:
        torch.set_num_threads(before)
    return res.exit_code, json.loads(res.stdout), res.stderr


def _numbers(obj, path=""):
    """Every number of a report entry, by its path."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k != "duration_s":
                yield from _numbers(v, f"{path}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}/{i}")
    elif isinstance(obj, int | float) or obj is None:
        yield path, obj


def test_lightning_resnet18_end_to_end_at_one_and_two_threads(run_dir: Path) -> None:
    code1, one, err = _align(run_dir, 1)
    assert code1 == 0, err
    assert "found beside the checkpoints" in err
    assert [e["step"] for e in one["checkpoints"]] == [0, 10]
    dense = (torch.nn.Conv2d, torch.nn.Linear)
    convs = [n for n, m in resnet18().named_modules() if isinstance(m, dense)]
    assert len(convs) == 21
    for e in one["checkpoints"]:
        assert e["status"] == "ok" and e["prefix_stripped"] == "model."
        assert [la["name"] for la in e["layers"]] == convs
        for la in e["layers"]:
            assert la["status"] == "ok"
            for rid, r in {**la["relations"], **la["cross_terms"]}.items():
                assert r["alpha"] is not None or r["reason"], (la["name"], rid)
            for fid, f in la["pah"]["fits"].items():
                assert f["kappa"] is not None or f["reason"], (la["name"], fid)
            # 1×1 maps: 40 rows < d_in = 9·channels from layer2.0.conv2 on; the warning says so
            few = [w for w in la.get("warnings", []) if w["kind"] == "few_rows"]
            assert bool(few) == (la["rows"] < la["d_in"] or la["rows"] < la["d_out"])
            if la["rows"] < la["d_in"]:
                assert "f-RGA" in few[0]["affects"] and "H_a~Z_a" in few[0]["affects"]
    layer4 = one["checkpoints"][1]["layers"][convs.index("layer4.1.conv2")]
    assert (layer4["d_in"], layer4["rows"]) == (108, 40)
    assert all(r["alpha"] is not None for r in layer4["relations"].values())
    assert "warning: layer layer4.1.conv2: 40 probe rows < d_in = 108" in err

    code2, two, _ = _align(run_dir, 2)
    assert code2 == 0
    a, b = dict(_numbers(one["checkpoints"])), dict(_numbers(two["checkpoints"]))
    assert a.keys() == b.keys()
    for key, va in a.items():
        vb = b[key]
        assert (va is None) == (vb is None), key
        if isinstance(va, bool):
            assert va == vb, key  # "holds" verdicts
        elif va is not None:
            assert math.isclose(va, vb, rel_tol=1e-6, abs_tol=1e-8), (key, va, vb)


def test_a_value_left_undefined_by_the_solvers_is_named_on_stderr_and_exits_1(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When every solver fails on one matrix (here: layer4.1.conv2's H_a, 108×108 with ≤ 12
    non-zero rows, forced to fail), the other numbers are still there, the undefined ones
    carry their reason in the report and the table, stderr names them, and the exit is 1."""
    from symtool import eigen
    from symtool.errors import AnalysisError

    real = eigen.robust
    calls: list[int] = []

    def fails_first(M, vectors, host):
        calls.append(M.shape[0])
        if len(calls) == 1:  # the first decomposition: H_a on its non-zero rows
            raise AnalysisError("eigh failed with every solver: forced by the test")
        return real(M, vectors, host)

    monkeypatch.setattr(eigen, "robust", fails_first)
    res = runner.invoke(
        app,
        ["align", str(run_dir), "--model", str(run_dir / "resnet_model.py") + ":resnet18",
         "--steps", "10", "--layers", "layer4.1.conv2", "--null-samples", "2", "--bootstrap",
         "0", "-f", "json"],
    )
    assert res.exit_code == 1, res.stderr
    layer = json.loads(res.stdout)["checkpoints"][0]["layers"][0]
    rel = layer["relations"]
    assert rel["f-GWA"]["alpha"] is not None and rel["b-RGA"]["alpha"] is not None
    for rid in ("f-RGA", "f-RWA"):
        assert rel[rid]["alpha"] is None and "forced by the test" in rel[rid]["reason"]
    assert "error: step 10 layer layer4.1.conv2: α(f-RGA), α(f-RWA)" in res.stderr
    assert "forced by the test" in res.stderr
    calls.clear()
    table = runner.invoke(
        app,
        ["align", str(run_dir), "--model", str(run_dir / "resnet_model.py") + ":resnet18",
         "--steps", "10", "--layers", "layer4.1.conv2", "--null-samples", "2", "--bootstrap",
         "0", "-f", "table"],
        env={"COLUMNS": "250"},
    )
    assert table.exit_code == 1
    assert "undefined: failed: H_a: eigh failed with every solver" in table.stdout
