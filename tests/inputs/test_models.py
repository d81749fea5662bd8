"""models.py: importing, auto-MLP rebuild, strict loading, layer selection."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from symtool.activations import FUNCTIONS as ACTIVATIONS
from symtool.errors import ModelError
from symtool.inputs.imports import import_object
from symtool.inputs.models import (
    SINGLE_MODULE,
    build_model,
    fit_prefix,
    join_prefixes,
    load_state,
    name_single_module,
    normalize_prefix,
    prepare_state,
    select_layers,
)

DT = torch.float64


def _chain(keys: list[str], widths: list[int], bias: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sd = {}
    for key, (d_in, d_out) in zip(keys, itertools.pairwise(widths), strict=True):
        sd[f"{key}.weight"] = torch.randn(d_out, d_in, generator=g, dtype=DT)
        if bias:
            sd[f"{key}.bias"] = torch.randn(d_out, generator=g, dtype=DT)
    return sd


# --------------------------------------------------------------------------- importing
def test_import_module_and_file(tmp_path: Path) -> None:
    assert import_object("torch.nn:Linear") is nn.Linear
    assert import_object("torch.nn.functional:relu") is F.relu
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mine.py").write_text(
        "import torch\nclass Holder:\n    def make(n):\n        return torch.nn.Linear(n, 2)\n"
    )
    make = import_object("sub/mine.py:Holder.make", tmp_path)
    assert isinstance(make(3), nn.Linear)
    assert import_object("sub/mine.py:Holder", tmp_path) is import_object(
        str(tmp_path / "sub" / "mine.py") + ":Holder"
    )


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("no_colon", "expected 'module:attribute'"),
        ("not_a_real_module_xyz:f", "cannot import module"),
        ("torch.nn:NoSuchThing", "no attribute 'NoSuchThing'"),
        ("missing.py:f", "no such Python file"),
        ("broken.py:f", "importing failed: ZeroDivisionError"),
    ],
)
def test_import_errors(tmp_path: Path, spec: str, match: str) -> None:
    (tmp_path / "broken.py").write_text("x = 1 / 0\n")
    with pytest.raises(ModelError, match=match) as info:
        import_object(spec, tmp_path)
    assert "\n" not in str(info.value)
    if spec.endswith(".py:f"):
        assert str(tmp_path) in str(info.value)


# --------------------------------------------------------------------------- auto-MLP
@pytest.mark.parametrize(
    "keys",
    [
        ["net.0", "net.2", "net.4"],
        ["fc1", "fc2", "fc3"],
        ["layers.0", "layers.1", "head"],
        ["encoder.block.fc", "encoder.out", "cls"],
    ],
    ids=["sequential", "fc", "mixed", "nested"],
)
def test_auto_mlp_round_trips_keys_and_computes_the_chain(keys: list[str]) -> None:
    sd = _chain(keys, [5, 7, 6, 3])
    model = build_model(None, {}, sd, activation="tanh")
    assert list(model.state_dict()) == list(sd)
    load_state(model, sd, source="ck.safetensors")
    x = torch.randn(4, 5, dtype=DT)
    want = x
    for i, key in enumerate(keys):
        want = want @ sd[f"{key}.weight"].T + sd[f"{key}.bias"]
        if i < len(keys) - 1:
            want = torch.tanh(want)
    assert torch.allclose(model(x), want, atol=1e-14)
    layers, skipped = select_layers(model)
    assert [ref.name for ref in layers] == keys and not skipped
    assert [(ref.d_in, ref.d_out) for ref in layers] == [(5, 7), (7, 6), (6, 3)]


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_auto_mlp_activations(act: str) -> None:
    sd = _chain(["a", "b"], [3, 4, 2], bias=False)
    model = build_model(None, None, sd, activation=act)
    load_state(model, sd, source="x")
    x = torch.randn(5, 3, dtype=DT)
    assert torch.allclose(model(x), ACTIVATIONS[act](x @ sd["a.weight"].T) @ sd["b.weight"].T)


def test_auto_mlp_flattens_images() -> None:
    sd = _chain(["fc1", "fc2"], [12, 4, 2])
    model = build_model(None, {}, sd)
    load_state(model, sd, source="x")
    assert model(torch.randn(3, 1, 3, 4, dtype=DT)).shape == (3, 2)


@pytest.mark.parametrize(
    ("sd", "why"),
    [
        ({"fc1.weight": torch.zeros(4, 3), "fc2.weight": torch.zeros(2, 5)}, "takes 5 inputs"),
        ({"conv.weight": torch.zeros(4, 3, 3, 3)}, "not 2-D"),
        ({"fc.weight": torch.zeros(4, 3), "bn.running_mean": torch.zeros(4)}, "neither"),
        ({"weight": torch.zeros(4, 3)}, "no module prefix"),
        ({"fc.bias": torch.zeros(4)}, "has a bias but no weight"),
        ({"fc.weight": torch.zeros(4, 3), "fc.bias": torch.zeros(3)}, "expected (4,)"),
        ({}, "no tensors"),
    ],
)
def test_auto_mlp_refuses_non_chains(sd: dict, why: str) -> None:
    with pytest.raises(ModelError, match="--model") as info:
        build_model(None, {}, sd)
    assert why in str(info.value)


def test_factory(tmp_path: Path) -> None:
    (tmp_path / "zoo.py").write_text(
        "import torch\n"
        "def mlp(width=3):\n    return torch.nn.Sequential(torch.nn.Linear(width, 2))\n"
        "def bad():\n    return 42\n"
        "def boom():\n    raise KeyError('nope')\n"
    )
    model = build_model("zoo.py:mlp", {"width": 5}, {}, base_dir=tmp_path)
    assert model[0].in_features == 5
    with pytest.raises(ModelError, match="returned int"):
        build_model("zoo.py:bad", {}, {}, base_dir=tmp_path)
    with pytest.raises(ModelError, match="failed: KeyError"):
        build_model("zoo.py:boom", {}, {}, base_dir=tmp_path)
    with pytest.raises(ModelError, match="unknown activation"):
        build_model(None, {}, _chain(["a"], [2, 2]), activation="swish2")


# --------------------------------------------------------------------------- loading
def test_load_state_lists_every_problem_in_one_line() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2), nn.Linear(2, 2))
    sd = dict(model.state_dict())
    del sd["1.bias"], sd["2.weight"]
    sd["extra.a"] = torch.zeros(1)
    sd["extra.b"] = torch.zeros(1)
    sd["0.weight"] = torch.zeros(4, 5)
    with pytest.raises(ModelError) as info:
        load_state(model, sd, source="ckpt/step_10.pt")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("ckpt/step_10.pt: ")
    for part in (
        "missing 2 keys (1.bias, 2.weight)",
        "unexpected 2 keys (extra.a, extra.b)",
        "shape mismatch 1 key (0.weight (4, 5) vs model (4, 3))",
    ):
        assert part in msg


def test_load_state_truncates_long_lists_and_hints_prefix() -> None:
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(8)])
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    with pytest.raises(ModelError) as info:
        load_state(model, sd, source="ddp.pt")
    msg = str(info.value)
    assert "missing 16 keys" in msg and "and 6 more" in msg
    assert "'module.' prefix" in msg


def test_load_state_loads_values() -> None:
    model = nn.Linear(3, 2).to(DT)
    sd = {"weight": torch.ones(2, 3, dtype=DT), "bias": torch.zeros(2, dtype=DT)}
    load_state(model, sd, source="x")
    assert torch.equal(model.weight, sd["weight"])


# --------------------------------------------------------------------------- prefixes
class _Block(nn.Module):
    """A small ResNet-ish module with buffers (BatchNorm) and nesting."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.bn1 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)


