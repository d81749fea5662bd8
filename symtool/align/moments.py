"""Streaming float64 moment sums for one layer, and the finished matrices.

docs/theory.md §1-2. Accumulators keep ``n``, ``Σx`` and ``Σxxᵀ`` (and cross sums
``Σ g hᵀ``); dividing happens only in :func:`finish`, so sums from several batches,
data shards or processes merge exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from symtool.errors import AnalysisError
from symtool.linalg import add_gram_, add_product_, all_finite, gram
from symtool.triangles import full_from_lower, mirror_lower_, sub_outer_

Tensor = torch.Tensor


@dataclass(frozen=True)
class LayerMatrices:
    """Finished per-layer matrices, all float64 on one device.

    Attributes:
        W: the layer's weight as a matrix, ``d_out × d_in`` (conv: reshaped kernel).
        H_a, G_a: input-side representation and neuron-gradient moments (``d_in × d_in``),
            in the recipe named by ``recipe``.
        H_b, G_b: output-side moments (``d_out × d_out``).
        C_a: ``E[h_a g_aᵀ]`` from raw (unnormalised) rows, ``d_in × d_in``.
        C_b: ``E[g_b h_bᵀ]`` from raw rows, ``d_out × d_out``.
        n: number of sample rows seen.
        skipped_rows: zero-norm rows dropped by the paper recipe, per vector
            (keys ``h_a``, ``h_b``, ``g_a``, ``g_b``); all zero for ``raw``.
        recipe: ``"paper"`` or ``"raw"``.
        raw: the raw second moments ``{"H_a", "G_a", "H_b", "G_b"}`` when they were
            also accumulated (``--verify`` or recipe ``raw``), else ``None``.
        factors: for moments whose rows were fewer than their width (kept as rows, see
            :class:`LayerAccumulator`), ``Y`` (``r × d``, ``r`` < ``d``) with the moment
            ``= YᵀY`` to round-off: centred normalised rows over ``√k`` (paper) or the rows
            over ``√n`` (raw). The moment's range is ``Y``'s row space, so its
            eigenvectors come from the ``r × r`` Gram matrix (:mod:`symtool.align.bases`).
    """

    W: Tensor
    H_a: Tensor
    G_a: Tensor
    H_b: Tensor
    G_b: Tensor
    C_a: Tensor
    C_b: Tensor
    n: int
    skipped_rows: dict[str, int]
    recipe: str
    raw: dict[str, Tensor] | None = None
    factors: dict[str, Tensor] | None = None
    symmetric: bool = False
    """``H_a, G_a, H_b, G_b`` are exactly symmetric float64 (:meth:`LayerAccumulator.finish`
    makes them so), so consumers need not check or symmetrise them."""


RECIPES = ("paper", "raw")
VECTORS = ("h_a", "g_a", "h_b", "g_b")
"""The four per-row vectors of docs/theory.md §1, in the order sums are kept."""

_MATRIX_NAMES = {"h_a": "H_a", "g_a": "G_a", "h_b": "H_b", "g_b": "G_b"}


def layer_bytes(d_in: int, d_out: int, *, raw_too: bool = False) -> int:
    """Bytes one captured layer holds through a pass: its float64 sums and finished matrices.

    Sums: ``Σxxᵀ`` of ``h_a, g_a`` (``d_in²`` each) and ``h_b, g_b`` (``d_out²``) and the
    cross sum ``D`` (``d_out·d_in``); finished: ``H, G, C`` per side and ``W``; with
    ``raw_too`` (paper recipe with ``--verify``) four raw second moments more, summed and
    finished. Per-batch rows and the ``O(d)`` vectors are not counted.
    """
    sq = d_in * d_in + d_out * d_out
    per = (2 + 3) * sq + 2 * d_in * d_out + (4 * sq if raw_too else 0)
    return 8 * per


class LayerAccumulator:
    """Streaming float64 sums for one layer: ``n``, ``Σx``, ``Σxxᵀ`` and the cross sums.

    docs/theory.md §2. Per vector ``v`` in :data:`VECTORS` it keeps ``S_v = Σ x xᵀ`` of the
    recipe's rows (``raw``: the rows; ``paper``: the rows divided by their norm, plus
    ``s_v = Σ x̂`` and ``k_v`` = rows with non-zero norm), the raw cross sums
    ``Σ g_b h_bᵀ = D Wᵀ`` and ``Σ h_a g_aᵀ = Dᵀ W`` through one ``D = Σ g_b h_aᵀ``,
    and, when ``raw_too`` (paper recipe only), the raw ``Σ x xᵀ`` as well. Sums are
    allocated on the first batch, never divided until :meth:`finish`, and merge exactly
    (:meth:`merge`, :meth:`sums`).

    While a vector has seen fewer rows than its width ``d`` (a wide conv's im2col rows on a
    small probe set), its rows themselves are kept (float64) instead of the ``d × d`` sum:
    ``r·d`` numbers instead of ``d²``, no per-batch Gram product, and :meth:`finish` gives
    the moment's factor (:attr:`LayerMatrices.factors`). The sum is formed from the rows
    (one Gram product, exact) when the count reaches ``d`` and whenever the sums are read
    (:meth:`sums`, :meth:`merge`).

    Args:
        recipe: ``"paper"`` or ``"raw"``.
        raw_too: also keep raw second moments (for the identity check of ``--verify``).
        gemm_dtype: dtype of the per-batch ``xᵀx`` products; ``torch.float32`` products are
            added into the float64 sums.
    """

    def __init__(
        self,
        recipe: str = "paper",
        *,
        raw_too: bool = False,
        gemm_dtype: torch.dtype = torch.float64,
    ) -> None:
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}; expected one of {', '.join(RECIPES)}")
        if gemm_dtype not in (torch.float64, torch.float32):
            raise ValueError(f"gemm_dtype must be torch.float64 or torch.float32, not {gemm_dtype}")
        self.recipe = recipe
        self.raw_too = raw_too and recipe == "paper"
        self.gemm_dtype = gemm_dtype
        self.d_in: int | None = None
        self.d_out: int | None = None
        self._n: Tensor | None = None
        self._S: dict[str, Tensor] = {}
        self._s: dict[str, Tensor] = {}
        self._k: dict[str, Tensor] = {}
        self._R: dict[str, Tensor] = {}
        self._X: dict[str, list[Tensor]] = {}  # rows of vectors still below their width
        self._D: Tensor | None = None  # Σ g_b h_aᵀ; both cross sums follow from it
        # the Σxxᵀ sums (S, R) hold their lower triangle only (linalg.add_gram_)

    # ----------------------------------------------------------------- allocation
    @property
    def allocated(self) -> bool:
        """Whether the sums exist (after the first batch or :meth:`allocate`)."""
        return self._n is not None

    def allocate(self, d_in: int, d_out: int, device: torch.device | str = "cpu") -> None:
        """Create zero sums; done on the first batch, or explicitly before an all-reduce."""
        if self.allocated:
            if (d_in, d_out) != (self.d_in, self.d_out):
                raise ValueError(
                    f"rows of width ({d_in}, {d_out}) do not fit sums of "
                    f"({self.d_in}, {self.d_out})"
                )
            return
        self.d_in, self.d_out = d_in, d_out
        f64 = {"dtype": torch.float64, "device": device}
        self._n = torch.zeros((), dtype=torch.int64, device=device)
        for v in VECTORS:
            d = d_in if v.endswith("_a") else d_out
            self._X[v] = []
            if self.recipe == "paper":
                self._s[v] = torch.zeros(d, **f64)
                self._k[v] = torch.zeros((), dtype=torch.int64, device=device)
            if self.raw_too:
                self._R[v] = torch.zeros(d, d, **f64)
        self._D = torch.zeros(d_out, d_in, **f64)

    # ----------------------------------------------------------------- streaming
    def add(
        self,
        h_a: Tensor,
        h_b: Tensor,
        g_b: Tensor,
        g_a: Tensor,
        *,
        owned: frozenset[str] = frozenset(),
    ) -> None:
        """Add one batch of sample rows (2-D, one row per sample row, any float dtype).

        Args:
            h_a, g_a: input-side rows, ``N × d_in``.
            h_b, g_b: output-side rows, ``N × d_out``.
            owned: names of the rows (``"h_a"``, ...) the caller no longer needs; those
                tensors may be overwritten in place (saves a copy in the paper recipe).
        """
        rows = {"h_a": h_a, "g_a": g_a, "h_b": h_b, "g_b": g_b}
        if h_a.ndim != 2 or h_b.ndim != 2 or g_a.shape != h_a.shape or g_b.shape != h_b.shape:
            raise ValueError(
                f"rows must be 2-D with h_a/g_a and h_b/g_b of equal shape; got h_a "
                f"{tuple(h_a.shape)}, g_a {tuple(g_a.shape)}, h_b {tuple(h_b.shape)}, "
                f"g_b {tuple(g_b.shape)}"
            )
        if h_a.shape[0] != h_b.shape[0]:
            raise ValueError(f"{h_a.shape[0]} input rows but {h_b.shape[0]} output rows")
        self.allocate(h_a.shape[1], h_b.shape[1], h_a.device)
        assert self._n is not None and self._D is not None
        if h_a.shape[0] == 0:
            return
        gd = self.gemm_dtype
        x = {}
        own = set(owned)
        for v, t in rows.items():
            c = t.to(gd)
            if c.data_ptr() != t.data_ptr():
                own.add(v)
            x[v] = c
        self._n += h_a.shape[0]
        # Raw cross sums (docs/theory.md §3) Σ g_b h_bᵀ = D Wᵀ and Σ h_a g_aᵀ = Dᵀ W, both
        # exact for h_b = W h_a and g_a = Wᵀ g_b, from one product D = Σ g_b h_aᵀ.
        add_product_(self._D, x["g_b"].T, x["h_a"])
        if self.recipe == "raw":
            for v in VECTORS:
                self._add_second(v, x[v], v in own)
            return
        for v in VECTORS:
            xv = x[v]
            if self.raw_too:
                add_gram_(self._R[v], xv)
            norm = torch.linalg.vector_norm(xv, dim=1)
            keep = norm > 0
            inv = torch.where(keep, norm.reciprocal(), 0.0)
            xv = xv.mul_(inv[:, None]) if v in own else xv * inv[:, None]
            self._k[v] += keep.sum()
            self._s[v] += xv.sum(dim=0, dtype=torch.float64)
            self._add_second(v, xv, True)

    def _width(self, v: str) -> int:
        assert self.d_in is not None and self.d_out is not None
        return self.d_in if v.endswith("_a") else self.d_out

    def _add_second(self, v: str, x: Tensor, owned: bool) -> None:
        """``Σ x xᵀ`` of vector ``v``: keep the rows while fewer than the width, else sum."""
        rows = self._X.get(v)
        if rows is not None:
            if sum(r.shape[0] for r in rows) + x.shape[0] < self._width(v):
                keep = x.to(torch.float64)
                rows.append(keep.clone() if not owned and keep.data_ptr() == x.data_ptr() else keep)
                return
            self._densify(v)
        add_gram_(self._S[v], x)

    def _densify(self, v: str) -> None:
        """Turn ``v``'s kept rows into its ``Σ x xᵀ`` sum (lower triangle) and drop them."""
        rows = self._X.pop(v, None)
        if rows is None:
            return
        assert self._D is not None
        d = self._width(v)
        self._S[v] = torch.zeros(d, d, dtype=torch.float64, device=self._D.device)
        for r in rows:
            add_gram_(self._S[v], r)

    # ----------------------------------------------------------------- merging
    def sums(self) -> list[Tensor]:
        """All sums and counts as a flat list of the live tensors, in a fixed order.

        An in-place reduction of every tensor (``dist.all_reduce(t)`` for each) sums the
        accumulators of several processes; :meth:`allocate` first on ranks without data.
        """
        if not self.allocated:
            raise ValueError("accumulator has no sums yet; call allocate() first")
        assert self._n is not None and self._D is not None
        out = [self._n, self._D]
        for v in VECTORS:
            self._densify(v)
            out.append(self._S[v])
            if self.recipe == "paper":
                out += [self._s[v], self._k[v]]
            if self.raw_too:
                out.append(self._R[v])
        return out

    def load_sums(self, values: list[Tensor]) -> None:
        """Restore sums from :meth:`sums` of an accumulator with the same settings/shapes."""
        if not self.allocated:
            raise ValueError("allocate() before load_sums() so the shapes are known")
        mine = self.sums()
        if len(values) != len(mine):
            raise ValueError(f"expected {len(mine)} tensors, got {len(values)}")
        for dst, src in zip(mine, values, strict=True):
            if dst.shape != src.shape:
                raise ValueError(f"shape {tuple(src.shape)} does not fit {tuple(dst.shape)}")
            dst.copy_(src)

    def merge(self, other: LayerAccumulator) -> None:
        """Add another accumulator's sums into this one (exact: sums and counts add)."""
        if (other.recipe, other.raw_too) != (self.recipe, self.raw_too):
            raise ValueError(
                f"cannot merge recipe {other.recipe!r} (raw_too={other.raw_too}) into "
                f"{self.recipe!r} (raw_too={self.raw_too})"
            )
        if not other.allocated:
            return
        assert other.d_in is not None and other.d_out is not None
        assert other._D is not None
        self.allocate(other.d_in, other.d_out, other._D.device)
        for dst, src in zip(self.sums(), other.sums(), strict=True):
            dst += src.to(dst.device)

    # ----------------------------------------------------------------- finishing
    @property
    def n(self) -> int:
        """Number of sample rows added so far."""
        return 0 if self._n is None else int(self._n.item())

    def finish(self, W: Tensor, *, consume: bool = False) -> LayerMatrices:
        """Divide the sums into :class:`LayerMatrices` (docs/theory.md §2).

        Args:
            W: the layer's weight matrix ``d_out × d_in`` (stored as float64).
            consume: the accumulator is not used again: its ``d × d`` sums become the
                finished matrices in place (no copies; the same numbers).

        Raises:
            AnalysisError: no rows, non-finite activations or gradients, or every row of a
                vector had zero norm (paper recipe).
        """
        n = self.n
        if n == 0:
            raise AnalysisError("no sample rows reached this layer")
        assert self._D is not None
        rows = {v: self._rows(v) for v in VECTORS if v in self._X}
        bad = [
            v
            for v in VECTORS
            if not (_finite(rows[v]) if v in rows else _finite(self._S[v].diagonal()))
        ]
        if self.raw_too:
            bad += [v for v in VECTORS if v not in bad and not _finite(self._R[v].diagonal())]
        if not bad and not _finite(self._D):
            bad = ["the g_b·h_a cross sum"]
        if bad:
            raise AnalysisError(f"non-finite values in {', '.join(bad)} (activations or gradients)")
        mats: dict[str, Tensor] = {}
        factors: dict[str, Tensor] = {}
        skipped = dict.fromkeys(VECTORS, 0)
        for v in VECTORS:
            if v in rows:
                second = mirror_lower_(gram(rows[v], mirror=False))
            elif consume:
                second = mirror_lower_(self._S.pop(v))
            else:
                second = full_from_lower(self._S[v])
            # ``second`` is this call's own tensor: divided and centred in place
            if self.recipe == "raw":
                mats[v] = second.div_(n)
                if v in rows:
                    factors[_MATRIX_NAMES[v]] = rows[v] / math.sqrt(n)
                continue
            k = int(self._k[v].item())
            skipped[v] = n - k
            if k == 0:
                raise AnalysisError(f"every {v} row has zero norm ({n} rows)")
            mean = self._s[v] / k
            mats[v] = sub_outer_(second.div_(k), mean)  # − μμᵀ, no d × d temporary
            if v in rows:  # the rows kept (non-zero norm), centred: Σ(x̂ − μ)(x̂ − μ)ᵀ/k
                X = rows[v]
                X = X[torch.linalg.vector_norm(X, dim=1) > 0] if k < n else X
                factors[_MATRIX_NAMES[v]] = (X - mean) / math.sqrt(k)
            del second
        raw = None
        if self.recipe == "raw":
            raw = {_MATRIX_NAMES[v]: mats[v] for v in VECTORS}
        elif self.raw_too:
            raw = {_MATRIX_NAMES[v]: full_from_lower(self._R[v]) / n for v in VECTORS}
        W64 = W.detach().to(device=self._D.device, dtype=torch.float64).reshape(W.shape[0], -1)
        D = self._D / n
        return LayerMatrices(
            W=W64.clone() if W64.data_ptr() == W.data_ptr() else W64,
            H_a=mats["h_a"],
            G_a=mats["g_a"],
            H_b=mats["h_b"],
            G_b=mats["g_b"],
            C_a=D.T @ W64,
            C_b=D @ W64.T,
            n=n,
            skipped_rows=skipped,
            recipe=self.recipe,
            raw=raw,
            factors=factors or None,
            symmetric=True,
        )

    def _rows(self, v: str) -> Tensor:
        """The rows kept for ``v`` as one ``r × d`` float64 matrix."""
        rows = self._X[v]
        if rows:
            return torch.cat(rows) if len(rows) > 1 else rows[0]
        assert self._D is not None
        return torch.zeros(0, self._width(v), dtype=torch.float64, device=self._D.device)


def _finite(t: Tensor) -> bool:
    """Whether every entry of ``t`` is finite."""
    return all_finite(t)
