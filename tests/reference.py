"""Brute-force references shared by several test files.

Each function here is the obviously correct (slow, dense, textbook) way to compute
something symtool computes fast, or a sampler the tests draw their planted data from.
Only what at least two test files use lives here; a reference one file needs stays there.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from symtool.align.moments import LayerMatrices
from symtool.linalg import Spectrum, kept_support
from symtool.stability import stability_function

F64 = torch.float64
Tensor = torch.Tensor


# ------------------------------------------------------------------ random data


def gen(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def random_orthogonal(d: int, seed: int) -> Tensor:
    """The ``Q`` of a ``d × d`` float64 Gaussian matrix's QR (orthogonal, not sign-fixed Haar)."""
    return torch.linalg.qr(torch.randn(d, d, generator=gen(seed), dtype=F64))[0]


def psd(d: int, seed: int, rank: int | None = None) -> Tensor:
    """``X Xᵀ`` of a ``d × rank`` float64 Gaussian ``X`` (positive semi-definite, that rank)."""
    X = torch.randn(d, rank or d, generator=gen(seed), dtype=F64)
    return X @ X.T


def with_spectrum(values: Tensor, seed: int) -> Tensor:
    """The symmetric ``Q diag(values) Qᵀ``, ``Q = random_orthogonal(len(values), seed)``."""
    Q = random_orthogonal(values.shape[0], seed)
    return (Q * values) @ Q.T


# ------------------------------------------------------------------ alignment by numpy


def np_pearson(A: np.ndarray, B: np.ndarray) -> float:
    """Pearson correlation of two matrices' entries."""
    return float(np.corrcoef(A.ravel(), B.ravel())[0, 1])


def np_cosine(A: np.ndarray, B: np.ndarray) -> float:
    """Cosine of two matrices in the Frobenius inner product."""
    return float((A * B).sum() / (np.linalg.norm(A) * np.linalg.norm(B)))


def np_alignment(A: np.ndarray, B: np.ndarray, metric: str) -> float:
    """``α(A, B)`` by numpy: ``pearson`` or ``cosine``."""
    return {"pearson": np_pearson, "cosine": np_cosine}[metric](A, B)


# ------------------------------------------------------------------ second moments


def second_moment(rows: Tensor, recipe: str) -> tuple[Tensor, int]:
    """Second moment of stored rows by the textbook sum of outer products.

    ``raw``: ``Σ r rᵀ / n``. ``paper``: rows normalised to unit length (zero rows skipped),
    centred, ``Σ (r̂ − m)(r̂ − m)ᵀ / n_kept``. Returns the matrix and the skipped-row count.
    """
    if recipe == "raw":
        return sum(torch.outer(r, r) for r in rows) / rows.shape[0], 0
    norms = rows.norm(dim=1)
    kept = [r / n for r, n in zip(rows, norms, strict=True) if n > 0]
    mean = sum(kept) / len(kept)
    return sum(torch.outer(r - mean, r - mean) for r in kept) / len(kept), int((norms == 0).sum())


def layer_from_activations(W: Tensor, X: Tensor, Y: Tensor) -> LayerMatrices:
    """Raw moments of one linear layer ``h_b = W h_a`` from explicit input rows ``X`` and
    output-gradient rows ``Y`` (so ``g_a = Y W``), by dense products."""
    n = X.shape[0]
    h_b, g_a = X @ W.T, Y @ W
    mats = {
        "H_a": X.T @ X / n,
        "G_a": g_a.T @ g_a / n,
        "H_b": h_b.T @ h_b / n,
        "G_b": Y.T @ Y / n,
    }
    return LayerMatrices(
        W=W,
        **mats,
        C_a=X.T @ g_a / n,
        C_b=Y.T @ h_b / n,
        n=n,
        skipped_rows={"h_a": 0, "h_b": 0, "g_a": 0, "g_b": 0},
        recipe="raw",
        raw=dict(mats),
    )


def rel_err(a: Tensor, b: Tensor) -> float:
    """``‖a − b‖ / ‖b‖`` (Frobenius), ``b`` the reference."""
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


# ------------------------------------------------------------------ records


def float_leaves(obj: object) -> list[float]:
    """Every float inside a nested record (dataclasses, tuples, lists)."""
    out: list[float] = []
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            out += float_leaves(getattr(obj, f.name))
    elif isinstance(obj, tuple | list):
        for x in obj:
            out += float_leaves(x)
    elif isinstance(obj, float):
        out.append(obj)
    return out


def finite_everywhere(obj: object) -> bool:
    """No NaN or inf anywhere in a nested record."""
    return all(math.isfinite(x) for x in float_leaves(obj))


def assert_plain_record(obj: object, path: str = "report") -> None:
    """Every record field is None, bool, int, finite float, str, tuple/list or a record."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            assert_plain_record(getattr(obj, f.name), f"{path}.{f.name}")
    elif isinstance(obj, tuple | list):
        for i, v in enumerate(obj):
            assert_plain_record(v, f"{path}[{i}]")
    elif isinstance(obj, float):
        assert type(obj) is float and math.isfinite(obj), path
    else:
        assert obj is None or type(obj) in (bool, int, str), (path, type(obj))


# ------------------------------------------------ references moved out of the package


def matrix_power(s: Spectrum, p: float, *, floor: float = 1e-8) -> Tensor:
    """Fractional power ``Σ_{i kept} z_i^p v_i v_iᵀ`` of a PSD matrix on its kept support.

    Kept eigenpairs have ``z_i > floor · max z`` (docs/theory.md §4, see
    :func:`kept_support`); the rest, including any negative eigenvalues, contribute zero, so
    negative ``p`` is a pseudo-inverse power.

    Args:
        s: the matrix's spectrum.
        p: the exponent (any real).
        floor: relative eigenvalue floor ``ε``.

    Returns:
        The dense ``d × d`` float64 matrix (all zeros when no eigenvalue is positive).
    """
    z = s.values
    V = s.vectors
    keep = kept_support(z, floor)
    zp = torch.zeros_like(z)
    zp[keep] = z[keep] ** p
    zp = zp[z.shape[0] - V.shape[1] :]  # a range-only spectrum holds the last columns
    return (V * zp) @ V.T


def in_stability_region(z: complex, stages: int, tol: float = 1e-12) -> bool:
    """Whether ``|R_s(z)| ≤ 1`` (up to ``tol``)."""
    return bool(abs(stability_function(z, stages)) <= 1.0 + tol)
