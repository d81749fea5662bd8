"""Runge–Kutta stability algebra (:mod:`symtool.stability`): regions, their axis extents, and
the principal root of ``R_s(z) = μ``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from symtool.stability import (
    imaginary_axis_extent,
    real_axis_extent,
    rk_rate,
    stability_function,
)
from tests.reference import in_stability_region


def test_stability_region_axis_extents() -> None:
    assert imaginary_axis_extent(1) == 0.0 and imaginary_axis_extent(2) == 0.0
    assert abs(imaginary_axis_extent(3) - math.sqrt(3)) < 1e-6
    assert abs(imaginary_axis_extent(4) - 2 * math.sqrt(2)) < 1e-6
    assert in_stability_region(1.73j, 3) and not in_stability_region(1.74j, 3)
    assert in_stability_region(2.82j, 4) and not in_stability_region(2.83j, 4)
    assert not in_stability_region(0.1j, 1) and not in_stability_region(0.1j, 2)
    assert real_axis_extent(1) == pytest.approx(-2.0, abs=1e-9)
    assert real_axis_extent(2) == pytest.approx(-2.0, abs=1e-9)
    assert real_axis_extent(3) == pytest.approx(-2.5127453266, abs=1e-8)
    assert real_axis_extent(4) == pytest.approx(-2.7852935634, abs=1e-8)


@pytest.mark.parametrize("stages", [1, 2, 3, 4])
def test_rk_root_inverts_stability_function(stages: int) -> None:
    rng = np.random.default_rng(stages)
    for mu in [*(rng.normal(size=20) + 1j * rng.normal(size=20)), 0.0, -0.5, 1.0, 1e-9]:
        z = rk_rate(mu, stages)
        assert abs(stability_function(z, stages) - mu) < 1e-12 * max(1.0, abs(mu))
    for z0 in [0.1, -0.3 + 0.2j, 0.05j, -0.5 - 0.4j]:  # small z: R_s invertible near 0
        assert abs(rk_rate(stability_function(z0, stages), stages) - z0) < 1e-12

