"""Shared test helpers: small factories for checkpoints on disk (always under tmp_path)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FIXTURES = ROOT / "fixtures"


@pytest.fixture
def fixtures_dir() -> Path:
    """The committed fixtures folder."""
    return FIXTURES


# Small matrices: one thread avoids OpenMP hand-off latency on a shared 2-core machine.
torch_threads = 1
try:
    import torch

    torch.set_num_threads(torch_threads)
except ImportError:  # pragma: no cover
    pass
