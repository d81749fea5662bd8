"""One analysis over a checkpoint sequence (:mod:`symtool.runner`), with a fake analysis.

The checkpoints are tiny safetensors files in ``tmp_path``; the analysis sums their one
tensor, or raises where a test plants a failure, and records which steps it was asked for.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from symtool import distributed
from symtool.errors import AnalysisError, UsageError
from symtool.inputs import checkpoints as ck
from symtool.report.files import SCHEMA_VERSION
from symtool.runner import (
    RESUME_FREE,
    check_resumable,
    done_entries,
    prefetch,
    run_report,
    run_sequence,
)

STEPS = [0, 100, 150, 200]
BROKEN = 150  # not a safetensors file: fails to load
SETTINGS = {"seed": 0, "metric": "pearson", "null_samples": 4, "max_memory": None}


def _save(path: Path, value: float) -> Path:
    save_file({"w": torch.full((2, 2), value)}, str(path))
    return path


@pytest.fixture
def ckpts(tmp_path: Path) -> list[ck.Checkpoint]:
    for step in STEPS:
        path = tmp_path / f"step_{step:06d}.safetensors"
        if step == BROKEN:
            path.write_bytes(b"not a safetensors file")
        else:
            _save(path, float(step + 1))
    found = ck.discover([tmp_path])
    assert [c.step for c in found] == STEPS
    return found


class Fake:
    """An ``analyze``: the tensor's sum, or an AnalysisError at ``fail`` steps."""

    def __init__(self, fail: dict[int, AnalysisError] | None = None) -> None:
        self.fail = fail or {}
        self.calls: list[int | None] = []

    def __call__(self, c: ck.Checkpoint, loaded: ck.LoadedCheckpoint) -> dict[str, Any]:
        self.calls.append(c.step)
        if c.step in self.fail:
            raise self.fail[c.step]
        return {"value": float(loaded.tensors["w"].sum()), "layers": [{"name": "w"}]}


def _by_step(entries: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {e["step"]: e for e in entries}


# ------------------------------------------------------------------ run_sequence


def test_failed_checkpoints_become_entries_and_the_rest_go_on(ckpts: list[ck.Checkpoint]) -> None:
    fake = Fake({100: AnalysisError("planted failure")})
    entries = run_sequence(ckpts, fake)
    assert [e["step"] for e in entries] == STEPS
    assert [e["status"] for e in entries] == ["ok", "failed", "failed", "ok"]
    assert fake.calls == [0, 100, 200]  # a checkpoint that did not load is not analysed
    by = _by_step(entries)
    for step in (0, 200):
        e = by[step]
        assert e["value"] == 4.0 * (step + 1) and e["layers"] == [{"name": "w"}]
        assert e["error"] is None and e["path"] == str(ckpts[STEPS.index(step)].path)
        assert e["sha256"] == ck.sha256(ckpts[STEPS.index(step)].path)
        assert isinstance(e["duration_s"], float) and e["duration_s"] >= 0
    failed = by[100]  # analysed and failed: hashed, timed, the error names the checkpoint
    assert failed["error"] == f"{failed['path']}: planted failure"
    assert failed["sha256"] == ck.sha256(ckpts[1].path) and "duration_s" in failed
    assert "value" not in failed
    unread = by[BROKEN]  # could not be read: no hash, the error names the file
    assert unread["sha256"] is None and str(ckpts[2].path) in unread["error"]
    assert "duration_s" not in unread and "value" not in unread


def test_an_error_that_names_its_file_is_not_prefixed_again(ckpts: list[ck.Checkpoint]) -> None:
    fake = Fake({0: AnalysisError("bad probe", path="probe.safetensors")})
    (entry,) = run_sequence(ckpts[:1], fake)
    assert entry["status"] == "failed" and entry["error"] == "probe.safetensors: bad probe"


def test_step_from_checkpoint_metadata_when_the_name_has_none(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2, 2)}, "global_step": 7}, path)
    (c,) = ck.discover([path])
    assert c.step is None
    (entry,) = run_sequence([c], Fake())
    assert entry["step"] == 7 and entry["status"] == "ok" and entry["value"] == 4.0


