"""LayerAccumulator against dense float64 formulas (docs/theory.md §2)."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from symtool.align.moments import VECTORS, LayerAccumulator
from symtool.errors import AnalysisError
from tests.reference import rel_err, second_moment

Tensor = torch.Tensor
DT = torch.float64
NAMES = {"h_a": "H_a", "g_a": "G_a", "h_b": "H_b", "g_b": "G_b"}


def _rows(n: int = 40, d_in: int = 5, d_out: int = 3, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_out, d_in, generator=g, dtype=DT)
    h_a = torch.randn(n, d_in, generator=g, dtype=DT) + 0.5
    g_b = torch.randn(n, d_out, generator=g, dtype=DT)
    return {"W": W, "h_a": h_a, "h_b": h_a @ W.T, "g_b": g_b, "g_a": g_b @ W}


def _add(acc: LayerAccumulator, r: dict[str, Tensor], sl: slice = slice(None)) -> None:
    acc.add(r["h_a"][sl], r["h_b"][sl], r["g_b"][sl], r["g_a"][sl])


@pytest.mark.parametrize("recipe", ["paper", "raw"])
def test_finish_matches_dense_formulas(recipe: str) -> None:
    r = _rows()
    acc = LayerAccumulator(recipe, raw_too=True)
    _add(acc, r)
    m = acc.finish(r["W"])
    n = r["h_a"].shape[0]
    for v in VECTORS:
        assert rel_err(getattr(m, NAMES[v]), second_moment(r[v], recipe)[0]) < 1e-12
        assert m.raw is not None and rel_err(m.raw[NAMES[v]], second_moment(r[v], "raw")[0]) < 1e-12
    c_b = sum(torch.outer(gb, hb) for gb, hb in zip(r["g_b"], r["h_b"], strict=True)) / n
    c_a = sum(torch.outer(ha, ga) for ha, ga in zip(r["h_a"], r["g_a"], strict=True)) / n
    assert rel_err(m.C_b, c_b) < 1e-12 and rel_err(m.C_a, c_a) < 1e-12
    assert m.n == n and m.recipe == recipe
    assert m.skipped_rows == dict.fromkeys(VECTORS, 0)
    assert torch.equal(m.W, r["W"]) and m.W.data_ptr() != r["W"].data_ptr()


def test_paper_covariance_is_centred_and_psd() -> None:
    r = _rows(seed=1)
    acc = LayerAccumulator("paper")
    _add(acc, r)
    m = acc.finish(r["W"])
    for v in VECTORS:
        M = getattr(m, NAMES[v])
        assert torch.allclose(M, M.T, atol=1e-15)
        assert torch.linalg.eigvalsh(M).min() > -1e-12
        # trace of a covariance of unit rows = 1 − ‖mean‖²
        unit = r[v] / r[v].norm(dim=1, keepdim=True)
        assert abs(float(M.trace()) - (1 - float(unit.mean(0).norm() ** 2))) < 1e-12


def test_zero_norm_rows_are_skipped_and_counted() -> None:
    r = _rows(n=12)
    r["h_a"][[1, 4, 7]] = 0.0
    r["h_b"] = r["h_a"] @ r["W"].T
    r["g_b"][[4, 9]] = 0.0
    r["g_a"] = r["g_b"] @ r["W"]
    acc = LayerAccumulator("paper")
    _add(acc, r)
    m = acc.finish(r["W"])
    assert m.skipped_rows == {"h_a": 3, "g_a": 2, "h_b": 3, "g_b": 2}
    assert m.n == 12
    for v in VECTORS:
        assert rel_err(getattr(m, NAMES[v]), second_moment(r[v], "paper")[0]) < 1e-12
    raw = LayerAccumulator("raw")
    _add(raw, r)
    assert raw.finish(r["W"]).skipped_rows == dict.fromkeys(VECTORS, 0)


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(0, 30), max_size=5), recipe=st.sampled_from(["paper", "raw"]))
def test_any_batch_split_gives_the_same_sums(cuts: list[int], recipe: str) -> None:
    r = _rows(n=30, seed=2)
    whole = LayerAccumulator(recipe, raw_too=True)
    _add(whole, r)
    split = LayerAccumulator(recipe, raw_too=True)
    edges = [0, *sorted(cuts), 30]
    for a, b in itertools.pairwise(edges):
        _add(split, r, slice(a, b))
    for x, y in zip(split.sums(), whole.sums(), strict=True):
        assert torch.allclose(x, y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("recipe", ["paper", "raw"])
def test_merge_and_flat_sums_round_trip(recipe: str) -> None:
    r = _rows(n=20, seed=3)
    full = LayerAccumulator(recipe, raw_too=True)
    _add(full, r)
    a, b = LayerAccumulator(recipe, raw_too=True), LayerAccumulator(recipe, raw_too=True)
    _add(a, r, slice(0, 7))
    _add(b, r, slice(7, 20))
    a.merge(b)
    a.merge(LayerAccumulator(recipe, raw_too=True))  # an empty shard changes nothing
    want, got = full.finish(r["W"]), a.finish(r["W"])
    for key in ("H_a", "G_a", "H_b", "G_b", "C_a", "C_b"):
        assert rel_err(getattr(got, key), getattr(want, key)) < 1e-12
    assert got.n == 20
    # restoring the flat list into a freshly allocated accumulator reproduces it exactly
    c = LayerAccumulator(recipe, raw_too=True)
    c.allocate(5, 3)
    c.load_sums([t.clone() for t in a.sums()])
    for x, y in zip(c.sums(), a.sums(), strict=True):
        assert torch.equal(x, y)
    # an all-reduce style in-place sum over the live tensors doubles everything
    for t in c.sums():
        t += t.clone()
    assert c.n == 40
    assert rel_err(c.finish(r["W"]).H_a, got.H_a) < 1e-12


def test_merge_rejects_other_settings() -> None:
    with pytest.raises(ValueError, match="cannot merge"):
        LayerAccumulator("paper").merge(LayerAccumulator("raw"))
    with pytest.raises(ValueError, match="unknown recipe"):
        LayerAccumulator("cooked")


def test_float32_gemm_close_to_float64() -> None:
    r = _rows(n=50, seed=4)
    a64, a32 = LayerAccumulator("paper"), LayerAccumulator("paper", gemm_dtype=torch.float32)
    _add(a64, r)
    _add(a32, r)
    m64, m32 = a64.finish(r["W"]), a32.finish(r["W"])
    assert m32.H_a.dtype == DT
    for key in ("H_a", "G_a", "H_b", "G_b", "C_a", "C_b"):
        assert rel_err(getattr(m32, key), getattr(m64, key)) < 1e-5


def test_inputs_untouched_unless_owned() -> None:
    r = _rows(n=10, seed=5)
    before = {k: v.clone() for k, v in r.items()}
    acc = LayerAccumulator("paper", raw_too=True)
    _add(acc, r)
    for k in r:
        assert torch.equal(r[k], before[k])
    owned = LayerAccumulator("paper", raw_too=True)
    copies = {k: v.clone() for k, v in r.items()}
    owned.add(copies["h_a"], copies["h_b"], copies["g_b"], copies["g_a"], owned=frozenset(VECTORS))
    for x, y in zip(owned.sums(), acc.sums(), strict=True):
        assert torch.equal(x, y)


def test_non_finite_rows_fail_at_finish() -> None:
    r = _rows(n=8, seed=6)
    r["g_b"][3, 1] = float("inf")
    r["g_a"] = r["g_b"] @ r["W"]
    for recipe in ("paper", "raw"):
        acc = LayerAccumulator(recipe)
        _add(acc, r)
        with pytest.raises(AnalysisError, match="non-finite values in g_a, g_b"):
            acc.finish(r["W"])


def test_empty_and_all_zero_fail_at_finish() -> None:
    r = _rows(n=4)
    with pytest.raises(AnalysisError, match="no sample rows"):
        LayerAccumulator().finish(r["W"])
    acc = LayerAccumulator("paper")
    acc.add(r["h_a"], r["h_b"], torch.zeros(4, 3, dtype=DT), torch.zeros(4, 5, dtype=DT))
    with pytest.raises(AnalysisError, match="every g_a row has zero norm"):
        acc.finish(r["W"])


def test_shape_errors() -> None:
    r = _rows(n=4)
    acc = LayerAccumulator()
    with pytest.raises(ValueError, match="equal shape"):
        acc.add(r["h_a"], r["h_b"], r["g_b"], r["h_b"])
    _add(acc, r)
    with pytest.raises(ValueError, match="do not fit"):
        acc.add(r["h_b"], r["h_b"], r["g_b"], r["g_b"])
    with pytest.raises(ValueError, match="allocate"):
        LayerAccumulator().sums()


# ------------------------------------------------------------ one-triangle products


@pytest.mark.parametrize("host", [True, False])
@pytest.mark.parametrize("d", [6, 200])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_add_gram_fills_the_lower_triangle_of_xtx(
    monkeypatch: pytest.MonkeyPatch, host: bool, d: int, dtype: torch.dtype
) -> None:
    from symtool import linalg
    from symtool.linalg import add_gram_
    from symtool.triangles import full_from_lower

    monkeypatch.setattr(linalg, "HOST_BLAS", host)  # SciPy syrk, or torch blocks
    g = torch.Generator().manual_seed(9)
    x = torch.randn(37, d, generator=g, dtype=DT)
    out = torch.full((d, d), 2.0, dtype=DT)
    add_gram_(out, x[:20].to(dtype))
    add_gram_(out, x[20:].to(dtype))
    want = x.T @ x
    tol = 1e-12 if dtype == DT else 1e-4
    low = torch.tril(torch.ones(d, d, dtype=torch.bool))
    assert torch.allclose(out[low], (want + 2.0)[low], rtol=tol, atol=tol)
    sym = full_from_lower(out - 2.0)
    assert torch.equal(sym, sym.T) and torch.allclose(sym, want, rtol=tol, atol=tol)


def test_sums_from_both_gram_paths_merge(monkeypatch: pytest.MonkeyPatch) -> None:
    # a CPU process (SciPy syrk) and a GPU or multi-thread one (torch blocks) leave different
    # upper triangles; only the lower one is read, so their sums add
    from symtool import linalg

    r = _rows(n=24, d_in=150, d_out=140, seed=11)
    whole = LayerAccumulator("paper", raw_too=True)
    _add(whole, r)
    want = whole.finish(r["W"])
    a, b = LayerAccumulator("paper", raw_too=True), LayerAccumulator("paper", raw_too=True)
    _add(a, r, slice(0, 9))
    monkeypatch.setattr(linalg, "HOST_BLAS", False)
    _add(b, r, slice(9, 24))
    a.merge(b)
    got = a.finish(r["W"])
    for key in ("H_a", "G_a", "H_b", "G_b", "C_a", "C_b"):
        assert rel_err(getattr(got, key), getattr(want, key)) < 1e-12
    assert got.raw is not None and want.raw is not None
    assert rel_err(got.raw["H_a"], want.raw["H_a"]) < 1e-12
    assert torch.equal(got.H_a, got.H_a.T)  # finished matrices are exactly symmetric


def test_layer_bytes_counts_sums_and_finished_matrices() -> None:
    from symtool.align.moments import layer_bytes

    # sums 2a²+2b²+ab, finished 3a²+3b²+ab (H, G, C per side and W), 8 bytes each
    a, b = 6, 10
    assert layer_bytes(a, b) == 8 * (5 * (a * a + b * b) + 2 * a * b)
    assert layer_bytes(a, b, raw_too=True) == layer_bytes(a, b) + 8 * 4 * (a * a + b * b)


@pytest.mark.parametrize("recipe", ["paper", "raw"])
def test_rows_fewer_than_the_width_are_kept_and_give_exact_factors(recipe: str) -> None:
    # 12 rows of width 30 (input side, kept as rows) and 7 (output side, a dense sum):
    # the finished moments equal the dense formulas, and the factors reproduce them.
    r = _rows(n=12, d_in=30, d_out=7, seed=3)
    r["g_a"][4] = 0.0  # a zero-norm row: dropped from the paper factor
    acc = LayerAccumulator(recipe)
    for sl in (slice(0, 5), slice(5, 12)):
        _add(acc, r, sl)
    assert set(acc._X) == {"h_a", "g_a"}  # h_b, g_b reached their width: summed
    m = acc.finish(r["W"])
    for v in VECTORS:
        assert rel_err(getattr(m, NAMES[v]), second_moment(r[v], recipe)[0]) < 1e-12
    assert m.factors is not None and set(m.factors) == {"H_a", "G_a"}
    for name, Y in m.factors.items():
        assert Y.shape[0] < Y.shape[1]
        assert rel_err(Y.T @ Y, getattr(m, name)) < 1e-12
    if recipe == "paper":
        assert m.factors["G_a"].shape[0] == 11 and m.skipped_rows["g_a"] == 1


def test_kept_rows_become_a_sum_when_they_reach_the_width_or_are_read() -> None:
    r = _rows(n=40, d_in=30, d_out=7, seed=4)
    rows_then_sum = LayerAccumulator("paper")
    for i in range(0, 40, 8):  # 8, 16, 24 rows kept; the fourth batch reaches 30
        _add(rows_then_sum, r, slice(i, i + 8))
        assert ("h_a" in rows_then_sum._X) == (i + 8 < 30)
    dense = LayerAccumulator("paper")
    dense.allocate(30, 7)
    dense._densify("h_a")
    _add(dense, r)
    for a, b in zip(rows_then_sum.sums(), dense.sums(), strict=True):
        assert rel_err(a.to(DT), b.to(DT)) < 1e-12 if a.is_floating_point() else torch.equal(a, b)
    few = LayerAccumulator("paper")
    _add(few, r, slice(0, 6))
    other = LayerAccumulator("paper")
    _add(other, r, slice(6, 12))
    few.merge(other)  # reading the sums turns both into sums: exact
    ref = LayerAccumulator("paper")
    _add(ref, r, slice(0, 12))
    mf, mr = few.finish(r["W"]), ref.finish(r["W"])
    assert mf.factors is None and mr.factors is not None
    for v in VECTORS:
        assert rel_err(getattr(mf, NAMES[v]), getattr(mr, NAMES[v])) < 1e-12


@pytest.mark.parametrize("recipe", ["paper", "raw"])
def test_consuming_finish_gives_the_same_matrices_bit_for_bit(recipe: str) -> None:
    r = _rows(n=50, d_in=9, d_out=4, seed=5)
    kept, eaten = LayerAccumulator(recipe, raw_too=True), LayerAccumulator(recipe, raw_too=True)
    for acc in (kept, eaten):
        _add(acc, r)
    a, b = kept.finish(r["W"]), eaten.finish(r["W"], consume=True)
    for key in ("H_a", "G_a", "H_b", "G_b", "C_a", "C_b"):
        assert torch.equal(getattr(a, key), getattr(b, key))
        assert torch.equal(getattr(a, key), getattr(a, key).mT) or key.startswith("C")
    assert torch.equal(kept.finish(r["W"]).H_a, a.H_a)  # the kept sums were not touched
