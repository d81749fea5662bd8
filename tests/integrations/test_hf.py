"""The transformers Trainer callback: one entry per analysed step, equal to ``symtool
align`` on a checkpoint saved at that step, and training bit-identical without it.

Models: ``Tiny``, a ``PreTrainedModel`` over ``nn.Linear`` layers (align and symmetry),
and a 2-layer GPT-2 from a local config (symmetry; align on ``Conv1D`` layers with the
causal-LM loss, against the Trainer's own ``checkpoint-N`` folders).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

import symtool
from tests.api.helpers import cli_report, differences
from tests.api.nets import probe

transformers = pytest.importorskip("transformers")

from symtool.integrations.hf import SymtoolCallback  # noqa: E402
from tests.integrations.hf_nets import gpt2, gpt2_eager, tiny  # noqa: E402

WHERE = ("path", "sha256", "probe", "source", "data", "device", "factory", "model", "targets")


class Rows(torch.utils.data.Dataset):
    def __init__(self, columns: dict[str, torch.Tensor]) -> None:
        self.columns = columns

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.columns.items()}


class Saver(transformers.TrainerCallback):
    """Saves the model every ``every`` steps with ``torch.save``, keys in the model's order.

    (A safetensors file sorts its keys, and symmetry's tied-embedding detection reads them
    in order: GPT-2's ``lm_head.weight`` then precedes ``transformer.wte.weight`` and is
    not recognised as tied. The live model's state dict has the model's order.)
    """

    def __init__(self, folder: Path, every: int) -> None:
        self.folder, self.every = folder, every

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0:
            sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
            torch.save(sd, self.folder / f"step_{state.global_step:06d}.pt")


def _train(make, dataset, tmp_path: Path, callbacks: list, **args: Any) -> torch.nn.Module:
    transformers.set_seed(0)
    model = make()
    args = transformers.TrainingArguments(**{
        "output_dir": str(tmp_path / "hf"), "max_steps": 6, "per_device_train_batch_size": 16,
        "learning_rate": 1e-2, "report_to": [], "save_strategy": "no", "logging_strategy": "no",
        "use_cpu": True, "seed": 0, "dataloader_num_workers": 0, "disable_tqdm": True, **args,
    })
    trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset,
                                   callbacks=callbacks)
    trainer.train()
    return model


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), k


def test_trainer_callback_align_and_symmetry(tmp_path: Path) -> None:
    ckpts, out = tmp_path / "ckpts", tmp_path / "out"
    ckpts.mkdir()
    p = probe()
    save_file({"x": p["x"], "labels": p["y"]}, str(ckpts / "probe.safetensors"))
    data = probe(512, seed=1)
    dataset = Rows({"x": data["x"], "labels": data["y"]})
    plain = _train(tiny, dataset, tmp_path, [])
    cb = SymtoolCallback({"x": p["x"], "labels": p["y"]}, every_n_steps=2, out=out,
                         null_samples=3, bootstrap=8, batch_size=64)
    watched = _train(tiny, dataset, tmp_path, [cb, Saver(ckpts, 2)])
    _same_weights(plain, watched)

    report = symtool.load_report(out / "align.json")
    assert report.steps == [2, 4, 6] and report["complete"] is True
    theirs = cli_report(tmp_path, "align", ckpts, "--targets", "labels", "--null-samples", "3",
                        "--bootstrap", "8", "--batch-size", "64",
                        "--model", "tests.integrations.hf_nets:tiny")
    assert [c["status"] for c in theirs["checkpoints"]] == ["ok"] * 3
    assert differences(report.to_dict(), theirs, tol=1e-10, skip=WHERE) == []
    assert symtool.load_report(out / "symmetry.json").steps == [2, 4, 6]


def test_trainer_callback_gpt2_symmetry(tmp_path: Path) -> None:
    ckpts, out = tmp_path / "ckpts", tmp_path / "out"
    ckpts.mkdir()
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 64, (64, 16), generator=g)
    dataset = Rows({"input_ids": ids, "labels": ids})
    plain = _train(gpt2, dataset, tmp_path, [])
    cb = SymtoolCallback(every_n_steps=3, analyses=("symmetry",), out=out, heads=2)
    watched = _train(gpt2, dataset, tmp_path, [cb, Saver(ckpts, 3)])
    _same_weights(plain, watched)

    report = symtool.load_report(out / "symmetry.json")
    assert report.steps == [3, 6]
    assert all(e["status"] == "ok" for e in report.checkpoints)
    theirs = cli_report(tmp_path, "symmetry", ckpts, "--heads", "2",
                        "--model", "tests.integrations.hf_nets:gpt2")
    assert differences(report.to_dict(), theirs, tol=1e-10, skip=WHERE) == []


def test_trainer_callback_gpt2_align(tmp_path: Path) -> None:
    """align on a live GPT-2 (``Conv1D`` layers, causal-LM loss found from the model's
    class, token ids as the probe) equals ``symtool align`` on the Trainer's own
    ``checkpoint-N`` folders, with a token probe file beside them."""
    run, out = tmp_path / "run", tmp_path / "out"
    run.mkdir()
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 64, (64, 16), generator=g)
    tokens = torch.randint(0, 64, (8, 16), generator=g)
    save_file({"input_ids": tokens}, str(run / "probe.safetensors"))
    dataset = Rows({"input_ids": ids, "labels": ids})
    plain = _train(gpt2_eager, dataset, tmp_path, [])
    cb = SymtoolCallback(tokens, every_n_steps=3, analyses=("align",), out=out, bootstrap=8)
    watched = _train(gpt2_eager, dataset, tmp_path, [cb], output_dir=str(run),
                     save_strategy="steps", save_steps=3)
    _same_weights(plain, watched)

    report = symtool.load_report(out / "align.json")
    assert report.steps == [3, 6] and report["complete"] is True
    assert report["provenance"]["settings"]["loss"] == "causal_lm"
    assert all(layer["status"] == "ok" for e in report.checkpoints for layer in e["layers"])
    assert "transformer.h.0.attn.c_attn" in report.layers
    theirs = cli_report(tmp_path, "align", run, "--bootstrap", "8")
    assert [c["step"] for c in theirs["checkpoints"]] == [3, 6]
    assert differences(report.to_dict(), theirs, tol=1e-10, skip=WHERE) == []


class Crash(transformers.TrainerCallback):
    """Kills training at ``step`` (after the other callbacks' ``on_step_end``)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def test_trainer_resume_from_checkpoint_continues_the_reports(tmp_path: Path) -> None:
    """Trainer.train(resume_from_checkpoint=...) after a crash at step 4 (checkpoint at 3):
    the reports under ``out`` are continued, and equal an uninterrupted run's."""
    p = {"x": probe()["x"], "labels": probe()["y"]}
    data = probe(512, seed=1)
    dataset = Rows({"x": data["x"], "labels": data["y"]})
    settings = {"every_n_steps": 2, "null_samples": 3, "bootstrap": 8, "batch_size": 64}
    whole, out = tmp_path / "whole", tmp_path / "out"
    plain = _train(tiny, dataset, tmp_path / "a", [SymtoolCallback(p, out=whole, **settings)])

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _train(tiny, dataset, tmp_path, [SymtoolCallback(p, out=out, **settings), Crash(4)],
               output_dir=str(run), save_strategy="steps", save_steps=3)
    assert symtool.load_report(out / "align.json").steps == [2, 4]
    transformers.set_seed(0)
    model = tiny()
    args = transformers.TrainingArguments(
        output_dir=str(run), max_steps=6, per_device_train_batch_size=16, learning_rate=1e-2,
        report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, seed=0,
        dataloader_num_workers=0, disable_tqdm=True,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset,
                                   callbacks=[SymtoolCallback(p, out=out, **settings)])
    trainer.train(resume_from_checkpoint=str(run / "checkpoint-3"))
    _same_weights(plain, model)
    for name in ("align", "symmetry"):
        ours = symtool.load_report(out / f"{name}.json")
        assert ours.steps == [2, 4, 6] and ours["complete"] is True
        theirs = symtool.load_report(whole / f"{name}.json")
        assert differences(ours.to_dict(), theirs.to_dict(), tol=1e-10) == []
