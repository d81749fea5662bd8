"""capture.py against a brute-force reference (docs/theory.md §1-2).

The reference stores every activation, gets per-sample output gradients from
``vmap(grad(...))`` of each sample's own loss w.r.t. an additive zero perturbation of the
layer output, and applies the dense float64 formulas. Models run in float64.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vmap

from symtool.align.capture import capture
from symtool.align.rows import im2col as _im2col
from symtool.errors import ProbeError
from symtool.inputs.models import select_layers
from symtool.inputs.probes import Batch, cross_entropy_sum, mse_sum
from tests.reference import rel_err, second_moment

Tensor = torch.Tensor
DT = torch.float64
MATS = ("H_a", "G_a", "H_b", "G_b", "C_a", "C_b")


# --------------------------------------------------------------------------- models
def _mlp() -> tuple[nn.Module, Tensor, Tensor, Tensor | None]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 8),
        nn.Tanh(),
        nn.Linear(8, 8, bias=False),
        nn.ReLU(inplace=True),
        nn.Linear(8, 3),
    ).to(DT)
    x = torch.randn(24, 6, dtype=DT)
    return model, x, torch.randint(0, 3, (24,)), None


def _cnn() -> tuple[nn.Module, Tensor, Tensor, Tensor | None]:
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(4, 5, (2, 3), padding=(1, 0), dilation=(1, 2), bias=False),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(30, 4),
    ).to(DT)
    x = torch.randn(10, 2, 9, 9, dtype=DT)
    return model, x, torch.randint(0, 4, (10,)), None


class _Tokens(nn.Module):
    """Embedding → Linear on (B, T, d) → tanh → causal running mean → Linear to vocab."""

    def __init__(self, vocab: int = 11, d: int = 6, h: int = 8) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.up = nn.Linear(d, h)
        self.head = nn.Linear(h, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        z = torch.tanh(self.up(self.emb(tokens)))
        steps = torch.arange(1, z.shape[-2] + 1, dtype=z.dtype, device=z.device)
        return self.head(z.cumsum(-2) / steps[:, None])


def _tokens() -> tuple[nn.Module, Tensor, Tensor, Tensor | None]:
    torch.manual_seed(2)
    model = _Tokens().to(DT)
    x = torch.randint(0, 11, (9, 5))
    y = torch.randint(0, 11, (9, 5))
    y[y < 2] = -100  # ignored tokens
    mask = torch.rand(9, 5) > 0.25
    return model, x, y, mask


CASES = {"mlp": _mlp, "cnn": _cnn, "tokens": _tokens}


# --------------------------------------------------------------------------- reference
def _reference(model: nn.Module, x: Tensor, y: Tensor, mask: Tensor | None, loss_fn, recipe):
    """Per-layer matrices from stored activations and vmap-ed per-sample gradients."""
    model.eval()
    out: dict[str, dict[str, Tensor]] = {}
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        seen = {}
        h = module.register_forward_hook(
            lambda m, a, o, seen=seen: seen.update(
                inp=a[0].detach().clone(), out=o.detach().clone()
            )
        )
        with torch.no_grad():
            model(x)
        h.remove()
        delta_box = {}
        h = module.register_forward_hook(lambda m, a, o, box=delta_box: o + box["d"])

        def sample_loss(delta, xi, yi, delta_box=delta_box):
            delta_box["d"] = delta[None]
            return loss_fn(model(xi[None]), yi[None])

        g_out = vmap(grad(sample_loss))(torch.zeros_like(seen["out"]), x, y)
        h.remove()
        W = module.weight.detach().reshape(module.weight.shape[0], -1)
        b = module.bias.detach() if module.bias is not None else torch.zeros(W.shape[0], dtype=DT)
        if isinstance(module, nn.Conv2d):
            unf = F.unfold(
                seen["inp"], module.kernel_size, module.dilation, module.padding, module.stride
            )
            h_a = unf.transpose(1, 2).reshape(-1, W.shape[1])
            h_b = seen["out"].flatten(2).transpose(1, 2).reshape(-1, W.shape[0]) - b
            g_b = g_out.flatten(2).transpose(1, 2).reshape(-1, W.shape[0])
        else:
            h_a = seen["inp"].reshape(-1, W.shape[1])
            h_b = seen["out"].reshape(-1, W.shape[0]) - b
            g_b = g_out.reshape(-1, W.shape[0])
        if mask is not None:
            keep = mask.reshape(-1)
            h_a, h_b, g_b = h_a[keep], h_b[keep], g_b[keep]
        g_a = g_b @ W
        n = h_a.shape[0]
        mats = {"W": W, "C_b": g_b.T @ h_b / n, "C_a": h_a.T @ g_a / n, "n": n}
        for key, rows in (("H_a", h_a), ("G_a", g_a), ("H_b", h_b), ("G_b", g_b)):
            mats[key], mats["skip_" + key] = second_moment(rows, recipe)
        out[name] = mats
    return out


def _batches(x, y, mask, size):
    for i in range(0, x.shape[0], size):
        yield Batch(x[i : i + size], y[i : i + size], None if mask is None else mask[i : i + size])


def _run(model, x, y, mask, size, loss_fn=cross_entropy_sum, **kw):
    layers, _ = select_layers(model)
    return capture(model, layers, _batches(x, y, mask, size), loss_fn, **kw)


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("recipe", ["paper", "raw"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_brute_force(case: str, recipe: str) -> None:
    model, x, y, mask = CASES[case]()
    ref = _reference(model, x, y, mask, cross_entropy_sum, recipe)
    res = _run(model, x, y, mask, size=4, recipe=recipe)
    assert not res.failed
    assert set(res.layers) == set(ref)
    assert res.n_samples == x.shape[0]
    for name, mats in ref.items():
        got = res.layers[name]
        assert got.n == mats["n"]
        assert torch.equal(got.W, mats["W"])
        for key in MATS:
            assert rel_err(getattr(got, key), mats[key]) < 1e-6, (name, key)
        for key in ("H_a", "G_a", "H_b", "G_b"):
            assert got.skipped_rows[key[0].lower() + key[1:]] == mats["skip_" + key]


@pytest.mark.parametrize("case", sorted(CASES))
def test_raw_identities_exact(case: str) -> None:
    model, x, y, mask = CASES[case]()
    for recipe in ("raw", "paper"):
        res = _run(model, x, y, mask, size=5, recipe=recipe, raw_too=True)
        for got in res.layers.values():
            raw, W = got.raw, got.W
            assert raw is not None
            assert rel_err(W @ raw["H_a"] @ W.T, raw["H_b"]) < 1e-10
            assert rel_err(W.T @ raw["G_b"] @ W, raw["G_a"]) < 1e-10
            if recipe == "raw":
                assert raw["H_a"] is got.H_a


@pytest.mark.parametrize("case", sorted(CASES))
def test_batch_size_and_merge_do_not_change_result(case: str) -> None:
    model, x, y, mask = CASES[case]()
    full = _run(model, x, y, mask, size=x.shape[0], raw_too=True)
    small = _run(model, x, y, mask, size=2, raw_too=True)
    half = x.shape[0] // 2
    a = _run(model, x[:half], y[:half], None if mask is None else mask[:half], size=3, raw_too=True)
    b = _run(model, x[half:], y[half:], None if mask is None else mask[half:], size=3, raw_too=True)
    merged = a.merge(b)
    assert merged.n_samples == full.n_samples and merged.n_batches == a.n_batches + b.n_batches
    for other in (small, merged):
        for name, got in other.layers.items():
            want = full.layers[name]
            assert got.n == want.n and got.skipped_rows == want.skipped_rows
            for key in MATS:
                assert rel_err(getattr(got, key), getattr(want, key)) < 1e-12, (name, key)


def test_model_state_restored_and_hooks_removed() -> None:
    model, x, y, _ = _mlp()
    model.train()
    model[0].weight.requires_grad_(False)
    _run(model, x, y, None, size=8)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True, True]
    assert all(p.grad is None for p in model.parameters())
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_hooks_removed_when_forward_fails() -> None:
    model, _, y, _ = _mlp()
    layers, _ = select_layers(model)

    with pytest.raises(ProbeError, match="forward failed"):
        capture(model, layers, [Batch(torch.randn(4, 5, dtype=DT), y[:4])], cross_entropy_sum)
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    assert all(p.requires_grad for p in model.parameters())


def test_zero_norm_rows_skipped_and_counted() -> None:
    model, x, y, _ = _mlp()
    x[:5] = 0.0  # five all-zero input rows
    res = _run(model, x, y, None, size=7)
    ref = _reference(model, x, y, None, cross_entropy_sum, "paper")
    first = res.layers["0"]
    assert first.skipped_rows["h_a"] == 5 == ref["0"]["skip_H_a"]
    assert rel_err(first.H_a, ref["0"]["H_a"]) < 1e-10


def test_non_finite_layer_fails_alone() -> None:
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.main = nn.Linear(4, 3)
            self.aux = nn.Linear(4, 2)

        def forward(self, x: Tensor) -> Tensor:
            self.aux(x)  # computed, unused by the loss
            return self.main(x)

    torch.manual_seed(3)
    model = TwoHeads().to(DT)
    with torch.no_grad():
        model.aux.weight[0, 0] = float("nan")
    x, y = torch.randn(8, 4, dtype=DT), torch.randint(0, 3, (8,))
    res = _run(model, x, y, None, size=4)
    assert "non-finite" in res.failed["aux"] and "h_b" in res.failed["aux"]
    assert set(res.layers) == {"main"}
    assert torch.isfinite(res.layers["main"].H_a).all()


def test_unused_output_gets_zero_gradient() -> None:
    class Side(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.main = nn.Linear(4, 3)
            self.aux = nn.Linear(4, 2)

        def forward(self, x: Tensor) -> Tensor:
            self.aux(x)
            return self.main(x)

    model = Side().to(DT)
    x, y = torch.randn(6, 4, dtype=DT), torch.randint(0, 3, (6,))
    raw = _run(model, x, y, None, size=3, recipe="raw")
    assert torch.count_nonzero(raw.layers["aux"].G_b) == 0
    assert rel_err(raw.layers["aux"].H_a, x.T @ x / 6) < 1e-12
    paper = _run(model, x, y, None, size=3)
    assert "zero norm" in paper.failed["aux"]


def test_layer_called_twice_gets_both_rows() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shared = nn.Linear(3, 3)

        def forward(self, x: Tensor) -> Tensor:
            return self.shared(torch.tanh(self.shared(x)))

    torch.manual_seed(4)
    model = Twice().to(DT)
    x, y = torch.randn(5, 3, dtype=DT), torch.randn(5, 3, dtype=DT)
    res = _run(model, x, y, None, size=5, loss_fn=mse_sum, recipe="raw")
    got = res.layers["shared"]
    assert got.n == 10
    lin = model.shared
    h1 = torch.tanh(lin(x))
    rows_a = torch.cat([x, h1])
    assert rel_err(got.H_a, rows_a.T @ rows_a / 10) < 1e-12
    # gradients by hand: out = lin(tanh(lin(x))); loss = Σ (out − y)²
    g2 = 2 * (lin(h1) - y)
    g1 = (g2 @ lin.weight) * (1 - h1**2)
    g = torch.cat([g1, g2]).detach()
    assert rel_err(got.G_b, g.T @ g / 10) < 1e-12


def test_never_called_layer_is_reported() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x: Tensor) -> Tensor:
            return F.linear(x, self.fc.weight, self.fc.bias)

    model = Functional().to(DT)
    res = _run(
        model, torch.randn(4, 3, dtype=DT), torch.randn(4, 2, dtype=DT), None, 4, loss_fn=mse_sum
    )
    assert "never called" in res.failed["fc"]


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv1d(3, 4, 3, stride=2, padding=2, dilation=2),
        nn.Conv1d(3, 4, 4, padding="same", padding_mode="circular"),
        nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 2), padding_mode="reflect"),
        nn.Conv2d(2, 3, 3, padding="same", dilation=2),
        nn.Conv3d(2, 3, (2, 3, 2), stride=(1, 2, 2), padding=1, dilation=(2, 1, 1)),
        nn.Conv3d(2, 3, 3, padding=1, padding_mode="replicate"),
    ],
    ids=["1d-dil", "1d-same-circ", "2d-reflect", "2d-same-dil", "3d-dil", "3d-replicate"],
)
def test_im2col_rows_reproduce_conv(conv: nn.Module) -> None:
    conv = conv.to(DT)
    nd = len(conv.kernel_size)
    x = torch.randn(2, conv.in_channels, *([7] * nd), dtype=DT)
    with torch.no_grad():
        out = conv(x) - conv.bias.view(-1, *([1] * nd))
    W = conv.weight.reshape(conv.out_channels, -1)
    rows = _im2col(conv, x).reshape(-1, W.shape[1])
    assert rel_err(rows @ W.T, out.movedim(1, -1).reshape(-1, W.shape[0])) < 1e-13


def test_conv_layers_all_dims_identity() -> None:
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Conv3d(1, 2, 2, stride=(1, 2, 2), padding=1),
        nn.Tanh(),
        nn.Flatten(2),
        nn.Conv1d(2, 3, 3, padding="same", padding_mode="reflect"),
        nn.Tanh(),
        nn.Flatten(),
        nn.LazyLinear(2),
    ).to(DT)
    x = torch.randn(3, 1, 4, 5, 5, dtype=DT)
    model(x)  # initialise the lazy layer
    res = _run(model, x, torch.randint(0, 2, (3,)), None, size=2, recipe="raw")
    assert not res.failed and set(res.layers) == {"0", "3", "6"}
    for got in res.layers.values():
        W = got.W
        assert rel_err(W @ got.H_a @ W.T, got.H_b) < 1e-10
        assert rel_err(W.T @ got.G_b @ W, got.G_a) < 1e-10


def test_float32_model_and_gemm() -> None:
    model, x, y, _ = _mlp()
    ref = _run(model, x, y, None, size=6)
    model32 = model.float()
    for gemm in (torch.float64, torch.float32):
        res = _run(model32, x, y, None, size=6, gemm_dtype=gemm)
        for name, got in res.layers.items():
            assert got.H_a.dtype == torch.float64
            for key in MATS:
                assert rel_err(getattr(got, key), getattr(ref.layers[name], key)) < 1e-4


def test_mask_fits_pooled_layer_and_mismatch_fails() -> None:
    class Pool(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok = nn.Linear(3, 4)
            self.cls = nn.Linear(4, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.cls(self.tok(x).mean(1))

    torch.manual_seed(6)
    model = Pool().to(DT)
    x, y = torch.randn(6, 5, 3, dtype=DT), torch.randint(0, 2, (6,))
    mask = torch.ones(6, 5, dtype=torch.bool)
    mask[1] = False  # sample 1 fully padded: dropped from the pooled layer too
    mask[2, 3:] = False
    res = _run(model, x, y, mask, size=6, recipe="raw")
    assert res.layers["tok"].n == 30 - 5 - 2
    assert res.layers["cls"].n == 5
    bad = _run(model, x, y, torch.ones(6, 4, dtype=torch.bool), size=6)
    assert "does not fit" in bad.failed["tok"] and "cls" not in bad.failed


def test_sample_mask_broadcasts_over_tokens() -> None:
    model, x, y, _ = _tokens()
    keep = torch.tensor([True, False] * 4 + [True])
    res = _run(model, x, y, keep, size=4, recipe="raw")
    ref = _reference(model, x[keep], y[keep], None, cross_entropy_sum, "raw")
    for name, got in res.layers.items():
        assert got.n == ref[name]["n"] == int(keep.sum()) * 5
        for key in MATS:
            assert rel_err(getattr(got, key), ref[name][key]) < 1e-10


def test_no_grad_and_in_place_input_fail_with_reasons() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.frozen = nn.Linear(3, 3)
            self.fc = nn.Linear(3, 3)
            self.head = nn.Linear(3, 2)

        def forward(self, x: Tensor) -> Tensor:
            with torch.no_grad():
                z = self.frozen(x)
            h = self.fc(z)
            z.mul_(2.0)  # the input of fc, changed after fc ran
            return self.head(h + z)

    model = Odd().to(DT)
    res = _run(model, torch.randn(4, 3, dtype=DT), torch.randint(0, 2, (4,)), None, 4)
    assert "gradients disabled" in res.failed["frozen"]
    assert "modified in place" in res.failed["fc"]
    assert set(res.layers) == {"head"}


def test_finishing_one_layer_at_a_time_gives_the_same_matrices_and_frees_the_sums() -> None:
    model, x, y, mask = _cnn()  # 10 samples: the last Linear has fewer rows than its width
    layers, _ = select_layers(model, None)
    at_once = _run(model, x, y, mask, 4)
    lazy = _run(model, x, y, mask, 4, finish=False)
    assert lazy.layers == {} and set(lazy.sums) == set(at_once.layers)
    for ref in layers:
        m = lazy.take(ref.name)
        assert m is not None and ref.name not in lazy.sums  # its sums are released
        for key in MATS:
            assert rel_err(getattr(m, key), getattr(at_once.layers[ref.name], key)) < 1e-12
    assert lazy.sums == {}
    assert at_once.layers["5"].factors is not None  # 10 rows of width 30: kept as rows
