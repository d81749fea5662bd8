"""``--collapse`` and ``--nfa`` end to end through the capture: planted answers and
brute-force references (``torch.func`` Jacobians, dense numpy class statistics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import symtool
from symtool.align import agop
from symtool.align.capture import capture
from symtool.align.extras import Extras, row_labels
from symtool.inputs.models import select_layers
from symtool.inputs.probes import Batch, cross_entropy_sum


def _mlp(d_in: int = 6, width: int = 8, classes: int = 4, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width), nn.Tanh(),
        nn.Linear(width, classes),
    ).double()


def _data(n: int = 96, d_in: int = 6, classes: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def _batches(x: torch.Tensor, y: torch.Tensor, size: int = 32) -> list[Batch]:
    return [Batch(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def _agop_a(sums: agop.AgopSums, W: torch.Tensor) -> torch.Tensor:
    return agop.agop_matrices(sums, W)[0]


def _brute_agop(model: nn.Module, x: torch.Tensor, upto: int) -> list[torch.Tensor]:
    """E_i[J_iᵀ J_i] of the network output w.r.t. the input of each linear layer, by
    ``torch.func``: the model split at each linear layer, Jacobian of the rest."""
    layers = [i for i, m in enumerate(model) if isinstance(m, nn.Linear)][:upto]
    out = []
    for i in layers:
        head, tail = model[:i], model[i:]
        h = head(x) if i else x
        J = torch.func.vmap(torch.func.jacrev(tail))(h)  # n × C × d
        out.append(torch.einsum("nci,ncj->ij", J, J) / len(x))
    return out


def test_agop_equals_torch_func_jacobians_on_a_relu_net() -> None:
    model, (x, y) = _mlp(), _data()
    layers, _ = select_layers(model)
    res = capture(model, layers, _batches(x, y), cross_entropy_sum, extras=Extras(nfa=True))
    assert res.extras is not None and res.extras.plan is not None
    assert res.extras.plan.method == "exact" and res.extras.plan.passes == 4
    brute = _brute_agop(model, x, 3)
    for ref, ref_agop in zip(layers, brute, strict=True):
        got = _agop_a(res.extras.agop[ref.name], res.weights[ref.name])
        err = float(torch.linalg.matrix_norm(got - ref_agop.detach())
                    / torch.linalg.matrix_norm(ref_agop.detach()))
        assert err < 1e-10, (ref.name, err)


def test_single_linear_layer_has_agop_equal_to_ZA_and_nfa_one() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(7, 5)).double()
    x, y = _data(40, 7, 5)
    rep = symtool.align(model, (x, y), nfa=True, pah=False)
    layer = rep.checkpoints[0]["layers"][0]
    nfa = layer["nfa"]
    assert nfa["status"] == "ok" and nfa["agop"]["method"] == "exact"
    assert abs(nfa["relations"]["NFA"]["alpha"] - 1.0) < 1e-10
    assert nfa["relations"]["NFA_sqrt"]["alpha"] < 1.0
    assert nfa["f_gwa_alpha"] == layer["relations"]["f-GWA"]["alpha"]


def test_extras_do_not_change_the_moments() -> None:
    model, (x, y) = _mlp(), _data()
    layers, _ = select_layers(model)
    plain = capture(model, layers, _batches(x, y), cross_entropy_sum)
    extra = capture(model, layers, _batches(x, y), cross_entropy_sum,
                    extras=Extras(collapse=True, nfa=True))
    for name, m in plain.layers.items():
        for key in ("H_a", "G_a", "H_b", "G_b", "C_a", "C_b"):
            assert torch.equal(getattr(m, key), getattr(extra.layers[name], key)), (name, key)


def _dense_nc(h: np.ndarray, y: np.ndarray, W: np.ndarray | None) -> dict[str, float]:
    classes = np.unique(y)
    C = len(classes)
    mu = np.stack([h[y == c].mean(0) for c in classes])
    mu_g = mu.mean(0)
    M = mu - mu_g
    sw = sum((h[y == c] - mu[k]).T @ (h[y == c] - mu[k]) for k, c in enumerate(classes)) / len(h)
    sb = M.T @ M / C
    nc1 = float(np.trace(sw @ np.linalg.pinv(sb, rcond=max(C, h.shape[1]) * np.finfo(float).eps,
                                             hermitian=True)) / C)
    norms = np.linalg.norm(M, axis=1)
    U = M / norms[:, None]
    cos = (U @ U.T)[~np.eye(C, dtype=bool)]
    out = {"nc1": nc1, "equinorm": float(norms.std() / norms.mean()),
           "equiangularity": float(np.abs(cos + 1 / (C - 1)).mean())}
    if W is not None:
        Wc = W[classes]
        out["nc3"] = float(np.linalg.norm(Wc / np.linalg.norm(Wc) - M / np.linalg.norm(M)) ** 2)
    dist = ((h[:, None, :] - mu[None]) ** 2).sum(-1)
    out["near"] = classes[dist.argmin(1)]
    return out


def test_collapse_matches_a_dense_reference_with_nc4() -> None:
    model, (x, y) = _mlp(), _data()
    rep = symtool.align(model, (x, y), collapse=True, pah=False, batch_size=32)
    feats: dict[int, np.ndarray] = {}
    with torch.no_grad():
        h = x
        for i, m in enumerate(model):
            if isinstance(m, nn.Linear):
                feats[i] = h.numpy().copy()
            h = m(h)
        pred = h.argmax(1).numpy()
    yn = y.numpy()
    entries = rep.checkpoints[0]["layers"]
    for (i, h_np), layer in zip(feats.items(), entries, strict=True):
        col = layer["collapse"]
        is_head = i == 4
        ref = _dense_nc(h_np, yn, model[4].weight.detach().numpy() if is_head else None)
        assert col["status"] == "ok" and col["classes"] == 4 and col["rows"] == 96
        for key in ("nc1", "equinorm", "equiangularity"):
            assert math.isclose(col[key], ref[key], rel_tol=1e-10, abs_tol=1e-12), (i, key)
        if is_head:
            assert col["classifier"] == layer["name"]
            assert math.isclose(col["nc3"], ref["nc3"], rel_tol=1e-10)
        else:
            assert col["nc3"] is None
        assert col["nc4"] == pytest.approx(float((ref["near"] != pred).mean()), abs=1e-15)


def test_planted_simplex_etf_collapses_exactly() -> None:
    C, d = 4, 6
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((d, C)))
    etf = (np.eye(C) - 1.0 / C) @ Q.T * 3.0  # C × d, centred simplex ETF
    model = nn.Sequential(nn.Linear(C, d, bias=False), nn.Linear(d, C, bias=False)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(etf.T))  # e_c ↦ μ_c
        model[1].weight.copy_(torch.from_numpy(etf))  # classifier rows = centred means
    y = torch.arange(C).repeat(20)
    x = torch.eye(C, dtype=torch.float64)[y]
    rep = symtool.align(model, (x, y), collapse=True, pah=False)
    head = rep.checkpoints[0]["layers"][1]["collapse"]
    assert head["nc1"] == pytest.approx(0.0, abs=1e-10)
    assert head["equinorm"] == pytest.approx(0.0, abs=1e-10)
    assert head["equiangularity"] == pytest.approx(0.0, abs=1e-10)
    assert head["cos_mean"] == pytest.approx(-1.0 / (C - 1), abs=1e-10)
    assert head["nc3"] == pytest.approx(0.0, abs=1e-10)
    assert head["nc4"] == 0.0


def test_conv_rows_and_real_targets_are_skipped_with_reasons() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(12, 3)).double()
    x = torch.randn(16, 2, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (16,))
    rep = symtool.align(model, (x, y), collapse=True, pah=False)
    conv, head = rep.checkpoints[0]["layers"]
    assert conv["collapse"]["status"] == "skipped"
    assert "output positions" in conv["collapse"]["reason"]
    assert head["collapse"]["status"] == "ok"
    rep = symtool.align(nn.Sequential(nn.Linear(3, 2)).double(),
                        (torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 2)),
                        loss="mse", collapse=True, pah=False)
    col = rep.checkpoints[0]["layers"][0]["collapse"]
    assert col["status"] == "skipped" and "not class labels" in col["reason"]


def test_row_labels_shift_for_a_causal_lm() -> None:
    y = torch.tensor([[5, 6, 7], [1, -100, 2]])
    got, why = row_labels(y, shift=True)
    assert why is None
    assert got.tolist() == [[6, 7, -100], [-100, 2, -100]]
    assert row_labels(torch.tensor([0.5, 1.0]))[0] is None


def test_projection_estimate_is_close_and_within_its_error() -> None:
    model, (x, y) = _mlp(classes=12), _data(classes=12)
    layers, _ = select_layers(model)
    exact = capture(model, layers, _batches(x, y), cross_entropy_sum, extras=Extras(nfa=True))
    proj = capture(model, layers, _batches(x, y), cross_entropy_sum,
                   extras=Extras(nfa=True, nfa_exact_max=4, nfa_projections=16, seed=3))
    assert proj.extras.plan.method == "projection" and proj.extras.plan.passes == 16
    for ref in layers:
        W = exact.weights[ref.name]
        a = _agop_a(exact.extras.agop[ref.name], W)
        b = _agop_a(proj.extras.agop[ref.name], W)
        err = float(torch.linalg.matrix_norm(a - b) / torch.linalg.matrix_norm(a))
        found = agop.nfa(proj.extras.agop[ref.name], W)
        assert found.error is not None and 0 < err < 3 * found.error, (ref.name, err, found.error)
