"""``symtool symmetry``: broken and restored parameter symmetries, from weights alone.

Ziyin, Xu, Poggio, Chuang, *Parameter Symmetry Breaking and Restoration Determines the
Hierarchical Learning in AI Systems* (2025, arXiv 2502.05300); docs/theory.md §5.
:mod:`.layout` finds the linear maps and unit pairs, :mod:`.analysis` measures one
checkpoint (:mod:`.units`, :mod:`.heads`), :mod:`.timeline` the sequence, :mod:`.records`
holds the typed results, :mod:`.run` drives it over a checkpoint sequence.
"""

from symtool.symmetry.records import SymmetrySettings
from symtool.symmetry.run import SymmetryRun, run_symmetry

__all__ = ["SymmetryRun", "SymmetrySettings", "run_symmetry"]
