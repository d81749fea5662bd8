"""symtool.exactnull: the Haar rotation null from invariants, against brute-force Haar samples.

Every accuracy test draws Q by QR of a Gaussian matrix with the sign fix (written here, not
taken from symtool) and checks the exact mean and std within 3 standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch

from symtool.align import null as ex
from symtool.errors import UsageError

Tensor = torch.Tensor
F64 = torch.float64

KINDS = (
    "wishart",
    "lowrank",
    "spiked",
    "heavy",
    "relu",
    "relu_big",
    "indefinite",
    "rank1",
    "near_identity",
    "ones",
)


def _orthogonal(d: int, gen: torch.Generator) -> Tensor:
    Q, R = torch.linalg.qr(torch.randn((d, d), generator=gen, dtype=F64))
    return Q * torch.sign(torch.diagonal(R))


def make_matrix(kind: str, d: int, gen: torch.Generator) -> Tensor:
    """Symmetric test matrices of the kinds symtool meets (covariances, Grams of ReLU
    activations with a large mean entry, indefinite cross terms, degenerate spectra)."""
    if kind == "wishart":
        X = torch.randn((d, 2 * d), generator=gen, dtype=F64)
        return X @ X.T / (2 * d)
    if kind == "lowrank":  # low rank plus noise
        U = torch.randn((d, max(1, d // 8)), generator=gen, dtype=F64)
        X = torch.randn((d, 2 * d), generator=gen, dtype=F64)
        return U @ U.T + 0.05 * X @ X.T / (2 * d)
    if kind == "spiked":
        v = torch.randn(d, generator=gen, dtype=F64)
        v = v / v.norm()
        return torch.eye(d, dtype=F64) + 5.0 * math.sqrt(d) * torch.outer(v, v)
    if kind == "heavy":  # heavy-tailed (Pareto) eigenvalues
        lam = torch.rand(d, generator=gen, dtype=F64) ** (-1 / 1.5) - 0.99
        Q = _orthogonal(d, gen)
        return (Q * lam) @ Q.T
    if kind in ("relu", "relu_big"):  # H = E[h hᵀ] of ReLU units: all entries positive
        n = 4 * d
        W = torch.randn((d, d), generator=gen, dtype=F64) / math.sqrt(d)
        z = torch.randn((d, n), generator=gen, dtype=F64)
        X = torch.relu(W @ z + (0.5 if kind == "relu" else 3.0))
        return X @ X.T / n
    if kind == "indefinite":  # −sym E[g hᵀ]
        G = torch.randn((d, 3 * d), generator=gen, dtype=F64)
        H = torch.relu(torch.randn((d, 3 * d), generator=gen, dtype=F64))
        M = G @ H.T / (3 * d)
        return -(M + M.T) / 2
    if kind == "rank1":
        v = torch.randn(d, generator=gen, dtype=F64).abs() + 0.5
        return torch.outer(v, v)
    if kind == "near_identity":
        S = torch.randn((d, d), generator=gen, dtype=F64)
        return torch.eye(d, dtype=F64) + 0.01 * (S + S.T) / 2
    if kind == "ones":  # 11ᵀ plus a little noise: QBQᵀ is almost constant for some Q
        X = torch.randn((d, 2 * d), generator=gen, dtype=F64)
        return torch.ones((d, d), dtype=F64) + 0.01 * X @ X.T / (2 * d)
    raise ValueError(kind)


def make_pair(ka: str, kb: str, d: int, seed: int) -> tuple[Tensor, Tensor]:
    """``(A, B)``; ``kb`` may also be ``"square"`` (``B = A²``) or ``"noisy"`` (``A + noise``)."""
    gen = torch.Generator().manual_seed(seed)
    A = make_matrix(ka, d, gen)
    if kb == "square":
        return A, A @ A
    if kb == "noisy":
        S = torch.randn((d, d), generator=gen, dtype=F64)
        return A, A + 0.3 * A.std() * (S + S.T) / 2
    return A, make_matrix(kb, d, gen)


def haar_scores(A: Tensor, B: Tensor, n: int, seed: int, metric: str) -> Tensor:
    """Brute-force null: ``α(A, QBQᵀ)`` for ``n`` Haar ``Q`` (QR of Gaussian, sign fix)."""
    gen = torch.Generator().manual_seed(seed)
    d = A.shape[0]
    out = []
    a = A.reshape(-1)
    if metric == "pearson":
        a = a - a.mean()
    for start in range(0, n, 1000):
        k = min(1000, n - start)
        Q, R = torch.linalg.qr(torch.randn((k, d, d), generator=gen, dtype=F64))
        Q = Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1)).unsqueeze(-2)
        c = (Q @ B @ Q.mT).reshape(k, -1)
        if metric == "pearson":
            c = c - c.mean(dim=1, keepdim=True)
        out.append((c @ a) / (a.norm() * c.norm(dim=1)))
    return torch.cat(out)


def assert_within_3se(null: ex.ExactNull, x: Tensor) -> None:
    """Mean and std of ``null`` within 3 standard errors of the samples ``x``."""
    n = x.numel()
    m, s = float(x.mean()), float(x.std())
    se_mean = s / math.sqrt(n)
    se_std = float(((x - x.mean()) ** 2).std()) / (2 * s * math.sqrt(n))
    assert null.mean is not None and null.std is not None
    assert abs(null.mean - m) <= 3 * se_mean, (null, m, se_mean)
    assert abs(null.std - s) <= 3 * se_std, (null, s, se_std)


# (d, A kind, B kind, samples): every kind on both sides, related pairs, all routes
PEARSON_GRID = [
    (2, "relu", "wishart", 5000),
    (2, "wishart", "rank1", 5000),
    (2, "near_identity", "spiked", 5000),
    (3, "relu_big", "relu", 5000),
    (3, "indefinite", "heavy", 5000),
    (3, "rank1", "square", 5000),
    (4, "relu", "relu", 5000),
    (4, "relu_big", "ones", 5000),
    (4, "near_identity", "heavy", 5000),
    (4, "wishart", "noisy", 5000),
    (4, "lowrank", "indefinite", 5000),
    (5, "spiked", "relu_big", 5000),
    (5, "heavy", "rank1", 5000),
    (8, "relu", "square", 5000),
    (8, "indefinite", "relu", 5000),
    (16, "relu_big", "relu_big", 5000),
    (16, "near_identity", "rank1", 5000),
    (48, "relu", "lowrank", 2000),
    (48, "near_identity", "relu", 2000),
    (128, "relu", "relu_big", 800),
    (128, "near_identity", "spiked", 800),
    (128, "wishart", "noisy", 800),
]


@pytest.mark.parametrize(("d", "ka", "kb", "n"), PEARSON_GRID)
def test_pearson_matches_brute_force_haar(d: int, ka: str, kb: str, n: int) -> None:
    A, B = make_pair(ka, kb, d, seed=100 + d)
    null = ex.haar_null(A, B, "pearson")
    assert null.reason is None
    assert null.method == ("quadrature" if d <= ex.QUADRATURE_MAX_DIM else "series")
    assert null.error_bound is not None and null.error_bound < 0.01
    assert_within_3se(null, haar_scores(A, B, n, seed=7 + d, metric="pearson"))


@pytest.mark.parametrize(
    ("d", "ka", "kb"),
    [
        (2, "relu", "spiked"),
        (3, "indefinite", "relu"),
        (4, "rank1", "heavy"),
        (16, "relu_big", "wishart"),
        (128, "heavy", "relu"),
    ],
)
def test_cosine_matches_brute_force_haar(d: int, ka: str, kb: str) -> None:
    A, B = make_pair(ka, kb, d, seed=200 + d)
    null = ex.haar_null(A, B, "cosine")
    assert null.method == "exact" and null.error_bound == 0.0
    assert_within_3se(null, haar_scores(A, B, 5000 if d <= 16 else 800, seed=9, metric="cosine"))


def test_cosine_weingarten_covariance() -> None:
    """Cov(⟨M1,QBQᵀ⟩, ⟨M2,QBQᵀ⟩) = 2⟨M̃1,M̃2⟩‖B̃‖²/((d−1)(d+2)), the formula the cosine null
    rests on, against 20000 Haar draws at d = 3 (a cross term, not only the variance)."""
    gen = torch.Generator().manual_seed(3)
    d, n = 3, 20000
    M1, M2, B = (make_matrix(k, d, gen) for k in ("wishart", "indefinite", "heavy"))

    def traceless(M: Tensor) -> Tensor:
        return M - torch.trace(M) / d * torch.eye(d, dtype=F64)

    Q, R = torch.linalg.qr(torch.randn((n, d, d), generator=gen, dtype=F64))
    Q = Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1)).unsqueeze(-2)
    C = Q @ B @ Q.mT
    x1 = (C * M1).sum(dim=(1, 2))
    x2 = (C * M2).sum(dim=(1, 2))
    prod = (x1 - x1.mean()) * (x2 - x2.mean())
    want = 2 * (traceless(M1) * traceless(M2)).sum() * traceless(B).pow(2).sum()
    want = float(want) / ((d - 1) * (d + 2))
    assert abs(float(prod.mean()) - want) <= 3 * float(prod.std()) / math.sqrt(n)
    assert abs(float(x1.mean()) - float(torch.trace(M1) * torch.trace(B)) / d) <= 3 * float(
        x1.std()
    ) / math.sqrt(n)


@pytest.mark.parametrize("d", [65, 96])
def test_series_agrees_with_quadrature(monkeypatch: pytest.MonkeyPatch, d: int) -> None:
    """Just above the switch the series and the (much more accurate) quadrature agree to
    well within the series' own error estimate, and to 0.2% of the null std."""
    for ka, kb in (("near_identity", "spiked"), ("relu", "relu_big"), ("rank1", "square")):
        A, B = make_pair(ka, kb, d, seed=300 + d)
        series = ex.haar_null(A, B)
        monkeypatch.setattr(ex, "QUADRATURE_MAX_DIM", 128)
        quad = ex.haar_null(A, B)
        monkeypatch.undo()
        assert (series.method, quad.method) == ("series", "quadrature")
        assert series.std is not None and quad.std is not None and quad.mean is not None
        assert series.error_bound is not None
        for a, b in ((series.mean, quad.mean), (series.std, quad.std)):
            assert abs(a - b) <= min(2e-3, series.error_bound) * quad.std


