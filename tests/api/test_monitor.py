"""``symtool.Monitor`` in a plain loop: the CLI's entries, untouched training, valid reports."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

import symtool
from symtool.report.files import dumps
from symtool.report.schema import validate
from tests.api.helpers import cli_report, differences
from tests.api.nets import mlp, probe

# where the weights and data came from: files for the CLI, memory for the monitor
WHERE = ("path", "sha256", "probe", "source", "data", "device")


def _train(steps: int, monitor: symtool.Monitor | None = None, save: Path | None = None,
           every: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    np.random.seed(0)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    data = probe(512, seed=1)
    if monitor is not None:
        monitor.__init__(model, **monitor.init_args)  # type: ignore[attr-defined]
    for step in range(1, steps + 1):
        idx = torch.randint(0, 512, (32,))
        loss = torch.nn.functional.cross_entropy(model(data["x"][idx]), data["y"][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if monitor is not None:
            monitor.step(step)
        if save is not None and step % every == 0:
            save_file(model.state_dict(), str(save / f"step_{step:06d}.safetensors"))
        np.random.rand()  # numpy's stream must survive too
    if monitor is not None:
        monitor.close()
    return model


class _Deferred(symtool.Monitor):
    """A Monitor built inside ``_train`` (once the model exists), with these arguments."""

    def __init__(self, *args, **kwargs) -> None:
        if not args:
            self.init_args = kwargs
            return
        super().__init__(*args, **kwargs)


def test_monitor_entries_equal_the_cli_and_training_is_untouched(tmp_path: Path) -> None:
    out, ckpts = tmp_path / "out", tmp_path / "ckpts"
    ckpts.mkdir()
    save_file(probe(), str(ckpts / "probe.safetensors"))
    plain = _train(9)
    mon = _Deferred(probe=probe(), out=out, every_n_steps=3, null_samples=3, bootstrap=8,
                    batch_size=64)
    watched = _train(9, mon, save=ckpts)
    for (k, a), b in zip(plain.state_dict().items(), watched.state_dict().values(), strict=True):
        assert torch.equal(a, b), k  # bit for bit

    align = symtool.load_report(out / "align.json")
    assert align.steps == [3, 6, 9] and align["complete"] is True
    for name in ("align", "symmetry"):  # entries serialised once: still dumps()'s text
        text = (out / f"{name}.json").read_text()
        assert text == dumps(symtool.load_report(out / f"{name}.json"))
    theirs = cli_report(tmp_path, "align", ckpts, "--null-samples", "3", "--bootstrap", "8",
                        "--batch-size", "64", "--model", "tests.api.nets:mlp")
    assert differences(align.to_dict(), theirs, tol=1e-10, skip=(*WHERE, "factory")) == []

    sym = symtool.load_report(out / "symmetry.json")
    theirs = cli_report(tmp_path, "symmetry", ckpts, "--model", "tests.api.nets:mlp")
    assert sym["sequence"] is not None
    assert differences(sym.to_dict(), theirs, tol=1e-10, skip=(*WHERE, "model")) == []


def test_monitor_skips_repeated_and_off_steps() -> None:
    model = mlp()
    mon = symtool.Monitor(model, analyses=("symmetry",), every_n_steps=2)
    for s in (1, 2, 2, 3, 4):
        mon.step(s)
    assert mon.reports["symmetry"].steps == [2, 4]
    assert mon.reports["symmetry"]["complete"] is False
    assert mon.close()["symmetry"]["complete"] is True


def test_settings_go_to_the_analyses_that_have_them() -> None:
    import pytest

    with pytest.raises(TypeError, match="nul_samples"):
        symtool.Monitor(mlp(), probe(), nul_samples=2)
    mon = symtool.Monitor(mlp(), probe(), null_samples=0, bootstrap=0, activation="tanh",
                          symmetry={"tau_dead": 0.03})
    s, _, _, _ = mon._setup["align"]
    assert (s.null_samples, s.activation) == (0, "tanh")
    assert mon._setup["symmetry"].settings.activation == "tanh"
    assert mon._setup["symmetry"].settings.dead_tau == 0.03


SCRIPT = textwrap.dedent(
    """
    import sys, torch
    import symtool
    from tests.api.nets import mlp, probe
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    data = probe(512, seed=1)
    mon = symtool.Monitor(model, probe(), out=sys.argv[1], null_samples=2, bootstrap=4)
    for step in range(1, 100000):
        idx = torch.randint(0, 512, (32,))
        loss = torch.nn.functional.cross_entropy(model(data["x"][idx]), data["y"][idx])
        opt.zero_grad(); loss.backward(); opt.step()
        mon.step(step)
    """
)


def test_a_killed_training_job_leaves_valid_reports(tmp_path: Path) -> None:
    out = tmp_path / "out"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(out)], cwd=root)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            f = out / "align.json"
            if f.exists() and len(json.loads(f.read_text())["checkpoints"]) >= 3:
                break
            time.sleep(0.05)
        proc.kill()  # SIGKILL: no cleanup, whatever is on disk is what stays
    finally:
        proc.wait(timeout=30)
    for name in ("align.json", "symmetry.json"):
        report = json.loads((out / name).read_text())
        assert validate(report) in ("align", "symmetry")
        assert report["complete"] is False
        assert len(report["checkpoints"]) >= 2
    # (a kill during a write may leave a .tmp file beside them; the reports are whole)


def test_monitor_with_collapse_and_nfa_equals_the_cli(tmp_path: Path) -> None:
    """Issue 18 through the callbacks' engine: NC and NFA entries of a live run equal the
    CLI's on checkpoints saved at the same steps, and training stays bit-identical."""
    out, ckpts = tmp_path / "out", tmp_path / "ckpts"
    ckpts.mkdir()
    save_file(probe(), str(ckpts / "probe.safetensors"))
    plain = _train(6)
    mon = _Deferred(probe=probe(), out=out, every_n_steps=3, bootstrap=0, batch_size=64,
                    analyses=("align",), collapse=True, nfa=True)
    watched = _train(6, mon, save=ckpts)
    for (k, a), b in zip(plain.state_dict().items(), watched.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    align = symtool.load_report(out / "align.json")
    layers = align.checkpoints[-1]["layers"]
    assert all(layer["collapse"]["status"] == "ok" for layer in layers)
    assert all(layer["nfa"]["agop"]["method"] == "exact" for layer in layers)
    theirs = cli_report(tmp_path, "align", ckpts, "--bootstrap", "0", "--batch-size", "64",
                        "--collapse", "--nfa", "--model", "tests.api.nets:mlp")
    assert differences(align.to_dict(), theirs, tol=1e-10, skip=(*WHERE, "factory")) == []
