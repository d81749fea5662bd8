"""The Python API: the CLI's analyses and reports from a notebook or a training script.

``symtool.align``, ``symtool.symmetry`` and ``symtool.ode`` return the report the CLI
writes (:class:`Report`); :class:`Monitor` and the callbacks in
:mod:`symtool.integrations` write one during training. docs/python.md has examples.
Names are imported on first use, so the CLI can import :mod:`symtool.api.settings` alone.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "align": "analyses",
    "symmetry": "analyses",
    "ode": "analyses",
    "check": "checks",
    "Monitor": "monitor",
    "Report": "report",
    "load_report": "report",
    "SettingsError": "settings",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """``symtool.api.align`` etc., from their modules (PEP 562)."""
    if name in _WHERE:
        return getattr(importlib.import_module(f"symtool.api.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'symtool.api' has no attribute {name!r}")
