"""docs/python.md's examples run, in order, and print what the page says they print."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, ROOT

DOC = ROOT / "docs" / "python.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_python_md_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("lightning.pytorch")
    pytest.importorskip("transformers")
    (tmp_path / "fixtures").symlink_to(FIXTURES)
    monkeypatch.chdir(tmp_path)
    blocks = _blocks()
    assert len(blocks) >= 6
    ns: dict[str, object] = {"__name__": "python_md"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), ns)
    printed = out.getvalue()
    # the outputs the page shows in its comments
    for line in (
        "<Report symtool align report: 2 checkpoints, steps 0–400, 4 layers>",
        "[0, 400]",
        "['0', '2', '4', '6']",
        "<Sequential step 400>",
        "<summed_ce>",
        "6 1.0",
        "unknown align setting 'null_sample'; valid: activation",
        "[5, 10, 15, 20]",
        "[5, 10, 15]",
        "contracting",
    ):
        assert line in printed, line
    assert (tmp_path / "out" / "align.json").is_file()
    assert {p.name for p in (tmp_path / "out" / "run").iterdir()} >= {"align.json",
                                                                      "symmetry.json"}
