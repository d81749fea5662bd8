"""PAH: power-law exponents ``M ~ Z^κ`` between a layer's matrices, and the nearest phase.

docs/theory.md §4 (Rayleigh-quotient fit, bootstrap interval, eigenbasis agreement,
power scan, consistency shifts, phase table) and section 7 (float64; undefined numbers are
``None`` with a reason).

Everything here reuses one eigendecomposition of the reference matrix (a
:class:`symtool.linalg.Spectrum`): the fit needs the Rayleigh quotients
``m_i = v_iᵀ M v_i`` (one GEMM), and the power scan ``α(M, Z^k)`` is O(d) per exponent
``k`` from ``⟨M, Z^k⟩ = Σ z_i^k m_i``, ``‖Z^k‖_F² = Σ z_i^{2k}`` and
``1ᵀ Z^k 1 = Σ z_i^k (v_iᵀ 1)²``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from symtool.align.bases import kept_product, product_quotients, quotients, symmetric64
from symtool.align.crh import LayerSpectra, layer_spectra
from symtool.align.moments import LayerMatrices
from symtool.align.score import UNDEFINED_REL, check_metric
from symtool.errors import UsageError
from symtool.linalg import _CLUSTER_REL, Spectrum, kept_support

Tensor = torch.Tensor

FITS: tuple[tuple[str, str, str], ...] = (
    ("H_a", "Z_a", "a"),
    ("G_a", "Z_a", "a"),
    ("G_a", "H_a", "a"),
    ("H_b", "Z_b", "b"),
    ("G_b", "Z_b", "b"),
    ("G_b", "H_b", "b"),
)
"""``(target M, reference Z, side)`` of the six fits ``M ~ Z^κ``, in report order."""

PHASES: tuple[tuple[str, tuple[float, float, float, float]], ...] = (
    ("RWA/GWA", (1.0, 2.0, 2.0, 1.0)),
    ("RWA/RGA", (1.0, 3.0, 2.0, 2.0)),
    ("GWA/RWA", (0.0, 1.0, 1.0, 0.0)),
    ("GWA/RGA", (-1.0, 1.0, 0.0, 0.0)),
    ("RGA/RWA", (0.0, 0.0, 1.0, -1.0)),
    ("RGA/GWA", (2.0, 2.0, 3.0, 1.0)),
)
"""docs/theory.md §4 phase table: ``"<a-side holds>/<b-side holds>"`` and the exponents
of ``(H_a, G_a, H_b, G_b)`` against ``Z_a`` (a side) or ``Z_b`` (b side)."""

SCAN_GRID: tuple[float, ...] = tuple(round(-1.0 + 0.05 * i, 2) for i in range(81))
"""Power-scan exponents ``k ∈ [-1, 3]`` on a 0.05 grid."""

_MIN_PAIRS = 3
_FLAT_LOG_STD = 1e-9


@dataclass(frozen=True)
class PowerFit:
    """One fit ``M ~ Z^κ`` (docs/theory.md §4).

    Attributes:
        formula: the fit written out, e.g. ``"H_a ~ Z_a^κ"``.
        target: name of ``M``.
        reference: name of ``Z`` (whose eigenbasis is used).
        side: ``"a"`` or ``"b"``.
        kappa: least-squares slope of ``log m_i`` on ``log z_i``.
        intercept: the fit's intercept ``c`` (``m_i ≈ e^c z_i^κ``).
        r2: coefficient of determination of that fit.
        ci_low, ci_high: bootstrap 95% percentile interval of ``kappa`` over eigenpairs.
        n_kept: eigenpairs kept by the floor (``z_i > ε max z`` and ``m_i > ε max m``).
        n_total: eigenpairs in all (``d``).
        agreement: eigenbasis agreement ``Σ m_i² / ‖M‖_F²`` (1 = ``M`` diagonal in ``Z``'s
            basis; the power law means something only when this is high), made
            basis-independent on degenerate eigenspaces of ``Z`` (numerical null space
            included) by the eigenspace rule of :func:`_agreement`: the share of ``‖M‖_F²``
            that is a function of ``Z``.
        agreement_blocks: the block rule: the share of ``‖M‖_F²`` in the diagonal blocks
            ``V_Eᵀ M V_E`` of ``Z``'s eigenspaces (off-diagonal parts of a block included;
            1 = ``M`` commutes with ``Z``). ``≥ agreement``; equal on a non-degenerate
            spectrum. Before this field existed, ``agreement`` held this number for the null
            space.
        kappa_star: ``argmax_k α(M, Z^k)`` over :data:`SCAN_GRID` (first maximum on ties).
        alpha_star: ``α(M, Z^κ*)``.
        reason: why a field is ``None`` (or the fit failed), else ``None``.
    """

    formula: str
    target: str
    reference: str
    side: str
    kappa: float | None
    intercept: float | None
    r2: float | None
    ci_low: float | None
    ci_high: float | None
    n_kept: int
    n_total: int
    agreement: float | None
    agreement_blocks: float | None
    kappa_star: float | None
    alpha_star: float | None
    reason: str | None = None


@dataclass(frozen=True)
class Consistency:
    """Exponent shifts that equal 1 for raw moments (docs/theory.md §1 and 4).

    Attributes:
        h_shift: ``κ(H_b, Z_b) − κ(H_a, Z_a)``.
        g_shift: ``κ(G_a, Z_a) − κ(G_b, Z_b)``.
        reason: why a shift is ``None``, else ``None``.
    """

    h_shift: float | None
    g_shift: float | None
    reason: str | None = None


@dataclass(frozen=True)
class Phase:
    """The phase-table row nearest to the fitted exponents.

    Attributes:
        name: ``"<a-side>/<b-side>"``, e.g. ``"RWA/GWA"``.
        distance: Euclidean distance from ``(κ(H_a,Z_a), κ(G_a,Z_a), κ(H_b,Z_b),
            κ(G_b,Z_b))`` to that row.
        exponents: the row's exponents ``(H_a, G_a, H_b, G_b)``.
        reason: why ``name`` is ``None``, else ``None``.
    """

    name: str | None
    distance: float | None
    exponents: tuple[float, float, float, float] | None
    reason: str | None = None


@dataclass(frozen=True)
class LayerPowers:
    """The PAH result of one layer.

    Attributes:
        fits: the six fits, in the order of :data:`FITS`.
        consistency: the two exponent shifts.
        phase: the nearest phase.
        floor: relative floor ``ε`` used.
        bootstrap: bootstrap resamples per fit.
        seed: bootstrap seed.
        metric: alignment metric of the power scan.
        recipe: the moment recipe the matrices came from.
    """

    fits: tuple[PowerFit, ...]
    consistency: Consistency
    phase: Phase
    floor: float
    bootstrap: int
    seed: int
    metric: str
    recipe: str


def _failed(target: str, reference: str, side: str, n_total: int, why: str) -> PowerFit:
    return PowerFit(
        f"{target} ~ {reference}^κ",
        target,
        reference,
        side,
        None,
        None,
        None,
        None,
        None,
        0,
        n_total,
        None,
        None,
        None,
        None,
        why,
    )


def scan_alignments(
    M: Tensor,
    Z: Spectrum,
    ks: tuple[float, ...] = SCAN_GRID,
    *,
    floor: float = 1e-8,
    metric: str = "pearson",
    rayleigh: Tensor | None = None,
    norm2: float | None = None,
) -> tuple[float | None, ...]:
    """``α(M, Z^k)`` for every ``k``, O(d) per ``k`` from ``Z``'s spectrum.

    ``Z^k`` is taken on the kept support ``z_i > floor · max z`` (zero elsewhere).

    Args:
        M: the target matrix (symmetric, float64).
        Z: spectrum of the reference.
        ks: exponents.
        floor: relative eigenvalue floor ``ε``.
        metric: ``"pearson"`` or ``"cosine"``.
        rayleigh: precomputed ``m_i = v_iᵀ M v_i``, for all ``d`` eigenvectors or for the
            kept ones only (computed here, for the kept ones, if ``None``).
        norm2: ``‖M‖_F²`` when known.

    Returns:
        One score per ``k``, ``None`` where undefined.
    """
    check_metric(metric)
    z = Z.values
    keep = kept_support(z, floor)
    if not bool(keep.any()):
        return tuple(None for _ in ks)
    zmax = float(z.max())
    M64 = M.to(dtype=torch.float64, device=z.device)
    if rayleigh is None:
        Vk = _kept_vectors(Z, int(keep.sum()))
        rayleigh = quotients(M64, Vk)[0]
    mk = rayleigh[keep] if rayleigh.shape[0] == z.shape[0] else rayleigh
    zr = z[keep] / zmax  # α is invariant to scaling Z^k, so normalise against overflow
    ck2 = Z.ones[keep] ** 2
    k = torch.tensor(ks, dtype=torch.float64, device=z.device).unsqueeze(1)
    zk = zr.unsqueeze(0) ** k  # (len(ks), n_kept)
    inner = zk @ mk
    norm_b2 = (zk * zk).sum(dim=1)
    norm_a2 = _frob2(M64) if norm2 is None else norm2
    if metric == "pearson":
        n = float(Z.dim) ** 2
        sum_a = float(M64.sum())
        sum_b = zk @ ck2
        num = inner - sum_a * sum_b / n
        den_a2 = norm_a2 - sum_a * sum_a / n
        den_b2 = norm_b2 - sum_b * sum_b / n
    else:
        num = inner
        den_a2 = norm_a2
        den_b2 = norm_b2
    tol = UNDEFINED_REL**2
    out: list[float | None] = []
    a_ok = den_a2 > tol * norm_a2 and den_a2 > 0
    for i in range(len(ks)):
        db2 = float(den_b2[i])
        if not a_ok or not db2 > tol * float(norm_b2[i]) or not math.isfinite(db2):
            out.append(None)
            continue
        val = float(num[i]) / math.sqrt(den_a2 * db2)
        out.append(min(1.0, max(-1.0, val)) if math.isfinite(val) else None)
    return tuple(out)


def _frob2(M: Tensor) -> float:
    """``‖M‖_F²`` by one dot product over the entries (no ``d × d`` temporary)."""
    return float(torch.tensordot(M, M, dims=M.ndim))


def _slopes(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Least-squares slopes along the last axis and the ``Σ(x − x̄)²`` they divide by."""
    xc = x - x.mean(dim=-1, keepdim=True)
    yc = y - y.mean(dim=-1, keepdim=True)
    sxx = (xc * xc).sum(dim=-1)
    sxy = (xc * yc).sum(dim=-1)
    return sxy / torch.where(sxx > 0, sxx, torch.ones_like(sxx)), sxx


