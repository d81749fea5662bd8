"""Where things are in a report (:mod:`symtool.report.entries`): metric paths, checkpoint and
layer entries of every report kind, step and layer selection."""

from __future__ import annotations

from typing import Any

import pytest

from symtool.errors import ReportError
from symtool.report import entries as en
from tests.report import samples

NESTED = {
    "a": 1,
    "b": {"c": None, "d": []},
    "e": {},
    "weights": [{"gate": "i", "s": 1.0}, {"gate": "f", "s": 2.0}],
    "xs": [3.0, 4.0],
}


# ------------------------------------------------------------------ paths


def test_flatten_keys_list_items_by_their_id_and_drops_empty_containers() -> None:
    assert en.flatten(NESTED) == {
        ("a",): 1,
        ("b", "c"): None,
        ("weights", "i", "gate"): "i",
        ("weights", "i", "s"): 1.0,
        ("weights", "f", "gate"): "f",
        ("weights", "f", "s"): 2.0,
        ("xs", "0"): 3.0,
        ("xs", "1"): 4.0,
    }
    assert en.flatten(5) == {(): 5}
    assert en.flatten({"k": [7]}, ("top",)) == {("top", "k", "0"): 7}
    assert en.flatten({}) == {} and en.flatten([]) == {}


def test_containers_are_the_records_inside_not_the_lists() -> None:
    assert en.containers(NESTED) == {("b",), ("e",), ("weights", "i"), ("weights", "f")}
    assert en.containers({"x": [[{"y": 1}]]}) == {("x", "0", "0")}
    assert en.containers(3) == set()


@pytest.mark.parametrize(
    ("items", "keys"),
    [
        ([{"name": "fc1", "id": 1}, {"name": "fc2", "id": 2}], ["fc1", "fc2"]),
        ([{"name": "x", "id": 1}, {"name": "x", "id": 2}], ["1", "2"]),  # names not distinct
        ([{"tau": 0.01}, {"tau": 0.1}, {"tau": 1e-3}], ["0.01", "0.1", "0.001"]),
        ([{"stages": 4}, {"stages": 1}], ["4", "1"]),
        ([{"scheme": "euler"}, {"scheme": "rk4"}], ["euler", "rk4"]),
        ([{"name": True}, {"name": False}], ["0", "1"]),  # booleans name nothing
        ([{"name": ""}, {"name": "b"}], ["0", "1"]),  # nor empty text
        ([{"name": "a"}, {"other": "b"}], ["0", "1"]),  # every item needs the key
        ([{"name": [1]}, {"name": [2]}], ["0", "1"]),
        ([3.0, 4.0], ["0", "1"]),
        ([], []),
    ],
)
def test_item_keys(items: list[Any], keys: list[str]) -> None:
    assert en.item_keys(items) == keys


def test_dotted_and_report_kind() -> None:
    assert en.dotted(("relations", "f-RGA", "alpha")) == "relations.f-RGA.alpha"
    assert en.dotted(()) == ""
    assert en.report_kind({"schema": "symtool/align"}) == "align"
    assert en.report_kind({}) == ""


# ------------------------------------------------------------------ entries


def test_layer_entries_of_every_report_kind() -> None:
    align = samples.align_report()
    ok, failed = align["checkpoints"]
    assert [la["name"] for la in en.layer_entries(align, ok)] == ["fc1", "fc2"]
    assert en.layer_entries(align, failed) == []
    ode = samples.ode_report()
    assert [la["name"] for la in en.layer_entries(ode, ode["checkpoints"][0])] == [
        "rnn.l0", "rnn.l0_reverse"]
    sym = samples.symmetry_report()
    entry = sym["checkpoints"][0]
    assert en.layer_groups(sym) == ("layers", "units", "attention")
    assert [en.layer_name(x) for x in en.layer_entries(sym, entry)] == [
        "fc1", "fc2", "fc1", "fc3", "attn"]
    assert [en.layer_name(x) for x in en.layer_entries(sym, entry, "units")] == ["fc1", "fc3"]
    assert en.layer_entries(sym, entry, "softmax") == []  # one record, not a list of them
    for kind in ("symtool/inspect", "symtool/check", "symtool/diff"):
        report = samples.ALL[kind]()
        assert en.layer_groups(report) == ("layers",)
        assert all(en.layer_entries(report, e) == [] for e in en.checkpoint_entries(report))
    junk = {"layers": [{"name": "a"}, "b", None, 3]}
    assert en.layer_entries(align, junk) == [{"name": "a"}]