def test_deterministic_bit_identical() -> None:
    A, B = make_pair("relu", "relu_big", 6, seed=1)
    first = ex.haar_null(A, B)
    ex._RULES.clear()  # the rule is rebuilt from its fixed seed, not from any global state
    torch.manual_seed(12345)
    second = ex.haar_null(A, B)
    assert first == second
    A, B = make_pair("relu", "relu_big", 100, seed=1)
    assert ex.haar_null(A, B) == ex.haar_null(A, B)


def test_batched_equals_single_and_reuses_invariants(monkeypatch: pytest.MonkeyPatch) -> None:
    """A layer's eight relations over six matrices: one invariant computation per matrix,
    and every result bit-identical to its own haar_null call."""
    gen = torch.Generator().manual_seed(5)
    mats = [
        make_matrix(k, 12, gen)
        for k in ("relu", "wishart", "indefinite", "heavy", "relu_big", "lowrank")
    ]
    idx = [(0, 1), (1, 0), (0, 2), (2, 3), (3, 4), (4, 5), (5, 0), (1, 4)]
    pairs = [(mats[i], mats[j]) for i, j in idx]
    calls: list[int] = []
    real = ex.invariants

    def counting(M: Tensor, *, rotated: bool = True) -> ex.Invariants:
        calls.append(id(M))
        return real(M, rotated=rotated)

    monkeypatch.setattr(ex, "invariants", counting)
    for metric in ("pearson", "cosine"):
        calls.clear()
        batched = ex.haar_nulls(pairs, metric)
        assert sorted(calls) == sorted({id(m) for m in mats})
        assert batched == [ex.haar_null(A, B, metric) for A, B in pairs]