def _clusters(values: Tensor, kept: Tensor) -> list[Tensor]:
    """Index groups of the kept eigenvalues that form one eigenspace of ``Z``, singletons
    left out.

    A cluster is a run of ascending kept eigenvalues within ``1e-9 · max|z|`` of its first
    one: the tolerance and cut of :func:`symtool.linalg._canonical_ones`, so the agreement
    and the c-mass rule see the same eigenspaces.
    """
    idx = torch.nonzero(kept).flatten()
    if idx.numel() < 2:
        return []
    z = values[idx]
    tol = _CLUSTER_REL * float(values.abs().max())
    if not bool((z.diff() <= tol).any()):
        return []
    vals = z.tolist()
    groups: list[Tensor] = []
    i = 0
    while i < len(vals):
        j = i + 1
        while j < len(vals) and vals[j] - vals[i] <= tol:
            j += 1
        if j - i > 1:
            groups.append(idx[i:j])
        i = j
    return groups


def _kept_vectors(Z: Spectrum, n_kept: int) -> Tensor:
    """The eigenvectors of ``Z``'s ``n_kept`` largest eigenvalues (kept ones are a suffix)."""
    V = Z.vectors
    if V is None or V.shape[1] < n_kept:
        raise UsageError("the reference spectrum lacks the eigenvectors of its kept eigenvalues")
    return V[:, V.shape[1] - n_kept :]


