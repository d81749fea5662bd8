"""torchrun with 2 CPU processes (gloo) gives the one-process report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from symtool.report.files import VOLATILE_FIELDS

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not built in"
)


def _run(args: list[str], cwd: Path, world: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "symtool", *args]
    if world > 1:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={world}",
            "-m",
            "symtool",
            *args,
        ]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE_FIELDS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fixtures_dir: Path = Path(__file__).resolve().parents[1] / "fixtures"):
    d = tmp_path_factory.mktemp("dist")
    shutil.copytree(fixtures_dir / "mlp_wd", d / "mlp_wd")
    common = [
        "align",
        "mlp_wd",
        "--last",
        "3",
        "--dtype",
        "float64",
        "--batch-size",
        "64",
        "--null-samples",
        "4",
        "--bootstrap",
        "10",
    ]
    _run([*common, "-o", "one.json", "--save-matrices", "one.safetensors"], d, 1)
    _run([*common, "-o", "data.json", "--save-matrices", "data.safetensors"], d, 2)
    _run([*common, "-o", "ckpt.json", "--parallel", "checkpoints"], d, 2)
    return d


def test_data_parallel_sums_equal_one_process(runs: Path) -> None:
    one, two = load_file(str(runs / "one.safetensors")), load_file(str(runs / "data.safetensors"))
    assert set(one) == set(two) and len(one) == 3 * 4 * 9
    for key in one:
        rel = (one[key] - two[key]).norm() / max(float(one[key].norm()), 1e-300)
        assert rel < 1e-10, key


def test_data_parallel_report_equals_one_process(runs: Path) -> None:
    a, b = json.loads((runs / "one.json").read_text()), json.loads((runs / "data.json").read_text())
    assert [e["step"] for e in a["checkpoints"]] == [e["step"] for e in b["checkpoints"]]
    for ea, eb in zip(a["checkpoints"], b["checkpoints"], strict=True):
        assert ea["sha256"] == eb["sha256"]
        for la, lb in zip(ea["layers"], eb["layers"], strict=True):
            assert la["rows"] == lb["rows"] == 512
            for rid, ra in la["relations"].items():
                rb = lb["relations"][rid]
                assert ra["alpha"] == pytest.approx(rb["alpha"], rel=1e-10, abs=1e-12), rid
                # the null and z pass through eigenvectors, whose conditioning (1/gap)
                # amplifies the sums' round-off differences
                for key in ("null_mean", "z"):
                    assert ra[key] == pytest.approx(rb[key], rel=1e-8, abs=1e-10), (rid, key)
            for fid, fa in la["pah"]["fits"].items():
                fb = lb["pah"]["fits"][fid]
                if fa["kappa"] is not None:
                    assert fa["kappa"] == pytest.approx(fb["kappa"], abs=1e-8), fid
                    assert fa["agreement"] == pytest.approx(fb["agreement"], rel=1e-9), fid


def test_reports_of_every_process_layout_validate(runs: Path) -> None:
    from symtool.report import schema

    for name in ("one.json", "data.json", "ckpt.json"):
        schema.validate_text((runs / name).read_text())


def test_checkpoint_parallel_report_is_the_same_report(runs: Path) -> None:
    a, c = json.loads((runs / "one.json").read_text()), json.loads((runs / "ckpt.json").read_text())
    assert _strip(a) == _strip(c)
