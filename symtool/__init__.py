"""symtool: read what happened inside a network during training from its checkpoints.

Measures the Canonical Representation Hypothesis relations and PAH exponents
(Ziyin, Chuang, Galanti, Poggio 2025), broken and restored parameter symmetries
(Ziyin, Xu, Poggio, Chuang 2025) and the ODE reading of recurrent cells
(Niu, Horesh, Chuang 2019). The math reference is ``docs/theory.md``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("symtool")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
