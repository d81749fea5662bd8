"""Micro-benchmarks of the per-checkpoint analysis steps (the costs docs/performance.md lists).

* rotation null of one layer side (4 relations, K = 16): ``symtool.linalg.rotated_alignments``
  as it is, against the same numbers computed from a bank holding ``Oᵀ`` row-major and its
  square, with the per-``A`` products ``P_kᵀ a`` and ``O_kᵀ c`` shared across relations;
* one float64 ``eigh`` (for scale), and ``eigh`` + GEMM for the other side's ``Z``;
* ``svdvals`` against ``eigvalsh`` of the float64 Gram matrix (GPT-2 shapes);
* ``units.duplicate_search`` block sizes on a 3072-unit MLP pair.

    python bench/analysis_costs.py [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, median, set_threads

from symtool.linalg import HaarBank, Spectrum, rotated_alignments, spectrum
from symtool.units import duplicate_search

Tensor = torch.Tensor


def ms(fn: Callable[[], Any], n: int = 5) -> float:
    """Median milliseconds of ``n`` calls after one warm-up call."""
    fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return 1e3 * median(out)


def shared_null(A: Spectrum, B: Spectrum, pre: tuple[Tensor, Tensor]) -> Tensor:
    """Pearson null scores from precomputed ``u = P_kᵀ a`` and ``co = O_kᵀ c`` (K × d)."""
    u, co = pre
    lam = B.values
    n = float(A.dim) ** 2
    sum_b = (co * co) @ lam
    sum_a = A.entry_sum
    num = u @ lam - sum_a * sum_b / n
    den = torch.sqrt((A.frob_sq - sum_a**2 / n) * (B.frob_sq - sum_b**2 / n))
    return (num / den).clamp(-1.0, 1.0)


def null_costs(d: int, k: int) -> str:
    """One side of one layer: f-RGA, f-GWA, f-RWA, f-CROSS."""
    g = torch.Generator().manual_seed(0)
    mats = []
    for _ in range(4):
        X = torch.randn(2 * d, d, generator=g, dtype=torch.float64)
        mats.append(spectrum(X.T @ X / (2 * d)))
    H, G, C, Z = mats
    pairs = [(H, G), (G, Z), (H, Z), (C, Z)]
    O = HaarBank(0, k).get(d)
    OT = O.mT.contiguous()  # what the bank would keep, once per dimension and run
    PT = OT * OT

    def now() -> list[Tensor]:
        return [rotated_alignments(a, b, O) for a, b in pairs]

    def proposed() -> list[Tensor]:
        pre: dict[int, tuple[Tensor, Tensor]] = {}
        return [
            shared_null(a, b, pre.setdefault(id(a), (PT @ a.values, OT @ a.ones))) for a, b in pairs
        ]

    diff = max(float((x - y).abs().max()) for x, y in zip(now(), proposed(), strict=True))
    t_now, t_new = ms(now), ms(proposed)
    t_eigh = ms(lambda: spectrum(H.matrix), 3)
    W = torch.randn(d, d, generator=g, dtype=torch.float64)
    t_gemm = ms(lambda: W @ Z.vectors, 3)
    return (
        f"d={d}: 4 nulls now {t_now:.1f} ms, shared/row-major {t_new:.1f} ms "
        f"({t_now / t_new:.1f}x, max |diff| {diff:.1e}); one eigh {t_eigh:.0f} ms, "
        f"one d×d GEMM {t_gemm:.0f} ms"
    )


def svd_costs() -> list[str]:
    """``svdvals`` against ``eigvalsh`` of the Gram matrix, both float64."""
    g = torch.Generator().manual_seed(0)
    out = []
    for shape in ((768, 768), (3072, 768)):
        W = (torch.randn(*shape, generator=g) * 0.02).double()

        def gram(W: Tensor = W) -> Tensor:
            return torch.linalg.eigvalsh(W.T @ W).clamp_min(0).sqrt().flip(0)

        rel = float(((torch.linalg.svdvals(W) - gram()).abs() / torch.linalg.svdvals(W)[0]).max())
        t_svd = ms(lambda W=W: torch.linalg.svdvals(W), 3)
        out.append(
            f"{shape[0]}×{shape[1]}: svdvals {t_svd:.0f} ms, Gram + eigvalsh "
            f"{ms(gram, 3):.0f} ms, max |Δσ|/σ_1 {rel:.0e}"
        )
    return out


def dup_costs() -> str:
    """``duplicate_search`` on 3072 units of 1537 numbers at several block sizes."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3072, 1537, generator=g, dtype=torch.float64) * 0.02
    parts = []
    for b in (2048, 1024, 512):
        t = ms(lambda b=b: duplicate_search(x, (0.1, 0.01), 0.01, block=b), 3)
        parts.append(f"block {b}: {t:.0f} ms")
    return "duplicate_search 3072×1537: " + ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Print the micro-benchmarks."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--null-samples", type=int, default=16)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    print(f"# analysis step costs; {machine()}; threads {torch.get_num_threads()}")
    for d in (512, 1024):
        print(null_costs(d, args.null_samples))
    for line in svd_costs():
        print(line)
    print(dup_costs())
    return 0


if __name__ == "__main__":
    sys.exit(main())
