"""symtool: read what happened inside a network during training from its checkpoints.

Measures the Canonical Representation Hypothesis relations and PAH exponents
(Ziyin, Chuang, Galanti, Poggio 2025), broken and restored parameter symmetries
(Ziyin, Xu, Poggio, Chuang 2025) and the ODE reading of recurrent cells
(Niu, Horesh, Chuang 2019). The math is written out in ``docs/theory.md``.
"""

from symtool._version import __version__

__all__ = ["__version__"]
