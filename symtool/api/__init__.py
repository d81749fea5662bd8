"""The Python API: the CLI's analyses and reports from a notebook or a training script.

``symtool.align``, ``symtool.symmetry`` and ``symtool.ode`` return the report the CLI
writes (:class:`Report`); :class:`Monitor` and the callbacks in
:mod:`symtool.integrations` write one during training. docs/python.md has examples.
"""

from symtool.api.analyses import align, ode, symmetry
from symtool.api.checks import check
from symtool.api.monitor import Monitor
from symtool.api.report import Report, load_report
from symtool.api.settings import SettingsError

__all__ = [
    "Monitor",
    "Report",
    "SettingsError",
    "align",
    "check",
    "load_report",
    "ode",
    "symmetry",
]
