"""Checkpoints as training frameworks save them, end to end: wrapper prefixes (Lightning's
``model.``, ``--strip-prefix``), a probe file beside the checkpoints, a single module's state
dict, and bfloat16/float16 weights (docs/checkpoints.md, docs/symmetry.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from symtool.cli.app import app

runner = CliRunner()

NET = (
    "import torch\n"
    "def mlp():\n"
    "    return torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.Tanh(),\n"
    "                               torch.nn.Linear(10, 3))\n"
)
FAST = ("--null-samples", "2", "--bootstrap", "0", "--activation", "tanh")


def _invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def _json(res) -> dict:
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.Tanh(), torch.nn.Linear(10, 3))
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _probe(folder: Path, name: str = "probe.safetensors") -> Path:
    g = torch.Generator().manual_seed(1)
    path = folder / name
    save_file(
        {"x": torch.randn(48, 6, generator=g), "y": torch.randint(0, 3, (48,), generator=g)},
        str(path),
    )
    return path


def _lightning(path: Path, sd: dict[str, torch.Tensor], prefix: str = "model.", **extra) -> None:
    """What ``Trainer.save_checkpoint`` writes for a LightningModule with ``self.model``."""
    torch.save(
        {
            "epoch": 0,
            "global_step": 10,
            "pytorch-lightning_version": "2.2.0",
            "state_dict": {**{prefix + k: v for k, v in sd.items()}, **extra},
            "optimizer_states": [],
            "lr_schedulers": [],
        },
        path,
    )


def _relations(entry: dict) -> dict[str, dict[str, float]]:
    return {
        la["name"]: {rid: r["alpha"] for rid, r in la["relations"].items()}
        for la in entry["layers"]
    }


# ----------------------------------------------------------------------------- 1. prefixes
@pytest.mark.parametrize("prefix", ["model.", "net.", "student."])
def test_align_with_a_model_strips_the_wrapper_prefix(tmp_path: Path, prefix: str) -> None:
    (tmp_path / "net.py").write_text(NET)
    sd = _state()
    _lightning(tmp_path / "epoch=0-step=10.ckpt", sd, prefix)
    (tmp_path / "plain").mkdir()
    save_file(sd, str(tmp_path / "plain" / "step_10.safetensors"))
    probe = _probe(tmp_path)
    args = ("--model", tmp_path / "net.py:mlp", "--data", probe, *FAST, "-f", "json")
    wrapped = _json(_invoke("align", tmp_path / "epoch=0-step=10.ckpt", *args))
    plain = _json(_invoke("align", tmp_path / "plain", *args))
    (e,) = wrapped["checkpoints"]
    assert e["status"] == "ok" and e["step"] == 10
    assert e["prefix_stripped"] == prefix
    assert [la["name"] for la in e["layers"]] == ["0", "2"]  # the model's names
    assert "prefix_stripped" not in plain["checkpoints"][0]  # only when one was removed
    assert "strip_prefix" not in plain["provenance"]["settings"]
    assert _relations(e) == _relations(plain["checkpoints"][0])


def test_align_strip_prefix_option_and_config_key(tmp_path: Path) -> None:
    """A distillation checkpoint: student. and teacher. keys; no single common prefix, so
    --strip-prefix (or [model] strip_prefix) chooses."""
    (tmp_path / "net.py").write_text(NET)
    teacher = {f"teacher.{k}": v for k, v in _state(seed=7).items()}
    _lightning(tmp_path / "step_10.ckpt", _state(), "student.", **teacher)
    probe = _probe(tmp_path, "val.safetensors")
    model = ("--model", tmp_path / "net.py:mlp")
    args = ("--data", probe, *FAST, "-f", "json")
    res = _invoke("align", tmp_path / "step_10.ckpt", *model, *args)
    assert res.exit_code == 2
    assert "carry a 'student.' prefix" in res.stderr and "--strip-prefix student." in res.stderr
    rep = _json(_invoke("align", tmp_path / "step_10.ckpt", *model, "--strip-prefix", "student",
                        *args))
    (e,) = rep["checkpoints"]
    assert e["prefix_stripped"] == "student." and [la["name"] for la in e["layers"]] == ["0", "2"]
    assert rep["provenance"]["settings"]["strip_prefix"] == "student"
    # the same without a model: the auto-MLP is built from the student's keys only
    auto = _json(_invoke("align", tmp_path / "step_10.ckpt", "--strip-prefix", "student.", *args))
    assert [la["name"] for la in auto["checkpoints"][0]["layers"]] == ["0", "2"]
    assert _relations(auto["checkpoints"][0]) == _relations(e)
    (tmp_path / "symtool.toml").write_text('[model]\nstrip_prefix = "student."\n')
    conf = _json(_invoke("align", tmp_path / "step_10.ckpt", *model, *args))
    assert conf["checkpoints"][0]["prefix_stripped"] == "student."
    res = _invoke("align", tmp_path / "step_10.ckpt", "--strip-prefix", "pupil.", *args)
    assert res.exit_code == 2 and "no key starts with 'pupil.'" in res.stderr


def test_without_a_model_the_checkpoint_names_are_kept(tmp_path: Path) -> None:
    _lightning(tmp_path / "step_10.ckpt", _state())
    probe = _probe(tmp_path, "val.safetensors")
    rep = _json(_invoke("align", tmp_path / "step_10.ckpt", "--data", probe, *FAST, "-f", "json"))
    (e,) = rep["checkpoints"]
    assert [la["name"] for la in e["layers"]] == ["model.0", "model.2"]
    assert "prefix_stripped" not in e
    sym = _json(_invoke("symmetry", tmp_path / "step_10.ckpt", "-f", "json"))
    (s,) = sym["checkpoints"]
    assert [la["name"] for la in s["layers"]] == ["model.0", "model.2"]
    assert "prefix_stripped" not in s and "strip_prefix" not in sym["provenance"]["settings"]
    assert [(u["incoming"], u["outgoing"]) for u in s["units"]] == [("model.0", "model.2")]


def test_ddp_and_lightning_prefixes_together(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text(NET)
    _lightning(tmp_path / "step_10.ckpt", _state(), "module.model.")
    probe = _probe(tmp_path, "val.safetensors")
    rep = _json(_invoke("align", tmp_path / "step_10.ckpt", "--model", tmp_path / "net.py:mlp",
                        "--data", probe, *FAST, "-f", "json"))
    assert rep["checkpoints"][0]["prefix_stripped"] == "module.model."


def test_symmetry_with_a_model_strips_the_prefix_and_pairs_from_the_graph(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text(NET)
    sd = _state()
    _lightning(tmp_path / "step_10.ckpt", sd)
    rep = _json(_invoke("symmetry", tmp_path / "step_10.ckpt", "--model", tmp_path / "net.py:mlp",
                        "-f", "json"))
    (e,) = rep["checkpoints"]
    assert e["status"] == "ok" and e["prefix_stripped"] == "model."
    assert [la["name"] for la in e["layers"]] == ["0", "2"]
    assert [(u["incoming"], u["outgoing"], u["activation"]) for u in e["units"]] == [
        ("0", "2", "tanh")
    ]
    teacher = {f"teacher.{k}": v for k, v in sd.items()}
    _lightning(tmp_path / "step_20.ckpt", sd, "student.", **teacher)
    only = _json(_invoke("symmetry", tmp_path / "step_20.ckpt", "--strip-prefix", "student.",
                         "-f", "json"))
    assert [la["name"] for la in only["checkpoints"][0]["layers"]] == ["0", "2"]
    assert only["provenance"]["settings"]["strip_prefix"] == "student."


# ----------------------------------------------------------------------------- 2. probe file
@pytest.mark.parametrize("hf", [False, True])
def test_align_uses_the_probe_file_beside_the_checkpoints(tmp_path: Path, hf: bool) -> None:
    run = tmp_path / "resnet_wd"
    run.mkdir()
    for step in (0, 10):
        if hf:
            (run / f"checkpoint-{step}").mkdir()
            save_file(_state(step), str(run / f"checkpoint-{step}" / "model.safetensors"))
        else:
            save_file(_state(step), str(run / f"step_{step}.safetensors"))
    probe = _probe(run)
    rep = _json(_invoke("align", run, *FAST, "-f", "json"))
    assert len(rep["checkpoints"]) == 2  # the probe file is not a checkpoint
    assert all(e["status"] == "ok" for e in rep["checkpoints"])
    described = rep["provenance"]["probe"]
    assert described["path"] == str(probe) and described["found"] == "beside the checkpoints"
    assert described["samples"] == 48
    res = _invoke("align", run, *FAST, "-f", "json")
    assert f"symtool: using probe data {probe} (found beside the checkpoints)" in res.stderr
    # named explicitly: no note, no line
    named = _invoke("align", run, "--data", probe, *FAST, "-f", "json")
    assert "found" not in json.loads(named.stdout)["provenance"]["probe"]
    assert "using probe data" not in named.stderr
    assert _relations(json.loads(named.stdout)["checkpoints"][0]) == _relations(
        rep["checkpoints"][0]
    )


def test_the_config_data_wins_over_a_probe_beside(tmp_path: Path) -> None:
    save_file(_state(), str(tmp_path / "step_0.safetensors"))
    _probe(tmp_path)
    other = _probe(tmp_path, "val.safetensors")
    (tmp_path / "symtool.toml").write_text(f'[data]\npath = "{other.name}"\n')
    res = _invoke("align", tmp_path, *FAST, "-f", "json")
    rep = _json(res)
    assert rep["provenance"]["probe"]["path"] == str(other)
    assert "found" not in rep["provenance"]["probe"] and "using probe data" not in res.stderr


def test_several_probe_files_beside_are_refused(tmp_path: Path) -> None:
    save_file(_state(), str(tmp_path / "step_0.safetensors"))
    _probe(tmp_path)
    _probe(tmp_path, "probe.pt")
    res = _invoke("align", tmp_path, *FAST)
    assert res.exit_code == 2 and "several probe files" in res.stderr and "--data" in res.stderr


# ----------------------------------------------------------------------------- 3. one module
def test_a_single_modules_state_dict_is_one_layer(tmp_path: Path) -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 3)
    torch.save(lin.state_dict(), tmp_path / "lin.pt")  # keys: weight, bias
    probe = _probe(tmp_path, "val.safetensors")
    rep = _json(_invoke("align", tmp_path / "lin.pt", "--data", probe, *FAST, "-f", "json"))
    (e,) = rep["checkpoints"]
    assert e["status"] == "ok" and [la["name"] for la in e["layers"]] == ["layer"]
    assert e["layers"][0]["d_in"] == 6 and e["layers"][0]["d_out"] == 3
    sym = _json(_invoke("symmetry", tmp_path / "lin.pt", "-f", "json"))
    (s,) = sym["checkpoints"]
    assert [la["name"] for la in s["layers"]] == ["layer"] and s["skipped"] == []
    assert sym["checkpoints"][0]["softmax"]["layer"] == "layer"
    conv = torch.nn.Conv2d(3, 8, 3)
    save_file(conv.state_dict(), str(tmp_path / "conv.safetensors"))
    c = _json(_invoke("symmetry", tmp_path / "conv.safetensors", "-f", "json"))["checkpoints"][0]
    assert [(la["name"], la["kind"], la["shape"]) for la in c["layers"]] == [
        ("layer", "conv", [8, 27])
    ]


# ----------------------------------------------------------------------------- 4. bf16
def test_align_runs_bf16_checkpoints_in_float32(tmp_path: Path) -> None:
    sd = {k: v.to(torch.bfloat16) for k, v in _state().items()}
    (tmp_path / "bf16").mkdir()
    (tmp_path / "f32").mkdir()
    save_file(sd, str(tmp_path / "bf16" / "step_0.safetensors"))
    save_file({k: v.float() for k, v in sd.items()}, str(tmp_path / "f32" / "step_0.safetensors"))
    probe = _probe(tmp_path, "val.safetensors")
    args = ("--data", probe, *FAST, "-f", "json")
    half = _json(_invoke("align", tmp_path / "bf16", *args))["checkpoints"][0]
    full = _json(_invoke("align", tmp_path / "f32", *args))["checkpoints"][0]
    assert half["status"] == "ok"
    # the same float32 computation on the same (rounded) weights: the same numbers
    assert _relations(half) == _relations(full)
    (tmp_path / "net.py").write_text(NET)
    model = _json(_invoke("align", tmp_path / "bf16", "--model", tmp_path / "net.py:mlp", *args))
    assert _relations(model["checkpoints"][0]) == _relations(full)


def test_symmetry_ranks_of_bf16_and_float32_checkpoints_agree(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    low = torch.randn(384, 8, generator=g) @ torch.randn(8, 96, generator=g)
    low[:64] = 0.0
    w = {"fc.weight": torch.randn(384, 96, generator=g) * 0.02, "low.weight": low}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    save_file(w, str(tmp_path / "a" / "f32.safetensors"))
    save_file({k: v.bfloat16() for k, v in w.items()}, str(tmp_path / "b" / "bf16.safetensors"))

    def ranks(folder: str) -> dict:
        e = _json(_invoke("symmetry", tmp_path / folder, "--classifier", "", "-f", "json"))
        return {la["name"]: {r["tau"]: r["rank"] for r in la["ranks"]}
                for la in e["checkpoints"][0]["layers"]}

    expected = {"fc": dict.fromkeys((0.1, 0.03, 0.01, 0.001), 96),
                "low": dict.fromkeys((0.1, 0.03, 0.01, 0.001), 8)}
    assert ranks("a") == ranks("b") == expected
