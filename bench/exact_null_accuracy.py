"""Accuracy and cost of the exact Haar null (symtool/exactnull.py, docs/exact_null.md).

1. For a grid of side lengths and matrix kinds (the factory of tests/test_exactnull.py),
   the exact null's mean and std beside a large brute-force Haar null (Q from the QR of a
   Gaussian matrix with the sign fix), and their differences in units of the Monte Carlo
   standard error (mean: s/√n; std: sd((x − x̄)²)/(2 s √n)).
2. Time of ``haar_null`` (from the matrices, and per pair once invariants are shared)
   against the current 16-sample ``rotation_null`` for d = 512 and 1024.
3. ``--calibrate``: the Pearson approximation error itself, far below Monte Carlo noise.
   The reference averages the exact conditional moments over ``u = Qᵀ1/√d`` with
   randomised QMC (independent scrambles, none of them the production rule's), so its own
   error is known from the spread of the scrambles; against it, the production method
   (quadrature for d ≤ 64) and the series (forced, for every d listed) are measured on all
   factory pairs, with the ratio of the error to the reported ``error_bound``.

    python bench/exact_null_accuracy.py [--quick] [--threads 1] [--device cpu]
    python bench/exact_null_accuracy.py --calibrate [--quick]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from symtool.align import null as ex
from symtool.align.score import HaarBank, rotation_null
from symtool.linalg import spectrum
from tests.align.test_null import KINDS, make_pair

Tensor = torch.Tensor
F64 = torch.float64

PAIRS = [
    ("relu", "relu"),
    ("relu_big", "ones"),
    ("near_identity", "spiked"),
    ("wishart", "noisy"),
    ("rank1", "square"),
    ("indefinite", "heavy"),
    ("lowrank", "relu_big"),
    ("heavy", "rank1"),
]
"""(A kind, B kind): every kind of the factory, on both sides, and related pairs."""

SAMPLES = {
    2: 20000,
    3: 20000,
    4: 20000,
    5: 20000,
    8: 20000,
    16: 20000,
    48: 10000,
    128: 2000,
    512: 500,
}
"""Brute-force samples per side length (more where a sample is cheap)."""


def mc_scores(A: Tensor, B: Tensor, n: int, seed: int, metric: str, device: str) -> Tensor:
    """``α(A, QBQᵀ)`` for ``n`` Haar ``Q``: QR of a Gaussian matrix, columns' signs fixed.

    With ``A = V a Vᵀ`` and ``O = VᵀQ`` (Haar as well), ``⟨A, QBQᵀ⟩ = ⟨diag a, OBOᵀ⟩`` and
    ``1ᵀQBQᵀ1 = cᵀOBOᵀc`` (``c = Vᵀ1``): one QR and one ``O B`` product per sample.
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    d = A.shape[0]
    a, V = torch.linalg.eigh(A.to(device))
    Bd = B.to(device)
    c = V.sum(dim=0)
    n_a = float(A.pow(2).sum())
    n_b = float(B.pow(2).sum())
    s_a = float(A.sum())
    out = []
    chunk = max(1, min(1000, (1 << 24) // (d * d)))
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        G = torch.randn((k, d, d), generator=gen, dtype=F64, device=device)
        Q, R = torch.linalg.qr(G)
        O = Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1)).unsqueeze(-2)
        OB = O @ Bd
        inner = ((OB * O).sum(dim=-1) * a).sum(dim=-1)  # Σ_i a_i (O B Oᵀ)_ii
        Oc = torch.einsum("kij,i->kj", O, c)  # Oᵀc
        s_b = torch.einsum("kj,kjl,kl->k", Oc, Bd.expand(k, d, d), Oc)
        if metric == "pearson":
            m = float(d * d)
            num = inner - s_a * s_b / m
            den = math.sqrt(n_a - s_a * s_a / m) * torch.sqrt(n_b - s_b * s_b / m)
        else:
            num, den = inner, torch.full_like(inner, math.sqrt(n_a * n_b))
        out.append((num / den).cpu())
    return torch.cat(out)