def test_layer_names_and_labels() -> None:
    sym = samples.symmetry_report()
    units = sym["checkpoints"][0]["units"][0]
    assert en.layer_name(units) == "fc1"  # units are named by their incoming layer
    assert en.layer_label(sym, "units", units) == "units/fc1"
    assert en.layer_label(sym, "layers", sym["checkpoints"][0]["layers"][0]) == "fc1"
    assert en.layer_name({"layer": "fc2"}) == "fc2"
    assert en.layer_name({"name": None, "incoming": "x"}) == "x"
    assert en.layer_name({}) == "?"


def test_checkpoint_and_run_metrics() -> None:
    align = samples.align_report()
    metrics = en.checkpoint_metrics(align, align["checkpoints"][0])
    assert "layers" not in metrics and "skipped_layers" not in metrics
    assert metrics["samples"] == 64 and metrics["step"] == 10
    sym = samples.symmetry_report()
    metrics = en.checkpoint_metrics(sym, sym["checkpoints"][0])
    assert not {"layers", "units", "attention"} & set(metrics) and "softmax" in metrics
    run = en.run_metrics(align)
    assert not {"schema", "provenance", "checkpoints"} & set(run)
    assert run["thresholds"] == {"alpha": 0.8, "z": 3.0} and run["complete"] is True
    assert en.checkpoint_entries({"checkpoints": None}) == []
    assert en.checkpoint_entries({}) == []


@pytest.mark.parametrize(
    ("entry", "ok", "why"),
    [
        ({"status": "ok", "error": None}, True, "ok"),
        ({}, True, "failed"),
        ({"status": "ok", "error": "late"}, False, "late"),
        ({"status": "failed", "reason": "nan"}, False, "nan"),
        ({"status": "skipped"}, False, "skipped"),
        ({"status": "failed", "error": "e", "reason": "r"}, False, "e"),
    ],
)
def test_is_ok_and_entry_error(entry: dict[str, Any], ok: bool, why: str) -> None:
    assert en.is_ok(entry) is ok
    assert en.entry_error(entry) == why


# ------------------------------------------------------------------ selection


@pytest.mark.parametrize(
    ("step", "parsed"),
    [("last", "last"), ("LAST", "last"), (" all ", "all"), ("12", 12), ("007", 7), (12, 12),
     (0, 0)],
)
def test_parse_step(step: str | int, parsed: str | int) -> None:
    assert en.parse_step(step) == parsed


@pytest.mark.parametrize("step", [True, "-1", "1.5", "first", "", "1e3"])
def test_parse_step_refuses_anything_else(step: Any) -> None:
    with pytest.raises(ReportError, match="--step must be last, all or a step number"):
        en.parse_step(step)


def test_select_checkpoints_last_all_and_by_step() -> None:
    report = samples.align_report()  # step 10 ok, step 20 failed
    ok, failed = report["checkpoints"]
    assert en.select_checkpoints(report, "last") == [ok]  # the last that did not fail
    assert en.select_checkpoints(report, "all") == [ok, failed]
    assert en.select_checkpoints(report, 10) == [ok]
    assert en.select_checkpoints(report, "20") == [failed]  # asked for: failed or not
    with pytest.raises(ReportError, match=r"no checkpoint at step 99 \(steps: 10, 20\)"):
        en.select_checkpoints(report, 99)
    with pytest.raises(ReportError, match="the report has no checkpoints"):
        en.select_checkpoints({**report, "checkpoints": []}, "last")
    with pytest.raises(ReportError, match="--step must be"):
        en.select_checkpoints(report, "latest")


def test_select_last_when_every_checkpoint_failed_and_repeated_steps() -> None:
    report = samples.align_report()
    _, failed = report["checkpoints"]
    first = {**failed, "step": 10, "path": "run/a"}
    assert en.select_checkpoints({"checkpoints": [first, failed]}, "last") == [failed]
    twice = {"checkpoints": [{"step": 5, "path": "a"}, {"step": 5, "path": "b"}]}
    assert [e["path"] for e in en.select_checkpoints(twice, 5)] == ["a", "b"]
    assert en.select_checkpoints(twice, "last") == [{"step": 5, "path": "b"}]


@pytest.mark.parametrize(
    ("names", "globs", "hit"),
    [
        (["fc1"], [], True),  # no globs: every layer
        ([], [], True),
        ([], ["fc*"], False),
        (["fc1"], ["fc*"], True),
        (["FC1"], ["fc*"], False),  # case matters
        (["fc1"], ["fc?"], True),
        (["fc10"], ["fc?"], False),
        (["0", "2"], ["[02]"], True),
        (["1"], ["[02]"], False),
        (["fc1", "units/fc1"], ["units/*"], True),
        (["encoder.layer.0.attn"], ["decoder.*", "*.attn"], True),
        (["encoder.layer.0.attn"], ["decoder.*"], False),
    ],
)
def test_match_layers(names: list[str], globs: list[str], hit: bool) -> None:
    assert en.match_layers(names, globs) is hit
