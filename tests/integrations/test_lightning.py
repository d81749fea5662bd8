"""The Lightning callback: one entry per analysed step, equal to ``symtool align`` on a
checkpoint saved at that step, and training bit-identical to a run without it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader, TensorDataset

import symtool
from tests.api.helpers import cli_report, differences
from tests.api.nets import mlp, probe

L = pytest.importorskip("lightning.pytorch")

from symtool.integrations.lightning import SymtoolCallback  # noqa: E402

WHERE = ("path", "sha256", "probe", "source", "data", "device", "factory")


class Lit(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = mlp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), 1e-2)


class Saver(L.Callback):
    """Saves the network every ``every`` steps, as a user's checkpointing would."""

    def __init__(self, folder: Path, every: int) -> None:
        self.folder, self.every = folder, every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0:
            path = self.folder / f"step_{trainer.global_step:06d}.safetensors"
            save_file(pl_module.net.state_dict(), str(path))


def _fit(tmp_path: Path, callbacks: list) -> Lit:
    L.seed_everything(0, verbose=False)
    model = Lit()
    data = probe(512, seed=1)
    loader = DataLoader(TensorDataset(data["x"], data["y"]), batch_size=32, shuffle=True)
    trainer = L.Trainer(
        max_steps=9, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, loader)
    return model


def test_lightning_callback(tmp_path: Path) -> None:
    ckpts, out = tmp_path / "ckpts", tmp_path / "out"
    ckpts.mkdir()
    save_file(probe(), str(ckpts / "probe.safetensors"))
    plain = _fit(tmp_path, [])
    cb = SymtoolCallback(probe(), every_n_steps=3, out=out, module="net", null_samples=3,
                         bootstrap=8, batch_size=64)
    watched = _fit(tmp_path, [cb, Saver(ckpts, 3)])
    for (k, a), b in zip(plain.state_dict().items(), watched.state_dict().values(), strict=True):
        assert torch.equal(a, b), k

    report = symtool.load_report(out / "align.json")
    assert report.steps == [3, 6, 9] and report["complete"] is True
    theirs = cli_report(tmp_path, "align", ckpts, "--null-samples", "3", "--bootstrap", "8",
                        "--batch-size", "64", "--model", "tests.api.nets:mlp")
    assert differences(report.to_dict(), theirs, tol=1e-10, skip=WHERE) == []
    assert symtool.load_report(out / "symmetry.json").steps == [3, 6, 9]


class Crash(L.Callback):
    """Kills training at ``step`` (after the other callbacks' ``on_train_batch_end``)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("killed")


def test_fit_from_ckpt_path_continues_the_reports(tmp_path: Path) -> None:
    """``trainer.fit(model, ckpt_path=...)`` after a crash at step 4 (checkpoint at 3):
    the report keeps step 2's entry, replaces the rest and stays valid."""
    from symtool.report.schema import validate

    out, ckpts = tmp_path / "out", tmp_path / "ckpts"
    data = probe(512, seed=1)
    loader = DataLoader(TensorDataset(data["x"], data["y"]), batch_size=32, shuffle=True)

    def fit(callbacks: list, ckpt_path: Path | None = None) -> None:
        L.seed_everything(0, verbose=False)
        saver = L.callbacks.ModelCheckpoint(dirpath=ckpts, every_n_train_steps=3, save_top_k=-1)
        trainer = L.Trainer(
            max_steps=9, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
            enable_model_summary=False, callbacks=[*callbacks, saver], default_root_dir=tmp_path,
        )
        trainer.fit(Lit(), loader, ckpt_path=ckpt_path)

    def callback() -> SymtoolCallback:
        return SymtoolCallback(probe(), every_n_steps=2, out=out, module="net", bootstrap=0)

    with pytest.raises(RuntimeError, match="killed"):
        fit([callback(), Crash(4)])
    killed = symtool.load_report(out / "align.json")
    assert killed.steps == [2, 4] and killed["complete"] is False
    (ckpt,) = ckpts.glob("*step=3*.ckpt")
    fit([callback()], ckpt_path=ckpt)
    for name in ("align", "symmetry"):
        report = symtool.load_report(out / f"{name}.json")
        assert report.steps == [2, 4, 6, 8] and report["complete"] is True
        assert validate(report.to_dict()) == name
    report = symtool.load_report(out / "align.json")
    assert differences(report.checkpoints[0], killed.checkpoints[0], tol=0) == []
