"""``Monitor`` under DDP (2 CPU processes, gloo): probe sums reduced across ranks, so rank
0's report equals one process's on the same weights; only rank 0 writes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import symtool
from tests.api.helpers import differences
from tests.api.nets import probe

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not built in"
)

SCRIPT = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    from safetensors.torch import save_file
    dist.init_process_group("gloo")
    import symtool
    from tests.api.nets import mlp, probe
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = mlp()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), 0.1)
    data = probe(512, seed=1 + rank)
    mon = symtool.Monitor(ddp, probe(), out=f"{sys.argv[1]}/rank{rank}", every_n_steps=2,
                          null_samples=2, bootstrap=4, batch_size=32)
    for step in range(1, 5):
        idx = torch.randint(0, 512, (32,))
        loss = torch.nn.functional.cross_entropy(ddp(data["x"][idx]), data["y"][idx])
        opt.zero_grad(); loss.backward(); opt.step()
        mon.step(step)
        if rank == 0 and step % 2 == 0:
            save_file(model.state_dict(), f"{sys.argv[1]}/ckpts/step_{step:06d}.safetensors")
    mon.close()
    dist.destroy_process_group()
    """
)


def test_ddp_rank0_writes_the_one_process_report(tmp_path: Path) -> None:
    (tmp_path / "ckpts").mkdir()
    root = Path(__file__).resolve().parents[2]
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(script), str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "rank1").exists()
    report = symtool.load_report(tmp_path / "rank0" / "align.json")
    assert report.steps == [2, 4]
    save_file(probe(), str(tmp_path / "ckpts" / "probe.safetensors"))
    one = symtool.align(tmp_path / "ckpts", factory="tests.api.nets:mlp", null_samples=2,
                        bootstrap=4, batch_size=32)
    where = ("path", "sha256", "probe", "source", "data", "factory")
    assert differences(report.to_dict(), one.to_dict(), tol=1e-10, skip=where) == []
