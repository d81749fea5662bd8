"""``symtool.align/symmetry/ode`` in Python give the CLI's report, number for number."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import symtool
from symtool.api.settings import SettingsError
from tests.api.helpers import cli_report, differences
from tests.conftest import FIXTURES

FAST = {"null_samples": 3, "bootstrap": 8}
FAST_FLAGS = ("--null-samples", "3", "--bootstrap", "8")


@pytest.mark.parametrize("fixture", ["mlp_wd", "mlp_nowd", "cnn"])
def test_align_on_checkpoints_equals_cli(fixture: str, tmp_path: Path) -> None:
    run = FIXTURES / fixture
    ours = symtool.align(run, steps="0,100", **FAST)
    theirs = cli_report(tmp_path, "align", run, "--steps", "0,100", *FAST_FLAGS)
    assert len(ours.checkpoints) == 2
    assert differences(ours.to_dict(), theirs) == []
    ours.validate()


@pytest.mark.parametrize("fixture", ["mlp_wd", "cnn", "rnn", "lstm", "gru"])
def test_symmetry_on_checkpoints_equals_cli(fixture: str, tmp_path: Path) -> None:
    run = FIXTURES / fixture
    ours = symtool.symmetry(run, steps="0,100,200", tau_dead=3e-2)
    theirs = cli_report(tmp_path, "symmetry", run, "--steps", "0,100,200", "--tau-dead", "3e-2")
    assert ours["sequence"] is not None
    assert differences(ours.to_dict(), theirs) == []


@pytest.mark.parametrize("fixture", ["rnn", "lstm", "gru", "lstm2"])
def test_ode_on_checkpoints_equals_cli(fixture: str, tmp_path: Path) -> None:
    run = FIXTURES / fixture
    ours = symtool.ode(run, last=1, lyapunov_k=3)
    theirs = cli_report(tmp_path, "ode", run, "--last", "1", "--lyapunov-k", "3")
    assert ours.checkpoints and ours.checkpoints[0]["status"] == "ok"
    assert differences(ours.to_dict(), theirs) == []


def _mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
        nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4),
    )


def _live(step: int = 100) -> nn.Sequential:
    model = _mlp()
    model.load_state_dict(load_file(FIXTURES / "mlp_wd" / f"step_{step:06d}.safetensors"))
    return model


# entry fields that name where the weights and data came from: a file for the CLI, memory here
WHERE = ("path", "sha256", "probe", "source", "data", "device")


def test_live_model_equals_cli_on_its_checkpoint(tmp_path: Path) -> None:
    probe = load_file(FIXTURES / "mlp_wd" / "probe.safetensors")
    ours = symtool.align(_live(), probe, step=100, batch_size=128, **FAST)
    theirs = cli_report(
        tmp_path, "align", FIXTURES / "mlp_wd" / "step_000100.safetensors", *FAST_FLAGS
    )
    assert differences(ours.to_dict(), theirs, skip=WHERE) == []
    assert ours.checkpoints[0]["path"] == "<Sequential step 100>"
    assert ours["provenance"]["probe"]["source"] == "<dict>"
    ours.validate()


def test_live_symmetry_equals_cli_with_model_factory(tmp_path: Path) -> None:
    factory = tmp_path / "factory.py"
    factory.write_text(
        "from torch import nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),\n"
        "                         nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))\n"
    )
    ours = symtool.symmetry(_live(), step=100)
    theirs = cli_report(
        tmp_path, "symmetry", FIXTURES / "mlp_wd" / "step_000100.safetensors",
        "--model", f"{factory}:make",
    )
    assert differences(ours.to_dict(), theirs, skip=(*WHERE, "model")) == []
    assert {u["source"] for u in ours.checkpoints[0]["units"]} == {"explicit"}


def test_state_dict_equals_cli(tmp_path: Path) -> None:
    ckpt = FIXTURES / "rnn" / "step_000100.safetensors"
    ours = symtool.ode(load_file(ckpt), step=100, config=FIXTURES / "rnn" / "symtool.toml")
    theirs = cli_report(tmp_path, "ode", ckpt)
    assert differences(ours.to_dict(), theirs, skip=WHERE) == []


def test_every_data_form_gives_the_same_numbers() -> None:
    """A dict, an (x, y) tuple, a DataLoader, a generator and a file: the same sums."""
    probe = load_file(FIXTURES / "mlp_wd" / "probe.safetensors")
    x, y = probe["x"], probe["y"]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=100)
    forms = [
        probe,
        (x, y),
        loader,
        ((x[i : i + 64], y[i : i + 64]) for i in range(0, 512, 64)),
        FIXTURES / "mlp_wd" / "probe.safetensors",
    ]
    reports = [symtool.align(_live(), f, null_samples=0, pah=False) for f in forms]
    base = reports[0].checkpoints[0]["layers"]
    for r in reports[1:]:
        assert differences(r.checkpoints[0]["layers"], base, tol=1e-10) == []
    assert reports[2]["provenance"]["probe"] == {"source": "<DataLoader>", "sha256": None,
                                                 "samples": None}


def test_live_model_is_left_exactly_as_it_was() -> None:
    model = _live()
    model.train()
    model[2].eval()  # a submodule in another mode than its parent stays so
    model[4].weight.requires_grad_(False)
    grads = []
    for p in model.parameters():
        p.grad = torch.randn_like(p)
        grads.append(p.grad)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(5)
    rng = torch.get_rng_state()
    symtool.align(model, load_file(FIXTURES / "mlp_wd" / "probe.safetensors"), **FAST)
    symtool.symmetry(model)
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in model.modules()] == [True] * 3 + [False] + [True] * 4
    assert [p.requires_grad for p in model.parameters()] == [True] * 4 + [False] + [True] * 3
    assert all(p.grad is g for p, g in zip(model.parameters(), grads, strict=True))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_callable_loss_is_recorded_by_name() -> None:
    probe = load_file(FIXTURES / "mlp_wd" / "probe.safetensors")

    def summed_ce(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(output, target, reduction="sum")

    a = symtool.align(_live(), probe, loss=summed_ce, null_samples=0, pah=False)
    b = symtool.align(_live(), probe, loss="cross_entropy", null_samples=0, pah=False)
    assert a["provenance"]["settings"]["loss"] == "<test_a_callable_loss_is_recorded_by_name."\
        "<locals>.summed_ce>"
    assert differences(a.checkpoints[0]["layers"], b.checkpoints[0]["layers"], tol=1e-10) == []


def test_unknown_setting_lists_the_valid_ones() -> None:
    with pytest.raises(SettingsError) as err:
        symtool.align(_live(), (torch.zeros(2, 16), torch.zeros(2, dtype=torch.long)),
                      null_sample=3)
    assert isinstance(err.value, TypeError)
    assert "'null_sample'" in str(err.value) and "null_samples" in str(err.value)
    with pytest.raises(TypeError, match="tau_dead"):
        symtool.symmetry(_live(), tau_deed=0.1)


def test_settings_come_from_the_dataclass_defaults() -> None:
    """No default is restated: an API run without settings records AlignSettings()'s."""
    from dataclasses import fields

    from symtool.align.run import AlignSettings

    probe = load_file(FIXTURES / "mlp_wd" / "probe.safetensors")
    r = symtool.align(_live(), probe, null_samples=0, bootstrap=0)
    recorded = r["provenance"]["settings"]
    for f in fields(AlignSettings):
        if f.name in ("null_samples", "bootstrap", "source", "base_dir", "model_args", "layers",
                      "strip_prefix", "tokenizer", "seq_len", "loss"):
            continue  # tokenizer, seq_len: text probes only; loss: settled by the model
        assert recorded[f.name] == f.default, f.name
    assert AlignSettings.loss is None and recorded["loss"] == "cross_entropy"  # not an HF model


