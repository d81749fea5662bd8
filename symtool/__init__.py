"""symtool: read what happened inside a network during training from its checkpoints.

Measures the Canonical Representation Hypothesis relations and PAH exponents
(Ziyin, Chuang, Galanti, Poggio 2025), broken and restored parameter symmetries
(Ziyin, Xu, Poggio, Chuang 2025) and the ODE reading of recurrent cells
(Niu, Horesh, Chuang 2019). The math is written out in ``docs/theory.md``.

The Python API (docs/python.md) is imported on first use, so ``import symtool`` and the
CLI stay light::

    import symtool
    report = symtool.align(model, (x, y), null_samples=0)

``symtool.align``, ``symtool.symmetry`` and ``symtool.ode`` are the analysis packages
and, called, the API functions :func:`symtool.api.align` etc. (a package and a function
cannot share a name otherwise: importing ``symtool.align.run`` sets the attribute).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from symtool._version import __version__

__all__ = [
    "Monitor",
    "Report",
    "SettingsError",
    "__version__",
    "align",
    "check",
    "load_report",
    "ode",
    "symmetry",
]

_CALLABLE = ("align", "symmetry", "ode")
"""Analysis packages that, called, run the API function of the same name."""


class _AnalysisPackage(types.ModuleType):
    """An analysis package that is also its API function: ``symtool.align(model, data)``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run :func:`symtool.api.<name>` (see its docstring, or docs/python.md)."""
        from symtool import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(types.ModuleType):
    """``symtool`` itself: makes each analysis package callable as it is imported."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _CALLABLE and isinstance(value, types.ModuleType):
            value.__class__ = _AnalysisPackage
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    """The API's names, imported when first asked for (PEP 562)."""
    if name in _CALLABLE:
        return importlib.import_module(f"symtool.{name}")
    if name in __all__:
        from symtool import api

        return getattr(api, name)
    raise AttributeError(f"module 'symtool' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