def _agreement(
    M: Tensor, Z: Spectrum, floor: float, norm2: float, factor: Tensor | None = None
) -> tuple[Tensor, float | None, float | None]:
    """Rayleigh quotients ``m`` of ``M`` on ``Z``'s **kept** eigenvectors and the two
    eigenbasis agreements (docs/theory.md §4 step 5, docs/metrics.md).

    The definition ``Σ_i m_i² / ‖M‖_F²`` depends on the basis inside an eigenspace ``E`` of
    ``Z`` of dimension ``k > 1`` (the numerical null space ``z_i ≤ ε·max z`` is one), where
    eigenvectors are decided by round-off. Over the orthonormal bases of ``E``,
    ``Σ_{i∈E} m_i²`` ranges from ``(tr V_Eᵀ M V_E)² / k`` (the basis in which that block's
    diagonal is constant) to ``‖V_Eᵀ M V_E‖_F²`` (the block's own eigenbasis). Each end is
    basis-independent and ``m_i²`` itself when ``k = 1``:

    * ``agreement`` takes the low end, ``Σ_E (tr P_E M)² / dim E``: the squared norm of
      ``M``'s orthogonal projection onto the functions ``f(Z)`` of ``Z`` (1 iff
      ``M = f(Z)``, which a power law needs), and the definition itself on a non-degenerate
      spectrum;
    * ``agreement_blocks`` takes the high end, ``Σ_E ‖P_E M P_E‖_F²`` (1 iff ``M`` commutes
      with ``Z``); for the null space this is the rule ``agreement`` followed before.

    Only the kept vectors ``V₊`` are read (:mod:`symtool.align.bases`): the null space's
    trace is ``tr M − Σ₊ m_i`` and its block ``‖V₀ᵀMV₀‖² = ‖M‖² − 2‖MV₊‖² + ‖V₊ᵀMV₊‖²``
    (directly ``V₀ᵀ(MV₀)`` when ``Z`` has all its vectors and the null space is the
    smaller part). One product of ``M`` with ``V₊`` (:func:`symtool.align.bases.quotients`:
    through ``M``'s row factor when it has a short one, else half a GEMM by ``trmm`` on the
    host, unless the complement rule needs all of ``M V₊``) gives ``m`` and the blocks.
    """
    d = Z.dim
    kept = kept_support(Z.values, floor)
    n_kept = int(kept.sum())
    n_null = d - n_kept
    off = d - n_kept  # kept eigenvalues are the last n_kept (ascending)
    V = _kept_vectors(Z, n_kept)
    full = Z.vectors is not None and Z.vectors.shape[1] == d
    by_complement = n_null > 0 and not (full and n_kept >= n_null)
    if by_complement:  # the complement's block below reads the whole product M V₊
        MV = kept_product(M, V, factor)
        m, block_of = product_quotients(MV, V)
    else:
        m, block_of = quotients(M, V, factor)
    if norm2 <= 0:
        return m, None, None
    single = torch.ones(n_kept, dtype=torch.bool, device=m.device)
    low = high = 0.0
    for E in _clusters(Z.values, kept):
        E = E - off
        single[E] = False
        low += float(m[E].sum()) ** 2 / E.numel()
        block = block_of(E)
        high += float((block * block).sum())
    ms = m[single]
    low += float((ms * ms).sum())
    high += float((ms * ms).sum())
    if n_null:
        if not by_complement:
            assert Z.vectors is not None
            V0 = Z.vectors[:, :n_null]
            block = quotients(M, V0, factor)[1](torch.arange(n_null, device=V0.device))
            low += float(block.diagonal().sum()) ** 2 / n_null
            block_sq = float((block * block).sum())
        else:
            low += (float(M.diagonal().sum()) - float(m.sum())) ** 2 / n_null
            inner = V.T @ MV
            block_sq = norm2 - 2.0 * float((MV * MV).sum()) + float((inner * inner).sum())
        high += max(block_sq, 0.0)
    return m, low / norm2, high / norm2