def accuracy(ds: list[int], scale: float, device: str) -> list[dict[str, Any]]:
    """One row per (d, pair, metric): exact null, MC null, differences in MC standard errors."""
    rows = []
    for d in ds:
        n = max(200, int(SAMPLES.get(d, 1000) * scale))
        for i, (ka, kb) in enumerate(PAIRS if d < 512 else PAIRS[:3]):  # QR costs d³
            A, B = make_pair(ka, kb, d, seed=1000 * d + i)
            for metric in ("pearson", "cosine") if i < 2 else ("pearson",):
                null = ex.haar_null(A, B, metric)
                x = mc_scores(A, B, n, seed=17 + i, metric=metric, device=device)
                m, s = float(x.mean()), float(x.std())
                se_m = s / math.sqrt(n)
                se_s = float(((x - x.mean()) ** 2).std()) / (2 * s * math.sqrt(n))
                assert null.mean is not None and null.std is not None
                rows.append(
                    {
                        "d": d,
                        "pair": f"{ka}/{kb}",
                        "metric": metric,
                        "method": null.method,
                        "n": n,
                        "mean": null.mean,
                        "mc_mean": m,
                        "z_mean": (null.mean - m) / se_m,
                        "std": null.std,
                        "mc_std": s,
                        "z_std": (null.std - s) / se_s,
                        "bound": null.error_bound,
                    }
                )
                print(_row(rows[-1]), flush=True)
    return rows


def _row(r: dict[str, Any]) -> str:
    return (
        f"| {r['d']} | {r['pair']} | {r['metric']} | {r['method']} | {r['n']} "
        f"| {r['mean']:.5f} | {r['mc_mean']:.5f} | {r['z_mean']:+.2f} "
        f"| {r['std']:.5f} | {r['mc_std']:.5f} | {r['z_std']:+.2f} | {r['bound']:.1e} |"
    )


def best_ms(fn: Callable[[], Any], n: int) -> float:
    """Best of ``n`` timed calls after one warm-up, in milliseconds."""
    fn()
    best = math.inf
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return 1e3 * best


def rqmc_reference(
    A: Tensor, B: Tensor, points: int, scrambles: int
) -> tuple[float, float, float, float]:
    """Pearson null by randomised QMC over ``u``: mean, std and their standard errors from
    ``scrambles`` independent Sobol scrambles of ``points`` points each (seeds 1000, 1001, …,
    never the production rule's)."""
    d = A.shape[0]
    ia = ex.invariants(A, rotated=False)
    pa = ex._pearson_a(ia)
    base = ex.invariants(B, rotated=False)
    lam = torch.linalg.eigvalsh(0.5 * (B + B.T))
    cl = lam - base.trace / d
    t3, t4 = float((cl**3).sum()), float((cl**4).sum())
    out = []
    for r in range(scrambles):
        x = torch.quasirandom.SobolEngine(d, scramble=True, seed=1000 + r).draw(points, dtype=F64)
        g2 = torch.special.ndtri(x.clamp(2.0**-40, 1 - 2.0**-40)) ** 2
        rule = g2 / g2.sum(dim=1, keepdim=True)
        sph = ex._sphere_averages(d, lam, base.trace, base.frob_sq, base.dev_sq, t3, t4, rule=rule)
        ib = ex.Invariants(**{**vars(base), "dev3": t3, "dev4": t4, "sphere": sph})
        mean, std, _ = ex._pearson_quadrature(pa, ib)
        out.append((mean, std))
    est = torch.tensor(out, dtype=F64)
    se = est.std(dim=0) / math.sqrt(scrambles)
    m = est.mean(dim=0)
    return float(m[0]), float(m[1]), float(se[0]), float(se[1])


def forced_series(A: Tensor, B: Tensor) -> ex.ExactNull:
    """The Pearson series at any ``d`` (production uses it above ``QUADRATURE_MAX_DIM``)."""
    d = A.shape[0]
    ia = ex.invariants(A, rotated=False)
    base = ex.invariants(B, rotated=False)
    dev = 0.5 * (B + B.T) - base.trace / d * torch.eye(d, dtype=F64)
    dev2 = dev @ dev
    ib = ex.Invariants(
        **{**vars(base), "dev3": float((dev * dev2).sum()), "dev4": float((dev2 * dev2).sum())}
    )
    mean, std, err = ex._pearson_series(ex._pearson_a(ia), ib)
    return ex.ExactNull(mean, std, "series", err, None)


