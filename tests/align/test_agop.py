"""Tests for symtool.align.agop (NFA) and crh.score_pair against dense references."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch.func import jacrev, vmap

from symtool.align import crh
from symtool.align.agop import AgopSums, agop_matrices, nfa, projection_error
from tests.reference import gen, layer_from_activations, np_alignment

F64 = torch.float64


def _net(seed: int, d_in: int = 6, hidden: int = 5, K: int = 4) -> tuple[torch.Tensor, ...]:
    g = gen(seed)
    W = torch.randn(hidden, d_in, generator=g, dtype=F64)
    V = torch.randn(K, hidden, generator=g, dtype=F64)
    x = torch.randn(40, d_in, generator=g, dtype=F64)
    return W, V, x


def _output_grads(W: torch.Tensor, V: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``∂f_k/∂b`` for every output coordinate ``k`` of ``f = V relu(b)``, ``b = W x``
    (``K × rows × hidden``), by autograd: what the capture's extra backward passes give."""
    b = (x @ W.T).requires_grad_(True)
    f = torch.relu(b) @ V.T
    return torch.stack(
        [torch.autograd.grad(f[:, k].sum(), b, retain_graph=True)[0] for k in range(V.shape[0])]
    )


def _exact(grads: torch.Tensor, batches: int = 3) -> AgopSums:
    sums = AgopSums("exact", grads.shape[0])
    for part in torch.tensor_split(torch.arange(grads.shape[1]), batches):
        sums.rows(len(part))
        for g in grads[:, part]:
            sums.add(g)
        sums.end_batch()
    return sums


def test_identity_agop_b_gives_nfa_one() -> None:
    """``f = W h_a``: every output coordinate's gradient rows are ``e_k``, AGOP_b = I and
    AGOP_a = WᵀW exactly: NFA = 1; NFA_sqrt against a dense ``eigh`` square root."""
    W = torch.randn(5, 7, generator=gen(0), dtype=F64)
    n = 12
    sums = AgopSums("exact", 5)
    sums.rows(n)
    for k in range(5):
        sums.add(torch.eye(5, dtype=F64)[k].expand(n, 5))
    sums.end_batch()
    A, root, _ = agop_matrices(sums, W)
    Z = W.T @ W
    torch.testing.assert_close(A, Z, rtol=1e-12, atol=1e-12)
    lam, U = np.linalg.eigh(Z.numpy())
    lam[lam <= 7 * np.finfo(float).eps * lam.max()] = 0.0  # rank 5: round-off is not √-ed
    root_ref = (U * np.sqrt(lam)) @ U.T
    np.testing.assert_allclose(root.numpy(), root_ref, rtol=1e-10, atol=1e-10)
    res = nfa(sums, W)
    nfa_rel, sqrt_rel = res.relations
    assert (nfa_rel.id, nfa_rel.formula, sqrt_rel.id, sqrt_rel.formula) == (
        "NFA", "Z_a ~ AGOP_a", "NFA_sqrt", "Z_a ~ AGOP_a^1/2",
    )
    assert nfa_rel.alpha == pytest.approx(1.0, abs=1e-12)
    want = np_alignment(Z.numpy(), root_ref, "pearson")
    assert sqrt_rel.alpha == pytest.approx(want, abs=1e-10)
    assert sqrt_rel.alpha < 1 - 1e-3  # the square root really is another matrix
    assert (res.method, res.outputs, res.projections, res.error, res.status) == (
        "exact", 5, None, 0.0, "ok",
    )
    # the null is the six relations' exact null of α(Z_a, Q AGOP Qᵀ)
    ref = crh.score_pair("x", "x", "a", Z, torch.from_numpy(root_ref))
    assert sqrt_rel.null_mean == pytest.approx(ref.null_mean, abs=1e-10)
    assert sqrt_rel.z == pytest.approx(ref.z, rel=1e-8)


