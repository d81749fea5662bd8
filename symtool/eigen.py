"""Eigen-solvers that never fail silently: zero rows deflated, fallbacks, a reported shift.

docs/theory.md §7. :func:`symtool.linalg.spectrum` and :func:`symtool.linalg.eigvalsh`
decompose through here. A symmetric matrix with exactly-zero rows (im2col moments of 3×3
kernels on 1×1 maps: 8 of 9 rows are padding) is decomposed on its other rows only, which
is exact (:func:`zero_support`, :func:`embed`). A solver that fails (torch's MKL ``syevd``
did, on 2 threads, for ResNet-18 layer4's ``H_a``) falls back to SciPy's ``evr``, ``evd``,
``ev`` and, last, to a tiny diagonal shift, each reported in a note (:func:`robust`);
when everything fails the error names every attempt.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.linalg
import torch

from symtool.errors import AnalysisError

Tensor = torch.Tensor


def zero_support(M64: Tensor) -> Tensor | None:
    """Indices of the rows of a symmetric matrix that are not exactly zero, ascending.

    ``None`` when no row is zero (nothing to deflate). A zero row of a symmetric matrix is
    a zero column too, so ``e_j`` is an eigenvector with eigenvalue 0 and the rest of the
    spectrum is that of the block on the other rows.
    """
    if M64.shape[0] == 0:
        return None
    nonzero = (M64 != 0).any(dim=1)
    if bool(nonzero.all()):
        return None
    return torch.nonzero(nonzero).flatten()


def embed(
    d: int, support: Tensor, values: Tensor, V: Tensor | None, c: Tensor | None
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The full spectrum from the block's: each zero row ``j`` adds ``(0, e_j)``, sorted.

    The sort is stable, so the order does not depend on anything but the values.
    """
    k = support.shape[0]
    dev = values.device
    zero_rows = torch.ones(d, dtype=torch.bool, device=dev)
    zero_rows[support] = False
    null = torch.nonzero(zero_rows).flatten()
    full = torch.cat([values, values.new_zeros(d - k)])
    order = torch.sort(full, stable=True).indices
    if V is not None:
        W = V.new_zeros(d, d)
        W[support.unsqueeze(1), torch.arange(k, device=dev).unsqueeze(0)] = V
        W[null, torch.arange(k, d, device=dev)] = 1.0
        V = W[:, order]
    if c is not None:
        c = torch.cat([c, c.new_ones(d - k)])[order]
    return full[order], V, c


SHIFT_REL = 1e-12
"""Size of the last-resort diagonal shift of :func:`robust`, relative to ``max|M|``."""


def _attempts(vectors: bool, host: bool) -> list[tuple[str, Callable]]:
    """The solvers :func:`robust` tries, in order: ``(label, function)``.

    First the usual one (SciPy ``syevd`` on the CPU at one thread, else ``torch.linalg``),
    then SciPy's LAPACK drivers ``evr`` (MRRR), ``evd`` (divide and conquer) and ``ev``
    (QL/QR), on a host copy.
    """

    def scipy_driver(driver: str):
        def run(A: Tensor):
            a = A.detach().cpu().numpy()
            if vectors:
                w, V = scipy.linalg.eigh(a, driver=driver, check_finite=False)
                # column-major, as LAPACK wrote it: the products that read V take either order
                return torch.from_numpy(w).to(A.device), torch.from_numpy(V).to(A.device)
            w = scipy.linalg.eigh(a, eigvals_only=True, driver=driver, check_finite=False)
            return torch.from_numpy(w).to(A.device), None

        return run

    def torch_solver(A: Tensor):
        if vectors:
            return torch.linalg.eigh(A)
        return torch.linalg.eigvalsh(A), None

    first = ("scipy evd", scipy_driver("evd")) if host else ("torch", torch_solver)
    rest = [(f"scipy {d}", scipy_driver(d)) for d in ("evr", "evd", "ev")]
    return [first, *(r for r in rest if r[0] != first[0])]


_SOLVER_ERRORS = (RuntimeError, ValueError, np.linalg.LinAlgError)


def robust(
    M64: Tensor, vectors: bool, host: bool
) -> tuple[Tensor, Tensor | None, str | None]:
    """Eigenvalues (and vectors) from the first solver of :func:`_attempts` that succeeds.

    If all fail, the same solvers run once more on ``M + s·diag(1 + j/d)``, ``s`` =
    :data:`SHIFT_REL` ``· max|M|``: distinct diagonal entries break the repeated
    eigenvalues that stall them; every eigenvalue moves by at most ``2s`` (Weyl), which the
    note reports. Raises AnalysisError naming every attempt when nothing works.
    """
    failures: list[str] = []
    attempts = _attempts(vectors, host)
    for i, (label, run) in enumerate(attempts):
        try:
            w, V = run(M64)
        except _SOLVER_ERRORS as exc:
            failures.append(f"{label}: {_first_line(exc)}")
            continue
        if i == 0:
            return w, V, None
        return w, V, f"eigh fell back to {label} ({'; '.join(failures)})"
    d = M64.shape[0]
    scale = float(M64.abs().max()) if M64.numel() else 0.0
    s = SHIFT_REL * scale
    diag = s * (1.0 + torch.arange(d, dtype=torch.float64, device=M64.device) / max(d, 1))
    shifted = M64 + torch.diag(diag)
    for label, run in attempts:
        try:
            w, V = run(shifted)
        except _SOLVER_ERRORS as exc:
            failures.append(f"{label} with shift: {_first_line(exc)}")
            continue
        return w, V, (
            f"eigh needed a diagonal shift of at most {2 * s:.3g} "
            f"({2 * SHIFT_REL:.0e} of max|M|; eigenvalues off by at most that) "
            f"after {'; '.join(failures)}"
        )
    raise AnalysisError("eigh failed with every solver: " + "; ".join(failures))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def robust_eigh(M64: Tensor, host: bool) -> tuple[Tensor, Tensor, str | None]:
    """Eigenpairs of a finite symmetric float64 matrix that never fail silently."""
    w, V, note = robust(M64, True, host)
    assert V is not None
    return w, V, note


def robust_eigvalsh(M64: Tensor, host: bool) -> tuple[Tensor, str | None]:
    """Eigenvalues of a finite symmetric float64 matrix that never fail silently."""
    w, _, note = robust(M64, False, host)
    return w, note


def values_of(M64: Tensor, host: bool) -> Tensor:
    """Eigenvalues (ascending) of a finite symmetric float64 matrix: zero rows deflated
    (:func:`zero_support`), solvers with fallbacks (:func:`robust`)."""
    support = zero_support(M64)
    if support is None:
        return robust_eigvalsh(M64, host)[0]
    values, _ = robust_eigvalsh(M64[support][:, support], host)
    return torch.sort(torch.cat([values, values.new_zeros(M64.shape[0] - support.shape[0])])).values
