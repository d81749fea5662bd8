"""``symtool.api.jobs``: the one path the CLI commands and the Python API both run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open

import symtool
from symtool.api.jobs import align_job, ode_job, symmetry_job
from symtool.errors import UsageError
from tests.api.helpers import cli_report, differences
from tests.conftest import FIXTURES

FAST = {"last": 2, "bootstrap": 0}


def test_align_job_settles_what_the_cli_would() -> None:
    job = align_job(FIXTURES / "mlp_wd", config=False, **FAST)  # no toml: probe found beside
    assert [c.step for c in job.checkpoints] == [6400, 12800]
    assert job.notes == [
        f"using probe data {FIXTURES / 'mlp_wd' / 'probe.safetensors'} (found beside the "
        "checkpoints)"
    ]
    assert job.settings.bootstrap == 0 and job.extra == {"probe_found": "beside the checkpoints"}
    cost, seconds = job.estimate()
    assert len(seconds) == len(cost.layers) == 4 and all(s > 0 for s in seconds)


def test_run_drives_partials_progress_notes_and_matrices(tmp_path: Path) -> None:
    partials: list[tuple[int, bool]] = []  # (entries, matrices present) at each call
    ticks: list[tuple[int, int, str]] = []
    notes: list[str] = []
    report = align_job(FIXTURES / "mlp_wd", config=False, **FAST).run(
        on_partial=lambda p: partials.append((len(p["checkpoints"]), "matrices" in p)),
        progress=lambda *a: ticks.append(a), on_note=notes.append,
        save_matrices=tmp_path / "m.safetensors",
    )
    assert report is not None and "matrices" not in report
    assert partials == [(1, False), (2, False)]
    assert ticks and len(notes) == 1
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as fh:
        assert {"step_6400/0/H_a", "step_12800/6/W"} <= set(fh.keys())


def test_run_resumes_from_a_partial_report_file(tmp_path: Path) -> None:
    whole = align_job(FIXTURES / "mlp_wd", **FAST).run()
    assert whole is not None
    partial = {**whole, "complete": False, "checkpoints": whole["checkpoints"][:1]}
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(partial))
    again = align_job(FIXTURES / "mlp_wd", **FAST).run(previous=path)
    assert again is not None
    assert again["checkpoints"][0] == whole["checkpoints"][0]  # reused, not recomputed
    assert differences(again, whole) == []
    assert align_job(FIXTURES / "mlp_wd", **FAST).run(previous=tmp_path / "none.json")


def test_the_api_and_the_cli_are_one_path(tmp_path: Path) -> None:
    ours = symtool.symmetry(FIXTURES / "mlp_wd", last=2, pairs=["0.weight:2.weight"])
    theirs = cli_report(tmp_path, "symmetry", FIXTURES / "mlp_wd", "--last", "2",
                        "--pair", " 0.weight : 2.weight ")
    assert differences(ours.to_dict(), theirs) == []
    report = ode_job(FIXTURES / "rnn", last=1).run()
    assert report is not None
    assert differences(report, cli_report(tmp_path, "ode", FIXTURES / "rnn", "--last", "1")) == []


def test_bad_selections_and_pairs_say_so() -> None:
    with pytest.raises(UsageError, match="no checkpoint left after --steps"):
        align_job(FIXTURES / "mlp_wd", steps="7")
    with pytest.raises(UsageError, match="--pair expects IN:OUT"):
        symmetry_job(FIXTURES / "mlp_wd", pairs=["0.weight"])