def test_two_layer_relu_agop_matches_torch_func_jacobian() -> None:
    W, V, x = _net(1)
    sums = _exact(_output_grads(W, V, x))
    A, root, values = agop_matrices(sums, W)

    def f(xi: torch.Tensor) -> torch.Tensor:
        return V @ torch.relu(W @ xi)

    J = vmap(jacrev(f))(x)  # rows × K × d_in
    brute = torch.einsum("nki,nkj->ij", J, J) / x.shape[0]
    torch.testing.assert_close(A, brute, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(root @ root, brute, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(values.sort().values, torch.linalg.eigvalsh(brute), atol=1e-10,
                               rtol=1e-10)
    res = nfa(sums, W)
    assert res.relations[0].alpha == pytest.approx(
        np_alignment((W.T @ W).numpy(), brute.numpy(), "pearson"), abs=1e-10
    )
    rec = res.record()
    assert set(rec) == {"status", "reason", "relations", "agop"}
    assert set(rec["relations"]) == {"NFA", "NFA_sqrt"}
    assert "id" not in rec["relations"]["NFA"] and rec["relations"]["NFA"]["side"] == "a"
    assert rec["agop"] == {"method": "exact", "outputs": 4, "projections": None, "error": 0.0}


@pytest.mark.parametrize(("d_in", "d_out"), [(9, 6), (80, 70)])  # quadrature and series nulls
@pytest.mark.parametrize("metric", ["pearson", "cosine"])
def test_score_pair_equals_relations(d_in: int, d_out: int, metric: str) -> None:
    g = gen(d_in)
    W = torch.randn(d_out, d_in, generator=g, dtype=F64)
    X = torch.randn(200, d_in, generator=g, dtype=F64)
    mix = torch.eye(d_out, dtype=F64) + W @ W.T / d_in  # G_a related to Z_a, not equal
    Y = torch.randn(200, d_out, generator=g, dtype=F64) @ mix
    m = layer_from_activations(W, X, Y)
    spectra = crh.layer_spectra(m, metric=metric)
    want = {r.id: r for r in crh.relations(m, spectra=spectra, metric=metric).relations}["f-GWA"]
    got = crh.score_pair("f-GWA", want.formula, "a", spectra.matrix("G_a"),
                         spectra.matrix("Z_a"), metric=metric)
    for f in dataclasses.fields(crh.Relation):
        a, b = getattr(got, f.name), getattr(want, f.name)
        if isinstance(b, float):
            assert a == pytest.approx(b, rel=1e-12, abs=1e-12), f.name
        else:
            assert a == b, f.name


def _projected(
    grads: torch.Tensor, W: torch.Tensor, R: int, seed: int, group: int = 1, told: int = 1
) -> AgopSums:
    """``R`` Gaussian projections of the output: pass ``r``'s gradient rows are
    ``Σ_k v_{r,s,k} ∂f_k/∂b`` with ``v`` independent per sample ``s`` (``group`` rows each);
    the sums are told samples of ``told`` rows."""
    K, n, _ = grads.shape
    g = gen(seed)
    sums = AgopSums("projection", R, outputs=K)
    sums.rows(n, samples=n // told)
    for _ in range(R):
        v = torch.randn(n // group, K, generator=g, dtype=F64).repeat_interleave(group, dim=0)
        sums.add(torch.einsum("nk,knd->nd", v, grads), W)
    sums.end_batch()
    return sums


def test_projection_is_unbiased_and_its_error_estimate_bounds_the_error() -> None:
    W, V, x = _net(2)
    grads = _output_grads(W, V, x)
    exact, _, _ = agop_matrices(_exact(grads), W)
    R, seeds = 3, 400
    est, errors, measured = [], [], []
    for s in range(seeds):
        sums = _projected(grads, W, R, s)
        A, _, _ = agop_matrices(sums, W)
        est.append(A)
        errors.append(projection_error(sums, A)[0])
        measured.append(float((A - exact).norm() / exact.norm()))
    res = nfa(sums, W)
    assert (res.method, res.projections, res.outputs, res.error) == ("projection", R, 4, errors[-1])
    assert res.record()["agop"] == {
        "method": "projection", "outputs": 4, "projections": R, "error": errors[-1],
    }
    stack = torch.stack(est)
    se = stack.std(dim=0) / math.sqrt(seeds)
    assert bool(((stack.mean(dim=0) - exact).abs() <= 4 * se + 1e-12).all())
    assert np.mean(errors) >= np.mean(measured)
    assert np.mean(errors) <= 3 * np.mean(measured)  # an estimate, not a vacuous bound


def test_rows_sharing_a_projection_are_grouped_by_sample() -> None:
    """Rows of one sample share its Gaussian vectors (a sequence's positions): the estimate
    sums ``T_s`` per sample, which keeps it above the measured error; per row it would not."""
    W, V, x = _net(3)
    x = x[:8].repeat_interleave(5, dim=0) + 0.05 * torch.randn(40, 6, generator=gen(9), dtype=F64)
    grads = _output_grads(W, V, x)
    exact, _, _ = agop_matrices(_exact(grads), W)
    grouped, per_row, measured = [], [], []
    for s in range(300):
        sums = _projected(grads, W, 2, s, group=5, told=5)
        A, _, _ = agop_matrices(sums, W)
        grouped.append(projection_error(sums, A)[0])
        measured.append(float((A - exact).norm() / exact.norm()))
        per_row.append(projection_error(_projected(grads, W, 2, s, group=5, told=1), A)[0])
    assert np.mean(per_row) < np.mean(measured) <= np.mean(grouped)


def test_shards_merge_and_failures() -> None:
    W, V, x = _net(4)
    grads = _output_grads(W, V, x)
    whole, _, _ = agop_matrices(_exact(grads, batches=1), W)
    a, b = _exact(grads[:, :15]), _exact(grads[:, 15:], batches=2)
    a.merge(b)
    a.merge(AgopSums("exact", 4))
    assert a.n == 40
    torch.testing.assert_close(agop_matrices(a, W)[0], whole, rtol=1e-13, atol=1e-13)
    empty = nfa(AgopSums("exact", 4), W)
    assert empty.status == "failed" and "no sample rows" in empty.reason
    assert all(r.alpha is None and r.reason.startswith("failed") for r in empty.relations)
    bad = grads.clone()
    bad[1, 3, 0] = float("inf")
    res = nfa(_exact(bad), W)
    assert res.status == "failed" and "non-finite" in res.reason
    assert res.record()["relations"]["NFA"]["alpha"] is None
    nw = _projected(grads, W, 2, 0)
    nw.rows(3)
    nw.add(torch.zeros(3, 5, dtype=F64))  # no W: no error estimate
    nw.add(torch.zeros(3, 5, dtype=F64))
    nw.end_batch()
    res = nfa(nw, W)
    assert res.status == "ok" and res.error is None and "without W" in res.reason
    with pytest.raises(ValueError, match="passes"):
        s = AgopSums("exact", 2)
        s.rows(3)
        s.add(torch.zeros(3, 5))
        s.end_batch()
    with pytest.raises(ValueError, match="different"):
        AgopSums("exact", 2).merge(AgopSums("projection", 2))