def calibrate(ds: list[int], points: int, scrambles: int) -> None:
    """Per (route, d): the largest approximation errors over all factory pairs, in null
    standard deviations, beside the reference's own standard error and the worst ratio of
    error to ``error_bound``."""
    print(
        "| route | d | pairs | max abs(Δmean)/std | max abs(Δstd)/std | reference SE/std "
        "| max error/error_bound |"
    )
    print("|---|---|---|---|---|---|---|")
    specs = [(ka, kb) for ka in KINDS for kb in (*KINDS, "square", "noisy")]
    for d in ds:
        routes = ["series"] + (["production"] if d <= ex.QUADRATURE_MAX_DIM else [])
        res: dict[str, list[tuple[float, float, float]]] = {r: [] for r in routes}
        worst_se = 0.0
        for i, (ka, kb) in enumerate(specs):
            if d > 64 and i % 3:  # a third of the pairs where the reference costs most
                continue
            A, B = make_pair(ka, kb, d, seed=5000 + 97 * d + i)
            mu, sd, se_m, se_s = rqmc_reference(A, B, points, scrambles)
            worst_se = max(worst_se, se_m / sd, se_s / sd)
            for route in routes:
                null = forced_series(A, B) if route == "series" else ex.haar_null(A, B)
                assert null.mean is not None and null.std is not None
                em, es = abs(null.mean - mu) / sd, abs(null.std - sd) / sd
                res[route].append((em, es, max(em, es) / (null.error_bound or math.inf)))
        for route in routes:
            name = "series" if route == "series" else "quadrature"
            rows = res[route]
            print(
                f"| {name} | {d} | {len(rows)} | {max(r[0] for r in rows):.1e} "
                f"| {max(r[1] for r in rows):.1e} | {worst_se:.0e} "
                f"| {max(r[2] for r in rows):.2f} |",
                flush=True,
            )


def _timings(d: int, repeats: int) -> list[float]:
    """Milliseconds: haar_null from the matrices, per pair from shared invariants,
    rotation_null from the matrices (spectra, a fresh 16-sample bank), per pair."""
    A, B = make_pair("relu", "relu_big", d, seed=d)
    ia = ex.invariants(A, rotated=False)
    ib = ex.invariants(B, rotated=True)
    sa = spectrum(A, vectors=False, ones=True)
    sb = spectrum(B, vectors=False)
    bank = HaarBank(seed=0, samples=16)

    def rotation_from_matrices() -> None:
        fresh_a = spectrum(A, vectors=False, ones=True)
        fresh_b = spectrum(B, vectors=False)
        rotation_null(fresh_a, fresh_b, None, bank=HaarBank(seed=0, samples=16))

    return [
        best_ms(lambda: ex.haar_null(A, B), repeats),
        best_ms(lambda: ex.null_from_invariants(ia, ib), repeats),
        best_ms(rotation_from_matrices, max(1, repeats // 2)),
        best_ms(lambda: rotation_null(sa, sb, None, bank=bank), repeats),
    ]


def timing(ds: list[int], repeats: int) -> None:
    """haar_null against rotation_null (16 samples) on one Pearson pair of side ``d``."""
    print(
        "\n| d | haar_null, from matrices | haar_null, per pair (shared invariants) "
        "| rotation_null, from matrices (spectra + 16 Haar draws) "
        "| rotation_null, per pair (spectra and bank warm) |"
    )
    print("|---|---|---|---|---|")
    for d in ds:
        t = _timings(d, repeats)
        print(f"| {d} | {t[0]:.1f} ms | {t[1]:.3f} ms | {t[2]:.0f} ms | {t[3]:.1f} ms |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small grid, 1/10 of the samples")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--device", default="cpu", help="device of the brute-force sampler")
    p.add_argument("--no-timing", action="store_true")
    p.add_argument("--no-accuracy", action="store_true")
    p.add_argument("--calibrate", action="store_true", help="approximation error only")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.calibrate:
        cal = [4, 16, 65] if args.quick else [2, 3, 4, 5, 8, 16, 32, 48, 64, 65, 96, 128, 256]
        calibrate(cal, 1 << (12 if args.quick else 15), 4)
        return
    ds = [2, 4, 16, 128] if args.quick else [2, 3, 4, 5, 8, 16, 48, 128, 512]
    if not args.no_accuracy:
        print(
            "| d | A/B | metric | method | MC n | exact mean | MC mean | Δ/SE "
            "| exact std | MC std | Δ/SE | error_bound |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        rows = accuracy(ds, 0.1 if args.quick else 1.0, args.device)
        zm = max(abs(r["z_mean"]) for r in rows)
        zs = max(abs(r["z_std"]) for r in rows)
        print(f"\n{len(rows)} rows; max |Δmean|/SE = {zm:.2f}, max |Δstd|/SE = {zs:.2f}")
    if not args.no_timing:
        timing([256] if args.quick else [512, 1024], 2 if args.quick else 5)


if __name__ == "__main__":
    main()