def test_progress_before_each_checkpoint_and_once_at_the_end(ckpts: list[ck.Checkpoint]) -> None:
    calls: list[tuple[int, int, str]] = []
    run_sequence(ckpts, Fake(), progress=lambda i, n, name: calls.append((i, n, name)))
    names = [c.name for c in ckpts]
    assert calls == [*((i, 4, names[i]) for i in range(4)), (4, 4, "")]


def test_on_entry_sees_all_entries_so_far_after_each_checkpoint(
    ckpts: list[ck.Checkpoint],
) -> None:
    seen: list[list[tuple[int, str]]] = []
    entries = run_sequence(
        ckpts,
        Fake({200: AnalysisError("x")}),
        on_entry=lambda es: seen.append([(e["step"], e["status"]) for e in es]),
    )
    final = [(e["step"], e["status"]) for e in entries]
    assert final == [(0, "ok"), (100, "ok"), (150, "failed"), (200, "failed")]
    assert seen == [final[:k] for k in range(1, 5)]


def test_prefetch_reads_in_order_with_or_without_the_background_thread(
    ckpts: list[ck.Checkpoint],
) -> None:
    def summary(background: bool) -> list[tuple[str, str | None, bool]]:
        return [
            (x.ckpt.name, x.sha256, x.error is None)
            for x in prefetch(ckpts, trust_pickle=False, background=background)
        ]

    plain = summary(False)
    assert plain == summary(True)
    assert [ok for *_, ok in plain] == [True, True, False, True]
    assert plain[0][1] == ck.sha256(ckpts[0].path) and plain[2][1] is None


# ------------------------------------------------------------------ --resume


def test_done_entries_keeps_finished_entries_by_path_and_hash() -> None:
    prev = {
        "checkpoints": [
            {"path": "a", "sha256": "1", "status": "ok"},
            {"path": "b", "sha256": "2", "status": "failed"},  # retried
            {"path": "c", "sha256": None, "status": "ok"},  # unhashed: cannot be matched
            {"path": "d", "status": "ok"},
        ]
    }
    assert done_entries(prev) == {("a", "1"): prev["checkpoints"][0]}
    assert done_entries(None) == {} and done_entries({}) == {}


def test_done_entries_are_reused_failed_ones_retried_and_changed_files_redone(
    ckpts: list[ck.Checkpoint],
) -> None:
    first = run_sequence(ckpts, Fake({100: AnalysisError("transient")}))
    _save(ckpts[3].path, -1.0)  # step 200 rewritten: its hash changes
    again = Fake()
    second = run_sequence(ckpts, again, done=done_entries({"checkpoints": first}))
    assert again.calls == [100, 200]
    assert second[0] is first[0]  # reused as-is, duration included
    assert second[1]["status"] == "ok" and second[1]["value"] == 4.0 * 101
    assert second[2]["status"] == "failed"  # still unreadable: never reused
    assert second[3]["value"] == -4.0 and second[3]["sha256"] != first[3]["sha256"]


def _head(**settings: Any) -> dict[str, Any]:
    return {
        "schema": "symtool/align",
        "schema_version": SCHEMA_VERSION,
        "provenance": {"settings": {**SETTINGS, **settings}},
    }


def test_resume_refuses_another_kind_version_or_settings() -> None:
    head = _head()
    check_resumable(copy.deepcopy(head), head)
    with pytest.raises(UsageError, match="'symtool/ode', not 'symtool/align'"):
        check_resumable({**head, "schema": "symtool/ode"}, head)
    with pytest.raises(UsageError, match=f"schema_version {SCHEMA_VERSION - 1}"):
        check_resumable({**head, "schema_version": SCHEMA_VERSION - 1}, head)
    for key, other in (("seed", 1), ("metric", "cosine"), ("null_samples", 8)):
        with pytest.raises(UsageError, match=rf"other settings \({key}\)"):
            check_resumable(_head(**{key: other}), head)
    with pytest.raises(UsageError, match=r"\(metric, seed\)"):
        check_resumable(_head(seed=1, metric="cosine"), head)
    with pytest.raises(UsageError, match=r"\(bootstrap\)"):  # a setting only one side has
        check_resumable(_head(bootstrap=10), head)
    with pytest.raises(UsageError, match="other settings"):
        check_resumable({k: v for k, v in head.items() if k != "provenance"}, head)