def _direct_alignment(A: Tensor, B: Tensor, metric: str) -> float:
    a, b = A.reshape(-1), B.reshape(-1)
    if metric == "pearson":
        a, b = a - a.mean(), b - b.mean()
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize("metric", ["pearson", "cosine"])
def test_rotation_invariant_b_has_zero_spread(metric: str) -> None:
    A, _ = make_pair("relu", "wishart", 7, seed=2)
    B = 2.5 * torch.eye(7, dtype=F64)
    null = ex.haar_null(A, B, metric)
    assert null.std == 0.0 and null.reason == "null has zero spread (rotation-invariant pair)"
    assert null.mean == pytest.approx(_direct_alignment(A, B, metric), rel=1e-12)


def test_cosine_identity_a_has_zero_spread() -> None:
    _, B = make_pair("relu", "heavy", 7, seed=2)
    A = -torch.eye(7, dtype=F64)
    null = ex.haar_null(A, B, "cosine")
    assert null.std == 0.0 and null.reason is not None and "zero spread" in null.reason
    assert null.mean == pytest.approx(_direct_alignment(A, B, "cosine"), rel=1e-12)


def test_undefined_nulls_say_why() -> None:
    gen = torch.Generator().manual_seed(4)
    W = make_matrix("wishart", 5, gen)
    const = torch.full((5, 5), 3.0, dtype=F64)
    zero = torch.zeros((5, 5), dtype=F64)
    bad = W.clone()
    bad[1, 2] = bad[2, 1] = float("nan")
    cases = [
        (const, W, "pearson", "A is constant"),
        (zero, W, "cosine", "A is zero"),
        (W, zero, "pearson", "B is zero"),
        (W, zero, "cosine", "B is zero"),
        (bad, W, "pearson", "non-finite entry in A"),
        (W, bad, "cosine", "non-finite entry in B"),
    ]
    for A, B, metric, why in cases:
        null = ex.haar_null(A, B, metric)
        assert null.mean is None and null.std is None and null.error_bound is None
        assert null.reason is not None and why in null.reason