def test_state_dict_saved_to_a_file_and_in_memory_agree(tmp_path: Path) -> None:
    sd = _live().state_dict()
    save_file(sd, str(tmp_path / "step_000007.safetensors"))
    probe = load_file(FIXTURES / "mlp_wd" / "probe.safetensors")
    a = symtool.align(sd, probe, step=7, null_samples=0, pah=False)
    b = symtool.align(tmp_path, probe, null_samples=0, pah=False)
    assert differences(a.to_dict(), b.to_dict(), skip=("path", "sha256")) == []


def test_analysis_packages_stay_packages_and_are_callable() -> None:
    import symtool.align.run as run_module
    from symtool.align import AlignSettings

    assert symtool.align.run is run_module and symtool.align.AlignSettings is AlignSettings
    assert all(callable(getattr(symtool, n)) for n in ("align", "symmetry", "ode"))
    assert symtool.api.align.__doc__.startswith("CRH relations")


def test_ode_sequences_from_a_tensor_equal_the_probe_file(tmp_path: Path) -> None:
    ckpt = FIXTURES / "lstm" / "step_000400.safetensors"
    x = load_file(FIXTURES / "lstm" / "probe.safetensors")["x"]
    ours = symtool.ode(ckpt, data=x, lyapunov_k=2)  # batch_first from the fixture's toml
    theirs = cli_report(tmp_path, "ode", ckpt, "--lyapunov-k", "2")
    assert ours["provenance"]["probe"]["path"] == "<tensor>"
    assert ours["provenance"]["probe"]["shape"] == theirs["provenance"]["probe"]["shape"]
    assert differences(ours.to_dict(), theirs, skip=WHERE) == []
    with pytest.raises(TypeError, match="lyapunov_k"):
        symtool.ode(ckpt, lyapunov=2)