def test_resume_accepts_a_change_of_max_memory_only() -> None:
    assert frozenset({"max_memory"}) == RESUME_FREE
    head = _head()
    check_resumable(_head(max_memory="2G"), head)
    no_limit = _head()
    del no_limit["provenance"]["settings"]["max_memory"]
    check_resumable(no_limit, head)
    check_resumable(head, no_limit)
    with pytest.raises(UsageError, match=r"\(seed\)"):
        check_resumable(_head(max_memory="2G", seed=3), head)


# ------------------------------------------------------------------ run_report


def test_report_head_settings_and_entries(ckpts: list[ck.Checkpoint]) -> None:
    rep = run_report(
        "symtool/align",
        ckpts,
        Fake(),
        SETTINGS,
        trust_pickle=False,
        provenance_extra={"probe": {"samples": 3}},
        head_extra={"thresholds": {"alpha": 0.8}},
    )
    assert rep["schema"] == "symtool/align" and rep["schema_version"] == SCHEMA_VERSION
    assert rep["provenance"]["settings"] == SETTINGS
    assert rep["provenance"]["probe"] == {"samples": 3}
    assert rep["thresholds"] == {"alpha": 0.8} and rep["complete"] is True
    assert [e["step"] for e in rep["checkpoints"]] == STEPS
    assert list(rep)[-2:] == ["complete", "checkpoints"]


def test_on_partial_after_each_checkpoint_with_every_entry_so_far(
    ckpts: list[ck.Checkpoint],
) -> None:
    partials: list[dict[str, Any]] = []
    rep = run_report(
        "symtool/align",
        ckpts,
        Fake(),
        SETTINGS,
        trust_pickle=False,
        on_partial=lambda r: partials.append(copy.deepcopy(r)),
    )
    assert len(partials) == len(STEPS)
    for k, part in enumerate(partials, start=1):
        assert part["complete"] is False and part["schema"] == "symtool/align"
        assert part["provenance"]["settings"] == SETTINGS
        assert part["checkpoints"] == rep["checkpoints"][:k]


def test_resume_from_a_partial_report_reanalyses_only_what_is_missing(
    ckpts: list[ck.Checkpoint],
) -> None:
    partials: list[dict[str, Any]] = []
    run_report(
        "symtool/align",
        ckpts[:2],  # interrupted after two checkpoints, the second failed
        Fake({100: AnalysisError("transient")}),
        SETTINGS,
        trust_pickle=False,
        on_partial=lambda r: partials.append(copy.deepcopy(r)),
    )
    previous = partials[-1]
    fake = Fake()
    rep = run_report(
        "symtool/align", ckpts, fake, {**SETTINGS, "max_memory": "1G"}, trust_pickle=False,
        previous=previous,
    )
    assert fake.calls == [100, 200]
    assert rep["checkpoints"][0] == previous["checkpoints"][0]
    assert [e["status"] for e in rep["checkpoints"]] == ["ok", "ok", "failed", "ok"]
    refused = Fake()
    with pytest.raises(UsageError, match=r"\(seed\)"):
        run_report(
            "symtool/align", ckpts, refused, {**SETTINGS, "seed": 1}, trust_pickle=False,
            previous=previous,
        )
    assert refused.calls == []  # refused before any checkpoint is read


@pytest.mark.parametrize(
    ("world", "steps", "main"),
    [
        (distributed.World(0, 2, "checkpoints"), [0, 150], True),
        (distributed.World(1, 2, "checkpoints"), [100, 200], False),
        (distributed.World(1, 2, "data"), STEPS, False),
        (distributed.World(2, 3, "checkpoints"), [150], False),
    ],
)
def test_world_splits_checkpoints_and_only_rank_0_reports(
    ckpts: list[ck.Checkpoint], world: distributed.World, steps: list[int], main: bool
) -> None:
    partials: list[int] = []
    progress: list[int] = []
    rep = run_report(
        "symtool/align",
        ckpts,
        Fake(),
        SETTINGS,
        trust_pickle=False,
        on_partial=lambda r: partials.append(len(r["checkpoints"])),
        progress=lambda i, n, name: progress.append(i),
        world=world,
    )
    assert [e["step"] for e in rep["checkpoints"]] == steps
    assert partials == (list(range(1, len(steps) + 1)) if main else [])
    assert progress == (list(range(len(steps) + 1)) if main else [])
