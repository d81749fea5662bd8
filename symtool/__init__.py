"""symtool: read what happened inside a network during training from its checkpoints.

Measures the Canonical Representation Hypothesis relations and PAH exponents
(Ziyin, Chuang, Galanti, Poggio 2025), broken and restored parameter symmetries
(Ziyin, Xu, Poggio, Chuang 2025) and the ODE reading of recurrent cells
(Niu, Horesh, Chuang 2019). The math is written out in ``docs/theory.md``.

The Python API (docs/python.md) is imported on first use, so ``import symtool`` and the
CLI stay light::

    import symtool
    report = symtool.align(model, (x, y), null_samples=0)
"""

from __future__ import annotations

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


def __getattr__(name: str) -> Any:
    """The API's names, imported when first asked for (PEP 562)."""
    if name in __all__:
        from symtool import api

        return getattr(api, name)
    raise AttributeError(f"module 'symtool' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