@pytest.mark.parametrize("prefix", ["model.", "net.", "student.", "model.backbone."])
def test_fit_prefix_strips_a_wrapper_prefix_only_when_the_keys_then_fit(prefix: str) -> None:
    model = _Block()
    wrapped = {prefix + k: v for k, v in model.state_dict().items()}  # Lightning: model.
    fitted, stripped = fit_prefix(model, wrapped)
    assert stripped == prefix
    assert list(fitted) == list(model.state_dict())  # order kept, buffers included
    assert all(fitted[k] is wrapped[prefix + k] for k in fitted)
    load_state(model, fitted, source="lightning.ckpt")  # strict


def test_fit_prefix_leaves_keys_that_fit_or_that_no_prefix_explains() -> None:
    model = _Block()
    sd = dict(model.state_dict())
    assert fit_prefix(model, sd) == (sd, None)  # fits already
    extra = {**{f"model.{k}": v for k, v in sd.items()}, "loss.weight": torch.ones(2)}
    assert fit_prefix(model, extra) == (extra, None)  # not one common prefix
    partial = {f"model.{k}": v for k, v in sd.items() if k != "fc.bias"}
    assert fit_prefix(model, partial)[1] is None  # stripped keys would not fit exactly
    assert fit_prefix(model, {})[1] is None


def test_load_state_hints_the_prefix_and_the_option() -> None:
    model = _Block()
    sd = {f"model.{k}": v for k, v in model.state_dict().items()}
    sd["loss.weight"] = torch.ones(2)  # a Lightning module's other parameters
    assert fit_prefix(model, sd)[1] is None
    with pytest.raises(ModelError) as info:
        load_state(model, sd, source="x.ckpt")
    msg = str(info.value)
    assert "carry a 'model.' prefix" in msg and "--strip-prefix model." in msg
    kept, prefix = prepare_state(sd, strip_prefix="model")
    assert prefix == "model." and set(kept) == set(model.state_dict())
    load_state(model, kept, source="x.ckpt")


