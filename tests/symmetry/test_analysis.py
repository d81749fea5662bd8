"""Rank, Gaussian excess nullity, softmax translation, subspaces and whole-checkpoint runs."""

from __future__ import annotations

import math

import pytest
import torch

from symtool.symmetry.analysis import (
    analyse_rank,
    analyse_symmetry,
    gaussian_rank,
    softmax_translation,
    symmetry_subspaces,
)
from symtool.symmetry.records import SymmetrySettings
from tests.reference import finite_everywhere


def _planted(m: int, n: int, sigma: list[float], seed: int = 0,
             dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``U diag(σ) Vᵀ`` with random orthonormal ``U``, ``V``."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(m, len(sigma), generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, len(sigma), generator=g, dtype=torch.float64))
    return (u @ torch.diag(torch.tensor(sigma, dtype=torch.float64)) @ v.T).to(dtype)


def _ranks(rec) -> dict[float, int]:
    return {r.tau: r.rank for r in rec.ranks}


def test_planted_low_rank_is_exact_at_every_threshold():
    w = _planted(60, 40, [5.0, 3.0, 1.0, 0.51, 0.2, 0.02, 1e-4])  # no ratio exactly at a τ
    rec = analyse_rank(w, name="w")
    assert _ranks(rec) == {1e-1: 4, 3e-2: 5, 1e-2: 5, 1e-3: 6}
    assert rec.sigma_max == pytest.approx(5.0)
    assert rec.stable_rank == pytest.approx((25 + 9 + 1 + 0.51**2 + 0.04 + 4e-4 + 1e-8) / 25)
    assert all(not r.floored for r in rec.ranks)


def test_effective_rank_of_equal_singular_values_is_their_number():
    rec = analyse_rank(_planted(30, 20, [2.0] * 7), keep_vectors=True)
    assert rec.effective_rank == pytest.approx(7.0)
    assert rec.singular_values[:7] == pytest.approx([2.0] * 7)
    assert len(rec.singular_values) == 20


def _entropy_rank(sigma: torch.Tensor) -> float:
    p = sigma / sigma.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@pytest.mark.parametrize(
    "sigma",
    [[1.0] * 10, [float(k) ** -2 for k in range(1, 300)], [1.0, 0.5, 0.25] + [1e-9] * 50],
    ids=["rank-10", "steep-power-law", "tiny-tail"],
)
def test_effective_rank_to_round_off_where_the_gram_matrix_cannot_resolve(sigma):
    """Low-rank and steep spectra (weight decay's signature): the Gram route alone was
    off by 1e-5 relative here; the effective rank must match svdvals to round-off."""
    w = _planted(700, 400, sigma, seed=2)
    exact = _entropy_rank(torch.linalg.svdvals(w))
    rec = analyse_rank(w)
    assert rec.effective_rank == pytest.approx(exact, rel=1e-12)


def test_effective_rank_of_full_rank_matrices_keeps_the_gram_route(monkeypatch):
    import symtool.linalg as linalg

    calls = []
    monkeypatch.setattr(linalg.torch.linalg, "svdvals",
                        lambda *a, **k: calls.append(1) or torch.linalg.svd(*a, **k)[1])
    g = torch.Generator().manual_seed(9)
    w = torch.randn(300, 500, generator=g, dtype=torch.float64)
    rec = analyse_rank(w)
    monkeypatch.undo()
    assert calls == []  # provably exact enough: no SVD
    assert rec.effective_rank == pytest.approx(_entropy_rank(torch.linalg.svdvals(w)), rel=1e-12)


def test_ratio_next_to_a_threshold_is_counted_exactly():
    # σ_2/σ_1 = 1e-2·(1 ± 5e-13): below the Gram route's resolution there (about 1e-10)
    w = _planted(200, 100, [1.0, 1e-2 * (1 + 5e-13), 1e-2 * (1 - 5e-13), 0.5], seed=4)
    assert _ranks(analyse_rank(w))[1e-2] == 3


def test_floor_is_the_computation_precision_not_the_stored_dtype():
    """Half-precision storage rounding is not structure: a float16 layer's floor is
    float64's, so a singular value at 3e-2 σ_1 counts at τ = 1e-2 (the old stored-dtype
    floor, 64·2⁻¹⁰ = 6.25e-2, hid it)."""
    w16 = _planted(64, 64, [1.0, 0.5, 0.03], dtype=torch.float16)
    rec = analyse_rank(w16)
    assert rec.floor == pytest.approx(64 * 2.0**-52)
    assert rec.dtype == "float16"  # the stored dtype is still recorded
    assert _ranks(rec) == {1e-1: 2, 3e-2: 3, 1e-2: 3, 1e-3: 3}
    assert not any(r.floored for r in rec.ranks)


def _gpt_layer(dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(3072, 768, generator=g) * 0.02).to(dtype)


def test_bf16_random_layer_has_the_ranks_of_its_float32_original():
    """A random 3072×768 layer: bfloat16 rounding (relative 2⁻⁹) is ~1.7e-3·σ_1 in
    spectral norm here, far below every σ_k/σ_1 (≥ 0.33), so every rank agrees; with the
    stored-dtype floor (3072·2⁻⁷ = 24) bfloat16 reported rank 0 at every τ."""
    w32 = _gpt_layer(torch.float32)
    r32, r16 = analyse_rank(w32), analyse_rank(w32.to(torch.bfloat16))
    assert r16.dtype == "bfloat16" and r16.floor == r32.floor
    assert _ranks(r16) == _ranks(r32) == {1e-1: 768, 3e-2: 768, 1e-2: 768, 1e-3: 768}
    assert r16.effective_rank == pytest.approx(r32.effective_rank, rel=1e-5)
    assert 741 < r16.effective_rank < 743


def test_bf16_ranks_match_float32_on_a_decaying_spectrum():
    """σ_k = k^-1.2 (ratios cross every τ): the same ranks at τ ∈ {1e-1, 3e-2, 1e-2}, above
    bfloat16 noise (2.1e-4·σ_1 for this matrix); at 1e-3 too, because no σ_k/σ_1 sits within
    the noise of 1e-3 here (docs/symmetry.md, "Half-precision checkpoints")."""
    g = torch.Generator().manual_seed(1)
    u, _ = torch.linalg.qr(torch.randn(3072, 768, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(768, 768, generator=g, dtype=torch.float64))
    w = ((u * torch.arange(1, 769, dtype=torch.float64) ** -1.2) @ v.T).float()
    r32, r16 = _ranks(analyse_rank(w)), _ranks(analyse_rank(w.to(torch.bfloat16)))
    assert r32 == {1e-1: 6, 3e-2: 18, 1e-2: 46, 1e-3: 316}
    assert r16 == r32


def test_bf16_planted_low_rank_with_zero_rows_and_columns():
    w = torch.zeros(3072, 768, dtype=torch.float64)
    w[512:, 128:] = _planted(2560, 640, torch.linspace(1.0, 0.2, 8).tolist(), seed=3)
    rec = analyse_rank(w.to(torch.bfloat16))
    assert _ranks(rec) == {1e-1: 8, 3e-2: 8, 1e-2: 8, 1e-3: 8}
    assert all(r.excess_nullity_gaussian > 600 for r in rec.ranks)


def test_bf16_symmetry_of_a_whole_state_dict_matches_float32():
    g = torch.Generator().manual_seed(5)
    sd = {"fc1.weight": torch.randn(64, 32, generator=g), "fc1.bias": torch.randn(64, generator=g),
          "fc2.weight": torch.randn(10, 64, generator=g)}
    sd["fc1.weight"][:4] = 0.0  # four units whose incoming weights are zero
    sd["fc1.bias"][:4] = 0.0
    r32 = analyse_symmetry(sd)
    r16 = analyse_symmetry({k: v.to(torch.bfloat16) for k, v in sd.items()})
    assert [_ranks(a) for a in r16.layers] == [_ranks(a) for a in r32.layers]
    assert [lr.floor for lr in r16.layers] == [lr.floor for lr in r32.layers]
    assert r16.units[0].dead == r32.units[0].dead
    assert all(d.half_dead_in == 4 for d in r16.units[0].dead)


def test_marchenko_pastur_square_matches_quarter_circle():
    for cut in (1e-3, 1e-2, 0.2, 0.7):
        x = 2 * cut
        below = (x * math.sqrt(4 - x * x) / 2 + 2 * math.asin(x / 2)) / math.pi
        assert gaussian_rank(500, 500, cut) == pytest.approx(500 * (1 - below), rel=1e-6)
    assert gaussian_rank(300, 100, 1e-1) == 100.0  # hard edge 1 − √c above the cut
    assert gaussian_rank(300, 100, 0.99) == pytest.approx(0.0, abs=2.0)


def test_gaussian_matrices_have_no_excess_nullity():
    g = torch.Generator().manual_seed(7)
    mean = {}
    for shape in ((200, 200), (300, 150)):
        recs = [analyse_rank(torch.randn(*shape, generator=g, dtype=torch.float64) * 0.3)
                for _ in range(4)]
        for tau in (1e-1, 3e-2, 1e-2, 1e-3):
            ex = [next(r for r in rec.ranks if r.tau == tau).excess_nullity_gaussian
                  for rec in recs]
            assert all(abs(e) < 4.0 for e in ex), (shape, tau, ex)
            mean[(shape, tau)] = sum(ex) / len(ex)
    assert all(abs(v) < 2.0 for v in mean.values()), mean


def test_excess_nullity_against_reference():
    ref = analyse_symmetry({"l.weight": _planted(30, 30, [1.0] * 6)})
    now = analyse_symmetry({"l.weight": _planted(30, 30, [1.0] * 4, seed=1)}, reference=ref)
    assert {r.tau: r.excess_nullity_reference for r in now.layers[0].ranks}[1e-2] == 2
    assert all(r.excess_nullity_reference is None for r in ref.layers[0].ranks)


def test_softmax_translation_planted():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(10, 7, generator=g, dtype=torch.float64)
    centred = softmax_translation(w - w.mean(0), torch.zeros(10) + 1.0)
    assert centred.translation == pytest.approx(0.0, abs=1e-12)
    assert centred.bias_translation == pytest.approx(1.0)
    shifted = softmax_translation(torch.ones(10, 1) @ torch.randn(1, 7, generator=g))
    assert shifted.translation == pytest.approx(1.0)
    big = softmax_translation(torch.randn(2000, 50, generator=g))
    assert 0.5 < big.translation / big.gaussian_level < 2.0
    assert softmax_translation(torch.ones(1, 4)).reason == "fewer than two classes"


def test_subspaces_are_orthonormal_complements_matching_the_rank():
    w = _planted(30, 20, [3.0, 2.0, 1.0, 0.5, 0.1, 1e-3])
    sub = symmetry_subspaces({"fc.weight": w})
    assert sorted(sub) == sorted(f"fc.{s}" for s in ("in.broken", "in.restored", "out.broken",
                                                     "out.restored"))
    assert sub["fc.in.broken"].shape == (20, 5) and sub["fc.out.restored"].shape == (30, 25)
    for side, dim in (("in", 20), ("out", 30)):
        basis = torch.cat([sub[f"fc.{side}.broken"], sub[f"fc.{side}.restored"]], dim=1)
        assert torch.allclose(basis.T @ basis, torch.eye(dim, dtype=torch.float64), atol=1e-12)
    assert (w @ sub["fc.in.restored"]).norm(2) <= 1e-3 + 1e-12
    assert (sub["fc.out.restored"].T @ w).norm(2) <= 1e-3 + 1e-12
    assert _ranks(analyse_rank(w))[1e-2] == 5
    small = symmetry_subspaces({"fc.weight": w}, max_side=25, dtype=torch.float32)
    assert "fc.out.restored" not in small and small["fc.in.restored"].dtype == torch.float32


def _mlp_planted() -> dict[str, torch.Tensor]:
    """fc1 (32 units) → fc2: unit 4 dead, unit 9 = 2·unit 1 rescaled; fc2 has rank 3."""
    g = torch.Generator().manual_seed(5)
    w1, b1 = torch.randn(32, 10, generator=g), torch.randn(32, generator=g)
    w2 = torch.randn(12, 32, generator=g)
    w1[4], b1[4], w2[:, 4] = 0.0, 0.0, 0.0
    w1[9], b1[9], w2[:, 9] = 2 * w1[1], 2 * b1[1], w2[:, 1] / 2
    w3 = _planted(5, 12, [2.0, 1.0, 0.5], dtype=torch.float32)
    return {"fc1.weight": w1, "fc1.bias": b1, "fc2.weight": w2, "fc2.bias": torch.zeros(12),
            "fc3.weight": w3, "fc3.bias": torch.zeros(5)}


def test_whole_checkpoint_recovers_planted_structure():
    res = analyse_symmetry(_mlp_planted())
    fc1 = res.units[0]
    assert (fc1.incoming, fc1.outgoing) == ("fc1", "fc2")
    assert fc1.dead_units == (4,) and fc1.clusters == ((1, 9),) and fc1.independent_units == 30
    assert _ranks(res.layers[2]) == {1e-1: 3, 3e-2: 3, 1e-2: 3, 1e-3: 3}
    assert res.softmax.layer == "fc3" and res.softmax.classes == 5
    assert res.settings == SymmetrySettings()
    assert finite_everywhere(res)


def test_non_finite_weights_are_recorded_not_raised():
    sd = _mlp_planted()
    sd["fc2.weight"][0, 0] = float("nan")
    res = analyse_symmetry(sd)
    assert res.layers[1].reason == "non-finite weights" and res.layers[1].ranks == ()
    assert [u.reason for u in res.units] == ["non-finite weights", "non-finite weights"]
    assert res.layers[0].reason is None
    assert finite_everywhere(res)
    assert "fc2.in.broken" not in symmetry_subspaces(sd)
