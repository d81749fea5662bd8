"""A training job restarted from its own checkpoint continues the Monitor's reports: the
final reports equal an uninterrupted run's, and training stays bit-identical."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import symtool
from symtool.errors import UsageError
from symtool.report.schema import validate
from tests.api.helpers import differences
from tests.api.nets import mlp, probe

SETTINGS = {"every_n_steps": 2, "null_samples": 3, "bootstrap": 8, "batch_size": 64}


def _train(
    out: Path,
    first: int,
    last: int,
    *,
    state: dict[str, Any] | None = None,
    save_at: int | None = None,
    close: bool = True,
    **settings: Any,
) -> tuple[torch.nn.Module, dict[str, Any] | None]:
    """Steps ``first``..``last`` of a plain loop with a Monitor (from ``state``, the saved
    state of step ``first - 1``, or from scratch); returns the model and the state saved
    after step ``save_at``. ``close=False`` stands for a job killed after ``last``."""
    torch.manual_seed(0)
    np.random.seed(0)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["torch"])
        np.random.set_state(state["numpy"])
    data = probe(512, seed=1)
    mon = symtool.Monitor(model, probe(), out=out, **{**SETTINGS, **settings})
    saved = None
    for step in range(first, last + 1):
        idx = torch.randint(0, 512, (32,))
        loss = torch.nn.functional.cross_entropy(model(data["x"][idx]), data["y"][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.step(step)
        np.random.rand()
        if step == save_at:
            saved = {
                "model": {k: v.clone() for k, v in model.state_dict().items()},
                "opt": _clone(opt.state_dict()),
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
            }
    if close:
        mon.close()
    return model, saved


def _clone(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, dict):
        return {k: _clone(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clone(v) for v in x]
    return x


def test_a_restarted_job_continues_its_reports(tmp_path: Path) -> None:
    whole, restarted = tmp_path / "whole", tmp_path / "restarted"
    plain, _ = _train(whole, 1, 9)
    _, state = _train(restarted, 1, 6, save_at=3, close=False)  # killed after step 6
    killed = symtool.load_report(restarted / "align.json")
    assert killed.steps == [2, 4, 6] and killed["complete"] is False
    model, _ = _train(restarted, 4, 9, state=state)  # resumed from the step-3 checkpoint
    for (k, a), b in zip(plain.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k  # bit for bit
    for name in ("align", "symmetry"):
        ours = json.loads((restarted / f"{name}.json").read_text())
        theirs = json.loads((whole / f"{name}.json").read_text())
        assert validate(ours) == name and ours["complete"] is True
        assert [e["step"] for e in ours["checkpoints"]] == [2, 4, 6, 8]
        assert differences(ours, theirs, tol=1e-10) == []
    assert json.loads((restarted / "symmetry.json").read_text())["sequence"] is not None


def test_a_restart_keeps_only_the_steps_before_the_first_new_one(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _train(out, 1, 6, close=False)
    mon = symtool.Monitor(mlp(), analyses=("symmetry",), out=out, every_n_steps=2)
    assert symtool.load_report(out / "symmetry.json").steps == [2, 4, 6]  # untouched so far
    mon.step(4)
    report = symtool.load_report(out / "symmetry.json")
    assert report.steps == [2, 4] and report["complete"] is False
    assert validate(report.to_dict()) == "symmetry"


def test_other_settings_are_an_error_and_resume_false_starts_afresh(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _train(out, 1, 4, close=False)
    with pytest.raises(UsageError, match=r"null_samples.*resume=False"):
        symtool.Monitor(mlp(), probe(), out=out, **{**SETTINGS, "null_samples": 5})
    mon = symtool.Monitor(mlp(), probe(), out=out, resume=False, **{**SETTINGS, "null_samples": 5})
    mon.step(2)
    report = symtool.load_report(out / "align.json")
    assert report.steps == [2]
    assert report["provenance"]["settings"]["null_samples"] == 5