def test_prepare_state_explicit_prefix_keeps_only_the_keys_under_it() -> None:
    sd = {"student.fc.weight": torch.ones(2, 3), "teacher.fc.weight": torch.zeros(2, 3)}
    kept, prefix = prepare_state(sd, strip_prefix="student.")
    assert prefix == "student." and list(kept) == ["fc.weight"]
    assert torch.equal(kept["fc.weight"], torch.ones(2, 3))
    with pytest.raises(ModelError, match=r"no key starts with 'stu\.'") as info:
        prepare_state(sd, strip_prefix="stu")
    assert "student.fc.weight" in str(info.value)
    with pytest.raises(ModelError, match="module path"):
        normalize_prefix(" . ")
    assert prepare_state(sd) == (sd, None)


def test_single_module_state_dict_is_one_layer_named_layer() -> None:
    lin = nn.Linear(8, 4)
    sd = dict(lin.state_dict())  # torch.save(nn.Linear(8, 4).state_dict(), "lin.pt")
    named = name_single_module(sd)
    assert SINGLE_MODULE == "layer" and list(named) == ["layer.weight", "layer.bias"]
    assert name_single_module({"weight": sd["weight"]}) == {"layer.weight": sd["weight"]}
    for other in ({"bias": sd["bias"]}, {"weight": sd["weight"], "scale": sd["bias"]},
                  {"fc.weight": sd["weight"]}):
        assert name_single_module(other) == other
    kept, prefix = prepare_state(sd)
    model = build_model(None, None, kept)
    load_state(model, kept, source="lin.pt")
    layers, skipped = select_layers(model)
    assert [ref.name for ref in layers] == ["layer"] and not skipped
    x = torch.randn(5, 8)
    assert torch.allclose(model(x), lin(x)) and prefix is None
    # a factory whose own keys are bare keeps them
    assert prepare_state(sd, name_single=False) == (sd, None)


def test_join_prefixes() -> None:
    assert join_prefixes("module.", "model.") == "module.model."
    assert join_prefixes(None, "net.") == "net."
    assert join_prefixes(None, None) is None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_auto_mlp_runs_half_precision_weights_in_float32(dtype: torch.dtype) -> None:
    sd32 = {k: v.float() for k, v in _chain(["a", "b"], [6, 5, 3]).items()}
    half = {k: v.to(dtype) for k, v in sd32.items()}
    model = build_model(None, None, half)
    load_state(model, half, source="x")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(p, half[k].float()) for k, p in model.state_dict().items())
    ref = build_model(None, None, sd32)
    load_state(ref, {k: v.float() for k, v in half.items()}, source="x")
    x = torch.randn(4, 6)
    assert torch.equal(model(x), ref(x))
    assert build_model(None, None, _chain(["a"], [2, 2])).a.weight.dtype == torch.float64


# --------------------------------------------------------------------------- layers
class _Zoo(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.norm = nn.LayerNorm(8)
        self.attn = nn.MultiheadAttention(8, 2)
        self.fc = nn.Linear(8, 8)
        self.conv = nn.Conv2d(2, 4, 3)
        self.dw = nn.Conv2d(4, 4, 3, groups=4)
        self.up = nn.ConvTranspose2d(4, 2, 2)
        self.c1 = nn.Conv1d(2, 3, 2)
        self.c3 = nn.Conv3d(2, 3, 2)
        self.bn = nn.BatchNorm2d(4)
        self.rnn = nn.GRU(3, 4)
        self.pos = nn.Parameter(torch.zeros(5, 8))
        self.plain_norm = nn.LayerNorm(8, elementwise_affine=False)


def test_select_layers_records_every_skip() -> None:
    layers, skipped = select_layers(_Zoo())
    assert [(r.name, r.kind, r.d_in, r.d_out) for r in layers] == [
        ("fc", "linear", 8, 8),
        ("conv", "conv2d", 18, 4),
        ("c1", "conv1d", 4, 3),
        ("c3", "conv3d", 16, 3),
    ]
    reasons = {s.name: s.reason for s in skipped}
    assert set(reasons) == {
        "(root)",
        "emb",
        "norm",
        "attn",
        "attn.out_proj",
        "dw",
        "up",
        "bn",
        "rnn",
    }
    assert "pos" in reasons["(root)"]
    assert "in_proj_weight" in reasons["attn"]
    assert "functionally" in reasons["attn.out_proj"]
    assert "groups=4" in reasons["dw"]
    assert "transposed" in reasons["up"]
    assert "normalisation" in reasons["norm"] and "normalisation" in reasons["bn"]
    assert "lookup" in reasons["emb"] and "recurrent" in reasons["rnn"]
    conv = next(r for r in layers if r.name == "conv")
    assert conv.weight_matrix().shape == (4, 18)


def test_select_layers_patterns() -> None:
    layers, skipped = select_layers(_Zoo(), ["c*", "dw"])
    assert [r.name for r in layers] == ["conv", "c1", "c3"]
    assert [s.name for s in skipped] == ["dw"]
    with pytest.raises(ModelError, match=r"'nope\.\*' match no module"):
        select_layers(_Zoo(), ["fc", "nope.*"])