def fit_power(
    M: Spectrum | Tensor,
    Z: Spectrum,
    *,
    target: str = "M",
    reference: str = "Z",
    side: str = "",
    floor: float = 1e-8,
    bootstrap: int = 200,
    seed: int = 0,
    metric: str = "pearson",
    factor: Tensor | None = None,
    symmetric: bool = False,
) -> PowerFit:
    """Fit ``M ~ Z^κ`` in ``Z``'s eigenbasis (docs/theory.md §4, steps 1-6).

    Only ``Z``'s kept eigenpairs are read (``z_i > ε·max z``; :func:`_agreement`), and a
    pair is kept when also ``m_i > ε·max m`` over those: a rule that, unlike a maximum over
    all ``d`` quotients, does not depend on the basis chosen in ``Z``'s null space.

    Args:
        M: the target: its float64 symmetric matrix, or a spectrum (only its matrix is
            used).
        Z: spectrum of the reference (with the eigenvectors of its kept eigenvalues at
            least: :mod:`symtool.align.bases`).
        target: name of ``M`` for the record.
        reference: name of ``Z`` for the record.
        side: ``"a"`` or ``"b"`` for the record.
        floor: relative floor ``ε`` (``--pah-floor``, default 1e-8).
        bootstrap: resamples over eigenpairs for the 95% interval (0 disables it).
        seed: seed of the bootstrap generator (each fit uses its own generator).
        metric: alignment metric of the power scan.
        factor: ``Y`` with ``M = YᵀY`` (rows fewer than ``d``), for cheaper products.
        symmetric: ``M`` is exactly symmetric float64 already (``layer_spectra``'s).

    Returns:
        :class:`PowerFit`; undefined numbers are ``None`` with a reason.
    """
    if not (math.isfinite(floor) and 0.0 <= floor < 1.0):
        raise UsageError(f"PAH floor must be in [0, 1), got {floor}")
    if bootstrap < 0:
        raise UsageError(f"bootstrap resamples must be ≥ 0, got {bootstrap}")
    d = Z.dim
    if isinstance(M, Spectrum):
        Mm = M.matrix
    else:
        Mm = M if symmetric and M.dtype == torch.float64 else symmetric64(M)
    if Mm.shape != (d, d):
        raise UsageError(f"{target} is {tuple(Mm.shape)} but {reference} is {d}×{d}")
    z = Z.values
    norm2 = _frob2(Mm)
    m, agreement, agreement_blocks = _agreement(Mm, Z, floor, norm2, factor)
    scan = scan_alignments(Mm, Z, floor=floor, metric=metric, rayleigh=m, norm2=norm2)
    kappa_star = alpha_star = None
    best = [(a, i) for i, a in enumerate(scan) if a is not None]
    if best:
        alpha_star, i_best = max(best, key=lambda t: (t[0], -t[1]))
        kappa_star = SCAN_GRID[i_best]
    base = dict(
        formula=f"{target} ~ {reference}^κ",
        target=target,
        reference=reference,
        side=side,
        n_total=d,
        agreement=agreement,
        agreement_blocks=agreement_blocks,
        kappa_star=kappa_star,
        alpha_star=alpha_star,
    )
    none = dict(kappa=None, intercept=None, r2=None, ci_low=None, ci_high=None)

    z_keep = kept_support(z, floor)
    m_keep = kept_support(m, floor)  # m: the kept eigenvectors' quotients only
    if not bool(z_keep.any()):
        return PowerFit(**base, **none, n_kept=0, reason=f"{reference} has no positive eigenvalue")
    if not bool(m_keep.any()):
        return PowerFit(
            **base,
            **none,
            n_kept=0,
            reason=f"{target} has no positive Rayleigh quotient in {reference}'s basis",
        )
    n = int(m_keep.sum())
    if n < _MIN_PAIRS:
        return PowerFit(
            **base, **none, n_kept=n, reason=f"only {n} eigenpairs kept (need {_MIN_PAIRS})"
        )
    x = torch.log(z[z_keep][m_keep])
    y = torch.log(m[m_keep])
    slope, sxx = _slopes(x, y)
    if float(sxx) <= n * _FLAT_LOG_STD**2:
        return PowerFit(
            **base,
            **none,
            n_kept=n,
            reason=f"{reference}'s kept spectrum is flat, so κ is undefined",
        )
    kappa = float(slope)
    intercept = float(y.mean() - slope * x.mean())
    resid = y - (slope * x + intercept)
    ss_res = float((resid * resid).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    reason = None
    if ss_tot <= n * _FLAT_LOG_STD**2:
        r2 = None
        reason = f"{target}'s kept Rayleigh quotients are constant, so R² is undefined"
    else:
        r2 = 1.0 - ss_res / ss_tot
    ci_low = ci_high = None
    if bootstrap > 0:
        gen = torch.Generator(device="cpu")
        gen.manual_seed(int(seed))
        idx = torch.randint(0, n, (bootstrap, n), generator=gen).to(x.device)
        bs, bsxx = _slopes(x[idx], y[idx])
        bs = bs[bsxx > n * _FLAT_LOG_STD**2]
        if bs.numel() >= 2:
            q = torch.quantile(bs, torch.tensor([0.025, 0.975], dtype=bs.dtype, device=bs.device))
            ci_low, ci_high = float(q[0]), float(q[1])
        elif reason is None:
            reason = "too few non-degenerate bootstrap resamples for an interval"
    return PowerFit(
        **base,
        kappa=kappa,
        intercept=intercept,
        r2=r2,
        ci_low=ci_low,
        ci_high=ci_high,
        n_kept=n,
        reason=reason,
    )


def consistency(fits: tuple[PowerFit, ...]) -> Consistency:
    """Shifts ``κ(H_b,Z_b) − κ(H_a,Z_a)`` and ``κ(G_a,Z_a) − κ(G_b,Z_b)`` from a fit list."""
    k = _kappas(fits)
    why = []
    h = g = None
    if k["H_b"] is not None and k["H_a"] is not None:
        h = k["H_b"] - k["H_a"]
    else:
        why.append("κ(H_a, Z_a) or κ(H_b, Z_b) undefined")
    if k["G_a"] is not None and k["G_b"] is not None:
        g = k["G_a"] - k["G_b"]
    else:
        why.append("κ(G_a, Z_a) or κ(G_b, Z_b) undefined")
    return Consistency(h, g, "; ".join(why) or None)


def _kappas(fits: tuple[PowerFit, ...]) -> dict[str, float | None]:
    out: dict[str, float | None] = {"H_a": None, "G_a": None, "H_b": None, "G_b": None}
    for f in fits:
        if f.reference in ("Z_a", "Z_b") and f.target in out:
            out[f.target] = f.kappa
    return out


def nearest_phase(exponents: tuple[float | None, ...]) -> Phase:
    """Nearest row of the phase table to ``(κ(H_a,Z_a), κ(G_a,Z_a), κ(H_b,Z_b), κ(G_b,Z_b))``.

    Distance is Euclidean in the four exponents; ties go to the earlier row.
    """
    if len(exponents) != 4 or any(e is None for e in exponents):
        return Phase(None, None, None, "an exponent against Z is undefined")
    e = [float(v) for v in exponents if v is not None]
    best_name, best_row, best_dist = PHASES[0][0], PHASES[0][1], math.inf
    for name, row in PHASES:
        dist = math.sqrt(sum((a - b) ** 2 for a, b in zip(e, row, strict=True)))
        if dist < best_dist:
            best_name, best_row, best_dist = name, row, dist
    return Phase(best_name, best_dist, best_row, None)


def powers(
    m: LayerMatrices,
    *,
    spectra: LayerSpectra | None = None,
    floor: float = 1e-8,
    bootstrap: int = 200,
    seed: int = 0,
    metric: str = "pearson",
) -> LayerPowers:
    """All PAH numbers of one layer: six fits, consistency shifts, nearest phase.

    Args:
        m: the layer's finished matrices.
        spectra: spectra from :func:`symtool.align.crh.layer_spectra` (computed here if ``None``;
            pass the ones CRH used to keep one ``eigh`` per matrix).
        floor: relative floor ``ε`` (``--pah-floor``).
        bootstrap: bootstrap resamples per fit.
        seed: bootstrap seed.
        metric: alignment metric of the power scan.

    Returns:
        :class:`LayerPowers`; fits over matrices without a spectrum are failed records.
    """
    check_metric(metric)
    if spectra is None:
        spectra = layer_spectra(m, cross=False, metric=metric)
    fits = []
    for target, reference, side in FITS:
        M, Z = spectra.matrix(target), spectra.get(reference)
        if M is None or Z is None:
            why = [w for nm in (target, reference) if (w := spectra.reason(nm)) is not None]
            d = Z.dim if Z is not None else (int(M.shape[0]) if M is not None else 0)
            fits.append(_failed(target, reference, side, d, "failed: " + "; ".join(why)))
            continue
        fits.append(
            fit_power(
                M,
                Z,
                target=target,
                reference=reference,
                side=side,
                floor=floor,
                bootstrap=bootstrap,
                seed=seed,
                metric=metric,
                factor=(m.factors or {}).get(target),
                symmetric=True,  # LayerSpectra's matrices are sym(M) in float64
            )
        )
    fits_t = tuple(fits)
    k = _kappas(fits_t)
    phase = nearest_phase((k["H_a"], k["G_a"], k["H_b"], k["G_b"]))
    return LayerPowers(fits_t, consistency(fits_t), phase, floor, bootstrap, seed, metric, m.recipe)
