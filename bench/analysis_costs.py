"""Micro-benchmarks of the choices behind ``align``'s and ``symmetry``'s analysis steps.

Each line times symtool's way against the plain alternative on the same input, in this
process, and checks that both give the same numbers (docs/performance.md, *Known costs*):

* decompositions of one ``d × d`` float64 matrix: ``torch.linalg.eigh``/``eigvalsh``
  against :func:`symtool.linalg.spectrum` at its three depths (SciPy's LAPACK on the CPU;
  eigenvalues plus ``c = Vᵀ1`` without eigenvectors for the fixed side of a null);
* ``Z_a = WᵀW`` and ``Z_b = WWᵀ``: two ``eigh`` against :func:`symtool.linalg.gram_pair`;
* a layer's eight rotation nulls: one call per relation against one batched call;
* a batch's second moment ``xᵀx`` into a float64 sum: ``addmm`` against BLAS ``syrk``;
* mirroring a Gram sum's lower triangle into a full matrix: two ``tril`` and a transposed
  add over the whole matrix against :func:`symtool.triangles.full_from_lower` (strips);
* Rayleigh quotients ``v_iᵀ M v_i`` on all ``d`` eigenvectors of another matrix (PAH):
  the GEMM ``M V`` against :func:`symtool.align.bases.quotients` (BLAS ``trmm`` on the lower
  triangle at one host thread);
* singular values: ``svdvals`` against ``eigvalsh`` of the Gram matrix (GPT-2 shapes);
* the identical-unit search: the float32 screen on all columns against the partial
  screen on the columns of most relative energy.

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

from symtool.align.bases import quotients
from symtool.align.score import HaarBank, rotation_null, rotation_nulls
from symtool.linalg import add_gram_, gram_pair, singular_values, spectrum
from symtool.symmetry.units import duplicate_search
from symtool.triangles import full_from_lower

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


def _cov(d: int, g: torch.Generator, offset: float = 0.0) -> Tensor:
    X = torch.randn(2 * d, d, generator=g, dtype=torch.float64) * torch.linspace(0.1, 2.0, d)
    return X.T @ X / (2 * d) + offset


def decompositions(d: int) -> list[str]:
    """One matrix at the three depths of :func:`spectrum`, against torch."""
    g = torch.Generator().manual_seed(d)
    M = _cov(d, g, offset=0.3)
    full, part = spectrum(M), spectrum(M, vectors=False, ones=True)
    assert full.ones is not None and part.ones is not None
    dv = float((part.values - full.values).abs().max() / full.values.abs().max())
    dc = float((part.ones - full.ones).abs().max())
    W = torch.randn(d, d, generator=g, dtype=torch.float64)
    _, Zb = gram_pair(W)
    ref = torch.linalg.eigvalsh(W @ W.T)
    dz = float((Zb.values - ref).abs().max() / ref.abs().max())
    t_two = ms(lambda: (spectrum(W.T @ W), spectrum(W @ W.T)), 3)
    t_pair = ms(lambda: gram_pair(W), 3)
    return [
        f"d={d}: torch eigh {ms(lambda: torch.linalg.eigh(M), 3):.0f} ms, spectrum() "
        f"{ms(lambda: spectrum(M), 3):.0f} ms; torch eigvalsh "
        f"{ms(lambda: torch.linalg.eigvalsh(M), 3):.0f} ms, values only "
        f"{ms(lambda: spectrum(M, vectors=False), 3):.0f} ms, values + c = Vᵀ1 "
        f"{ms(lambda: spectrum(M, vectors=False, ones=True), 3):.0f} ms "
        f"(vs eigh: values {dv:.0e} relative, c {dc:.0e})",
        f"d={d}: Z_a and Z_b by two eigh {t_two:.0f} ms, gram_pair {t_pair:.0f} ms "
        f"(Z_b values {dz:.0e} relative)",
    ]


def nulls(d: int, k: int) -> str:
    """A square layer's eight nulls (six relations, two cross terms): per call and batched."""
    g = torch.Generator().manual_seed(d + 1)
    H_a, H_b = spectrum(_cov(d, g)), spectrum(_cov(d, g))
    G_a, G_b, X_a, X_b = (spectrum(_cov(d, g, 0.1), vectors=False, ones=True) for _ in range(4))
    Z_a, Z_b = gram_pair(torch.randn(d, d, generator=g, dtype=torch.float64))
    pairs = [
        (H_a, G_a), (G_a, Z_a), (H_a, Z_a), (H_b, G_b), (G_b, Z_b), (H_b, Z_b),
        (X_a, Z_a), (X_b, Z_b),
    ]  # fmt: skip
    bank = HaarBank(0, k)
    bank.get(d)
    one = lambda: [rotation_null(a, b, 0.5, bank=bank) for a, b in pairs]  # noqa: E731
    batched = lambda: rotation_nulls([(a, b, 0.5) for a, b in pairs], bank=bank)  # noqa: E731
    diff = max(abs(x.mean - y.mean) for x, y in zip(one(), batched(), strict=True))  # type: ignore[operator]
    return (
        f"d={d}: 8 nulls one call each {ms(one):.0f} ms, one batched call {ms(batched):.0f} ms "
        f"(max |Δ mean| {diff:.0e})"
    )


