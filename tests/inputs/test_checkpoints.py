"""Checkpoint discovery, step ordering, container unwrapping and safe loading."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from symtool.errors import CheckpointError, PickleRefused
from symtool.inputs import checkpoints as ck


def _sd(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"fc1.weight": torch.randn(4, 3, generator=g), "fc1.bias": torch.randn(4, generator=g)}


@pytest.mark.parametrize(
    ("name", "step"),
    [
        ("step_000100.safetensors", 100),
        ("step=800.ckpt", 800),
        ("epoch=3-step=800.ckpt", 800),
        ("checkpoint-1200", 1200),
        ("global_step4500", 4500),
        ("iter_5000.pth", 5000),
        ("model_42.pt", 42),
        ("final.pt", None),
        ("best.safetensors", None),
    ],
)
def test_parse_step(name: str, step: int | None) -> None:
    assert ck.parse_step(name) == step


def test_directory_is_ordered_by_step_then_natural_names(tmp_path: Path) -> None:
    for name in [
        "step_10.safetensors",
        "step_9.safetensors",
        "step_100.safetensors",
        "final.safetensors",
        "best.safetensors",
        "last-ema.safetensors",
    ]:
        save_file(_sd(), str(tmp_path / name))
    # not checkpoints: probe data, configs, optimizer states
    save_file({"x": torch.zeros(2)}, str(tmp_path / "probe.safetensors"))
    torch.save({"state": {}}, tmp_path / "optimizer.pt")
    (tmp_path / "symtool.toml").write_text("")
    (tmp_path / "notes.txt").write_text("x")
    names = [c.name for c in ck.discover([tmp_path])]
    assert names == [
        "step_9.safetensors",
        "step_10.safetensors",
        "step_100.safetensors",
        "best.safetensors",
        "final.safetensors",
        "last-ema.safetensors",
    ]


def test_huggingface_directories_and_sharded_index(tmp_path: Path) -> None:
    for step in (1200, 300):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        save_file(_sd(step), str(d / "model.safetensors"))
        torch.save({}, d / "optimizer.pt")
    sharded = tmp_path / "checkpoint-2000"
    sharded.mkdir()
    save_file({"fc1.weight": torch.ones(4, 3)}, str(sharded / "model-00001-of-00002.safetensors"))
    save_file({"fc1.bias": torch.ones(4)}, str(sharded / "model-00002-of-00002.safetensors"))
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps(
            {
                "weight_map": {
                    "fc1.weight": "model-00001-of-00002.safetensors",
                    "fc1.bias": "model-00002-of-00002.safetensors",
                }
            }
        )
    )
    found = ck.discover([tmp_path])
    assert [c.step for c in found] == [300, 1200, 2000]
    assert found[-1].format == "safetensors-sharded"
    sd = ck.load_state_dict(found[-1])
    assert set(sd) == {"fc1.weight", "fc1.bias"} and torch.equal(sd["fc1.bias"], torch.ones(4))


def test_globs_and_several_paths_deduplicate(tmp_path: Path) -> None:
    for s in (1, 2, 3):
        save_file(_sd(s), str(tmp_path / f"step_{s}.safetensors"))
    found = ck.discover([str(tmp_path / "step_*.safetensors"), tmp_path / "step_2.safetensors"])
    assert [c.step for c in found] == [1, 2, 3]


def test_select_steps_every_last(tmp_path: Path) -> None:
    for s in range(0, 1000, 100):
        save_file(_sd(), str(tmp_path / f"step_{s}.safetensors"))
    found = ck.discover([tmp_path])
    assert [c.step for c in ck.select(found, steps="0,300-500")] == [0, 300, 400, 500]
    assert [c.step for c in ck.select(found, every=4)] == [0, 400, 800, 900]
    assert [c.step for c in ck.select(found, last=2)] == [800, 900]


@pytest.mark.parametrize(
    ("payload", "container"),
    [
        (lambda sd: sd, None),
        (lambda sd: {"state_dict": sd, "epoch": 3}, "state_dict"),
        (lambda sd: {"model_state_dict": sd, "optimizer_state_dict": {}}, "model_state_dict"),
        (lambda sd: {"model": sd}, "model"),
        (lambda sd: {"module": {f"module.{k}": v for k, v in sd.items()}}, "module"),
        (lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()}, None),
        (
            lambda sd: {
                "state_dict": {f"module._orig_mod.{k}": v for k, v in sd.items()},
                "global_step": 800,
                "pytorch-lightning_version": "2.1.0",
                "optimizer_states": [{}],
                "lr_schedulers": [],
            },
            "state_dict",
        ),
    ],
)
def test_containers_are_unwrapped(tmp_path: Path, payload, container) -> None:
    sd = _sd()
    path = tmp_path / "epoch=1-step=800.ckpt"
    torch.save(payload(sd), path)
    loaded = ck.load(ck.discover([path])[0])
    assert loaded.container == container
    assert set(loaded.tensors) == set(sd)
    for k in sd:
        assert torch.equal(loaded.tensors[k], sd[k])


def test_lightning_global_step_is_read(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": _sd(), "global_step": 1234, "pytorch-lightning_version": "2"}, path)
    assert ck.load(ck.discover([path])[0]).meta_step == 1234


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # runs code when unpickled
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("legacy", [False, True])
def test_code_running_pickle_is_refused_and_runs_nothing(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    if legacy:
        with open(path, "wb") as fh:
            pickle.dump({"w": _Evil(marker)}, fh)
    else:
        torch.save({"w": _Evil(marker)}, path)
    with pytest.raises(PickleRefused, match="--trust-pickle") as info:
        ck.load(ck.discover([path])[0])
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_trust_pickle_unpickles_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"model": torch.nn.Linear(3, 2)}, path)
    with pytest.raises(PickleRefused):
        ck.load(ck.discover([path])[0])
    with pytest.warns(UserWarning, match="trust-pickle"):
        loaded = ck.load(ck.discover([path])[0], trust_pickle=True)
    assert set(loaded.tensors) == {"weight", "bias"}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"\x00\x01garbage" * 10), "cannot read"),
        (lambda p: p.write_bytes(b"\x80\x04garbage"), "cannot read"),
        (lambda p: p.write_bytes(b"random bytes here"), "cannot read"),
    ],
)
def test_broken_pickles_give_one_clear_error(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "step_1.pt"
    make(path)
    with pytest.raises(CheckpointError, match=message) as info:
        ck.load(ck.discover([path])[0])
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_files_give_one_clear_error(tmp_path: Path) -> None:
    good = tmp_path / "good.safetensors"
    save_file(_sd(), str(good))
    data = good.read_bytes()
    bad = tmp_path / "step_1.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a valid safetensors") as info:
        ck.load(ck.discover([bad])[0])
    assert str(bad) in str(info.value)
    pt = tmp_path / "step_2.pt"
    torch.save(_sd(), pt)
    raw = pt.read_bytes()
    pt.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="cannot read") as info:
        ck.load(ck.discover([pt])[0])
    assert str(pt) in str(info.value)


def test_lying_safetensors_header_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "step_1.safetensors"
    save_file({"w": torch.zeros(4, 4)}, str(path))
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header["w"]["data_offsets"] = [0, 10_000]
    header["w"]["shape"] = [50, 50]
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + bytes(raw[8 + n :]))
    with pytest.raises(CheckpointError, match=str(path).replace(".", r"\.")):
        ck.load(ck.discover([path])[0])


def test_missing_and_empty_inputs(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file"):
        ck.discover([tmp_path / "nope.safetensors"])
    with pytest.raises(CheckpointError, match="no checkpoints found"):
        ck.discover([tmp_path])
    with pytest.raises(CheckpointError, match="matches no checkpoint"):
        ck.discover([str(tmp_path / "*.pt")])


def test_tensor_infos_read_headers_only(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file(
        {
            "a.weight": torch.zeros(5, 3, dtype=torch.float16),
            "conv.weight": torch.zeros(8, 3, 3, 3),
        },
        str(path),
    )
    infos = {i.name: i for i in ck.tensor_infos(ck.discover([path])[0])}
    assert infos["a.weight"].shape == (5, 3) and infos["a.weight"].dtype == "float16"
    assert ck.tensor_kind("conv.weight", (8, 3, 3, 3)) == "conv"


@pytest.mark.parametrize(
    ("name", "shape", "kind"),
    [
        ("rnn.weight_hh_l0", (48, 16), "recurrent"),
        ("lstm.bias_ih_l1_reverse", (64,), "recurrent"),
        ("attn.in_proj_weight", (96, 32), "attention"),
        ("h.0.attn.c_attn.weight", (768, 2304), "attention"),
        ("layers.0.self_attn.q_proj.weight", (64, 64), "attention"),
        ("ln_f.weight", (64,), "norm"),
        ("bn1.running_mean", (8,), "norm"),
        ("wte.weight", (100, 64), "embedding"),
        ("fc.weight", (4, 8), "linear"),
        ("fc.bias", (4,), "bias"),
    ],
)
def test_tensor_kind(name: str, shape: tuple[int, ...], kind: str) -> None:
    assert ck.tensor_kind(name, shape) == kind
