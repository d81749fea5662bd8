"""Shared test helpers: small factories for checkpoints on disk (always under tmp_path)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# Subprocesses (``python -m symtool`` from a temporary folder) import this checkout's
# symtool too, not whichever copy happens to be installed.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT), *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
)

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


@pytest.fixture(autouse=True)
def _validate_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every report a test renders or emits through the sink validates against its schema."""
    from symtool.report import schema
    from symtool.report.files import dumps
    from symtool.report.sink import Sink

    render, emit = Sink.render, Sink.emit

    def checked_render(self: Sink, report: dict) -> str:
        text = render(self, report)
        if self.fmt == "json":
            schema.validate_text(text)
        return text

    def checked_emit(self: Sink, report: dict) -> None:
        schema.validate_text(dumps(report))
        emit(self, report)

    monkeypatch.setattr(Sink, "render", checked_render)
    monkeypatch.setattr(Sink, "emit", checked_emit)