def test_one_by_one() -> None:
    a, b = torch.tensor([[2.0]], dtype=F64), torch.tensor([[-3.0]], dtype=F64)
    assert ex.haar_null(a, b, "pearson").mean is None
    cos = ex.haar_null(a, b, "cosine")
    assert (cos.mean, cos.std) == (-1.0, 0.0)


def test_constant_b_null_is_that_of_its_orbit() -> None:
    """B = c·11ᵀ: α(A, B) itself is undefined, but QBQᵀ is constant only on a null set of
    Q, so the null exists; it equals the brute-force one and that of any rotated copy."""
    gen = torch.Generator().manual_seed(8)
    A = make_matrix("relu", 4, gen)
    B = torch.full((4, 4), 0.7, dtype=F64)
    null = ex.haar_null(A, B)
    assert null.reason is None
    assert_within_3se(null, haar_scores(A, B, 5000, seed=1, metric="pearson"))
    Q = _orthogonal(4, gen)
    other = ex.haar_null(A, Q @ B @ Q.T)
    assert other.mean == pytest.approx(null.mean, abs=1e-12)
    assert other.std == pytest.approx(null.std, rel=1e-9)


def test_input_errors() -> None:
    A = torch.eye(3, dtype=F64)
    with pytest.raises(UsageError, match="metric"):
        ex.haar_null(A, A, "spearman")
    with pytest.raises(ValueError, match="shapes"):
        ex.haar_null(A, torch.eye(4, dtype=F64))
    with pytest.raises(ValueError, match="symmetric"):
        ex.haar_null(A, torch.triu(torch.ones(3, 3, dtype=F64)))
    ib = ex.invariants(torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=F64)), rotated=False)
    with pytest.raises(ValueError, match="rotated=True"):
        ex.null_from_invariants(ex.invariants(A, rotated=False), ib, "pearson")


def test_known_eigenvalues_give_the_same_invariants() -> None:
    # Z = WᵀW's eigenvalues come from W's SVD; the rotated side then skips its O(d³) product
    g = torch.Generator().manual_seed(5)
    for d in (6, 80):
        W = torch.randn((d // 2, d), generator=g, dtype=F64)
        Z = W.T @ W
        lam = torch.linalg.eigvalsh(Z)
        a, b = ex.invariants(Z, rotated=True), ex.invariants(Z, rotated=True, eigenvalues=lam)
        assert b.dev3 == pytest.approx(a.dev3, rel=1e-10)
        assert b.dev4 == pytest.approx(a.dev4, rel=1e-10)
        A = torch.randn((d, d), generator=g, dtype=F64)
        A = A + A.T
        na = ex.null_from_invariants(ex.invariants(A, rotated=False), a)
        nb = ex.null_from_invariants(ex.invariants(A, rotated=False), b)
        assert nb.mean == pytest.approx(na.mean, rel=1e-10, abs=1e-14)
        assert nb.std == pytest.approx(na.std, rel=1e-10)
    with pytest.raises(ValueError, match="eigenvalues"):
        ex.invariants(torch.eye(3, dtype=F64), eigenvalues=torch.ones(2, dtype=F64))


def test_block_pass_norms_equal_the_dense_formulas() -> None:
    # invariants form ‖M‖², ‖M̃‖², ‖M_c‖² over row blocks; a near-multiple of I keeps its
    # tiny traceless part (no cancellation) and symmetric=True skips only the copy
    g = torch.Generator().manual_seed(9)
    for d in (3, 300, 600):
        X = torch.randn((d, d), generator=g, dtype=F64)
        for M in (X + X.T, 5.0 * torch.eye(d, dtype=F64) + 1e-9 * (X + X.T)):
            inv = ex.invariants(M, rotated=False)
            t, tot = float(M.trace()), float(M.sum())
            dev = M - (t / d) * torch.eye(d, dtype=F64)
            cen = M - tot / d**2
            r = M.sum(dim=1) - tot / d
            assert inv.frob_sq == pytest.approx(float((M * M).sum()), rel=1e-12)
            assert inv.dev_sq == pytest.approx(float((dev * dev).sum()), rel=1e-9)
            assert inv.centred_sq == pytest.approx(float((cen * cen).sum()), rel=1e-12)
            assert inv.row_dev_sq == pytest.approx(float((r * r).sum()), rel=1e-9, abs=1e-30)
            before = M.clone()
            fast = ex.invariants(M, rotated=False, symmetric=True)
            assert torch.equal(M, before)  # its diagonal is shifted in place and restored
            keys = ("frob_sq", "trace", "dev_sq", "centred_sq", "total", "row_dev_sq")
            assert [getattr(fast, k) for k in keys] == [getattr(inv, k) for k in keys]
