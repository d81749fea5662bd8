"""``symtool ode``: recurrent cells read as Runge–Kutta steps of an ODE.

Niu, Horesh, Chuang, *Recurrent Neural Networks in the Eye of Differential Equations*
(2019, arXiv 1904.12933); docs/theory.md §6. :mod:`.cells` finds and evaluates the cells,
:mod:`.linearization` reads one-step Jacobians, :mod:`.lyapunov` the exponents,
:mod:`.analysis` the per-layer report, :mod:`.run` drives it over a checkpoint sequence.
"""

from symtool.ode.analysis import OdeSettings
from symtool.ode.run import OdeRun, run_ode

__all__ = ["OdeRun", "OdeSettings", "run_ode"]