def second_moment(n: int, d: int) -> str:
    """``S += xᵀx`` for one batch: torch ``addmm`` against the lower triangle only, by
    ``syrk`` (SciPy, one thread) and by three of four torch blocks (any thread count)."""
    from symtool import linalg

    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    S1, S2 = torch.zeros(d, d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64)
    S1.addmm_(x.T, x)
    add_gram_(S2, x)
    diff = float((full_from_lower(S2) - S1).abs().max() / S1.abs().max())
    t_addmm, t_syrk = ms(lambda: S1.addmm_(x.T, x), 10), ms(lambda: add_gram_(S2, x), 10)
    linalg.HOST_BLAS = False
    try:
        t_blocks = ms(lambda: add_gram_(S2, x), 10)
    finally:
        linalg.HOST_BLAS = True
    return (
        f"{n}×{d} rows: addmm {t_addmm:.1f} ms, add_gram_ {t_syrk:.1f} ms (syrk at one "
        f"thread, else torch blocks), torch blocks {t_blocks:.1f} ms (relative difference "
        f"{diff:.0e})"
    )


def mirror(d: int) -> str:
    """``tril(S) + tril(S, −1)ᵀ`` against the strip-wise :func:`full_from_lower`."""
    S = torch.randn(d, d, generator=torch.Generator().manual_seed(d), dtype=torch.float64)
    plain = lambda: torch.tril(S) + torch.tril(S, -1).mT  # noqa: E731
    same = torch.equal(plain(), full_from_lower(S))
    return (
        f"d={d}: mirror the lower triangle: whole-matrix tril + transposed add "
        f"{ms(plain):.1f} ms, full_from_lower {ms(lambda: full_from_lower(S)):.1f} ms "
        f"({'identical' if same else 'DIFFERENT'})"
    )


def rayleigh(d: int) -> str:
    """PAH's quotients ``m_i = v_iᵀ M v_i``: ``(M V) ∘ V`` summed against ``quotients``."""
    g = torch.Generator().manual_seed(d + 2)
    M = _cov(d, g)
    V = spectrum(_cov(d, g, 0.1)).vectors
    assert V is not None
    plain = lambda: (M @ V * V).sum(dim=0)  # noqa: E731
    ours = lambda: quotients(M, V)[0]  # noqa: E731
    diff = float((plain() - ours()).abs().max() / plain().abs().max())
    return (
        f"d={d}: Rayleigh quotients on {d} vectors: GEMM M V {ms(plain):.1f} ms, quotients() "
        f"{ms(ours):.1f} ms (relative difference {diff:.0e})"
    )


def singular(shape: tuple[int, int]) -> str:
    """``svdvals`` against ``eigvalsh`` of the float64 Gram matrix."""
    W = (torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * 0.02).double()
    ref = torch.linalg.svdvals(W)
    rel = float(((ref - singular_values(W)).abs() / ref[0]).max())
    return (
        f"{shape[0]}×{shape[1]}: svdvals {ms(lambda: torch.linalg.svdvals(W), 3):.0f} ms, Gram "
        f"+ eigvalsh {ms(lambda: singular_values(W), 3):.0f} ms, max |Δσ|/σ_1 {rel:.0e}"
    )


def dup_costs(n: int = 3072, p: int = 1537) -> list[str]:
    """``duplicate_search`` on ``n`` units of ``p`` numbers (default 3072 × 1537): the screen
    on all columns against the partial screen (default), on random units and on correlated
    ones (rank 8 plus noise, where the partial bound clears few blocks and they are screened
    again)."""
    g = torch.Generator().manual_seed(0)
    rand = torch.randn(n, p, generator=g, dtype=torch.float64) * 0.02
    low = torch.randn(n, 8, generator=g, dtype=torch.float64) @ torch.randn(
        8, p, generator=g, dtype=torch.float64)
    corr = low + 0.3 * torch.randn(n, p, generator=g, dtype=torch.float64)
    lines = []
    for name, x in (("random", rand), ("rank 8 + noise", corr)):
        full = duplicate_search(x, (0.1, 0.01), 0.01, screen=x.shape[1])
        part = duplicate_search(x, (0.1, 0.01), 0.01)
        same = full.at == part.at and full.pairs == part.pairs
        t_full = ms(lambda x=x: duplicate_search(x, (0.1, 0.01), 0.01, screen=x.shape[1]), 3)
        t_part = ms(lambda x=x: duplicate_search(x, (0.1, 0.01), 0.01), 3)
        lines.append(f"duplicate_search {n}×{p} {name}: all columns {t_full:.0f} ms, "
                     f"partial screen {t_part:.0f} ms ({'same pairs' if same else 'DIFFERENT'}; "
                     f"{full.at[0].pairs} pairs below 0.1)")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Print the micro-benchmarks."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--null-samples", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    args = ap.parse_args(argv)
    dims, rows = ((64, 128), 128) if args.quick else ((512, 1024), 1024)
    shapes = ((96, 96), (384, 96)) if args.quick else ((768, 768), (3072, 768))
    set_threads(args.threads)
    print(f"# analysis step costs; {machine()}; torch threads {torch.get_num_threads()}")
    for d in dims:
        for line in decompositions(d):
            print(line)
    for d in dims:
        print(nulls(d, args.null_samples))
    print(second_moment(dims[0], rows))
    print(rayleigh(dims[1]))
    for d in (dims[1], 4 * dims[1] + 512):
        print(mirror(d))
    for shape in shapes:
        print(singular(shape))
    for line in dup_costs(384, 193) if args.quick else dup_costs():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
