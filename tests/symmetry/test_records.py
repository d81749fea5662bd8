"""Symmetry records and settings (:mod:`symtool.symmetry.records`)."""

from __future__ import annotations

import pytest

from symtool.errors import UsageError
from symtool.symmetry.records import SymmetrySettings


def test_settings_validate_all_at_once():
    with pytest.raises(UsageError) as err:
        SymmetrySettings(rank_taus=(2.0,), dup_tau=0.5, activation="swish", block=0)
    msg = str(err.value)
    assert all(s in msg for s in ("rank_taus", "dup_taus", "swish", "block"))
    assert SymmetrySettings().to_dict()["dead_tau"] == 1e-2
