"""Report schemas: shipped, draft 2020-12, strict; our validator agrees with jsonschema."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

from symtool.cli.app import app
from symtool.errors import ReportError
from symtool.report import schema
from symtool.report.files import SCHEMA_VERSION, dumps
from symtool.report.sink import Sink

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input, env={"COLUMNS": "200"})


# The conftest snippet offered to the whole suite, applied here to this module only:
# every report the sink renders or emits is validated against its schema.
RENDERED: list[str] = []


@pytest.fixture(autouse=True)
def _validate_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    render, emit = Sink.render, Sink.emit

    def checked_render(self: Sink, report: dict[str, Any]) -> str:
        text = render(self, report)
        if self.fmt == "json":
            RENDERED.append(schema.validate_text(text)["schema"])
        return text

    def checked_emit(self: Sink, report: dict[str, Any]) -> None:
        RENDERED.append(schema.validate_text(dumps(report))["schema"])
        emit(self, report)

    monkeypatch.setattr(Sink, "render", checked_render)
    monkeypatch.setattr(Sink, "emit", checked_emit)


@pytest.fixture(scope="module")
def align_report() -> dict[str, Any]:
    result = _invoke(
        "align",
        str(ROOT / "fixtures" / "mlp_wd"),
        "--last",
        "2",
        "--null-samples",
        "4",
        "--bootstrap",
        "20",
        "--verify",
        "-f",
        "json",
    )
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _jsonschema_ok(report: Any, kind: str) -> bool:
    return jsonschema.Draft202012Validator(schema.load_schema(kind)).is_valid(report)


def _ours_ok(report: Any) -> bool:
    try:
        schema.validate(report)
    except ReportError:
        return False
    return True


# ------------------------------------------------------------------------ schemas


@pytest.mark.parametrize("kind", schema.available())
def test_every_shipped_schema_is_valid_and_uses_only_supported_keywords(kind: str) -> None:
    s = schema.load_schema(kind)
    jsonschema.Draft202012Validator.check_schema(s)
    assert schema.unknown_keywords(s) == set()
    assert s["properties"]["schema"] == {"const": f"symtool/{kind}"}
    assert s["properties"]["schema_version"] == {"const": SCHEMA_VERSION}
    assert s["additionalProperties"] is False


def test_the_main_kinds_ship_a_schema() -> None:
    assert {"inspect", "align", "check", "diff"} <= set(schema.available())


def test_schemas_are_package_data() -> None:
    from importlib import resources

    folder = resources.files("symtool.report") / "schemas"
    older = [f"{k}.v{v}.json" for k in schema.available() for v in range(1, SCHEMA_VERSION)]
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".json")) == sorted(
        [f"{k}.json" for k in schema.available()] + older
    )


NULL_FIELDS_V4 = ("null_method", "null_error", "borderline", "sampled_null")
SETTINGS_V5 = ("collapse", "collapse_lm", "nfa", "nfa_projections", "nfa_exact_max")


def test_reports_of_the_previous_version_still_validate(align_report: dict) -> None:
    # docs/reports.md: older schemas are kept; version 2 added align's max_memory and passes
    old = copy.deepcopy(align_report)
    old["schema_version"] = 1
    del old["provenance"]["settings"]["max_memory"]
    for key in SETTINGS_V5:  # the neural collapse / NFA settings came with version 5
        del old["provenance"]["settings"][key]
    for entry in old["checkpoints"]:
        entry.pop("passes", None)
        for layer in entry.get("layers") or []:  # agreement_blocks came after version 1
            for fit in ((layer.get("pah") or {}).get("fits") or {}).values():
                fit.pop("agreement_blocks", None)
            rels = [*layer.get("relations", {}).values(), *layer.get("cross_terms", {}).values()]
            for rel in rels:
                for key in NULL_FIELDS_V4:  # the exact null's fields came with version 4
                    del rel[key]
    assert schema.validate(old) == "align"
    assert schema.load_schema("align", 1)["properties"]["schema_version"] == {"const": 1}
    with pytest.raises(ReportError):
        schema.validate({**old, "schema_version": 2})  # v2 requires the new fields


def test_agreement_blocks_is_optional_and_nullable(align_report: dict) -> None:
    # docs/metrics.md: reports made before the field existed lack it and still validate
    fits = [
        fit
        for entry in align_report["checkpoints"]
        for layer in entry.get("layers") or []
        for fit in ((layer.get("pah") or {}).get("fits") or {}).values()
    ]
    assert fits and all("agreement_blocks" in fit for fit in fits)
    old = copy.deepcopy(align_report)
    for entry in old["checkpoints"]:
        for layer in entry.get("layers") or []:
            for fit in ((layer.get("pah") or {}).get("fits") or {}).values():
                fit.pop("agreement_blocks")
    assert schema.validate(old) == "align" and _jsonschema_ok(old, "align")
    fit = next(iter(old["checkpoints"][-1]["layers"][0]["pah"]["fits"].values()))
    fit["agreement_blocks"] = None
    assert schema.validate(old) == "align"
    fit["agreement_blocks"] = "high"
    with pytest.raises(ReportError):
        schema.validate(old)


# -------------------------------------------------------------------- validation


def test_real_reports_validate_with_both_validators(align_report: dict, tmp_path: Path) -> None:
    assert schema.validate(align_report) == "align"
    assert _jsonschema_ok(align_report, "align")
    layer = align_report["checkpoints"][-1]["layers"][0]
    assert layer["verify"]["h_b_error"] is not None  # --verify filled the optional block
    inspect = _invoke("inspect", str(ROOT / "fixtures" / "mlp_wd" / "step_000000.safetensors"))
    assert inspect.exit_code == 0
    report = json.loads(inspect.stdout)
    assert report["tensors"] is not None
    assert schema.validate(report) == "inspect" and _jsonschema_ok(report, "inspect")


def _set(path: list[Any], value: Any) -> Callable[[dict], None]:
    def apply(r: dict) -> None:
        node = r
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return apply


def _drop(path: list[Any]) -> Callable[[dict], None]:
    def apply(r: dict) -> None:
        node = r
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return apply


L0 = ["checkpoints", 1, "layers", 0]
MUTATIONS: dict[str, tuple[Callable[[dict], None], str]] = {
    "alpha is text": (
        _set([*L0, "relations", "b-GWA", "alpha"], "0.9"),
        "$.checkpoints[1].layers[0].relations['b-GWA'].alpha: expected number or null",
    ),
    "missing z": (
        _drop([*L0, "relations", "f-RGA", "z"]),
        "$.checkpoints[1].layers[0].relations['f-RGA']: missing required key(s): z",
    ),
    "unknown relation": (
        _set([*L0, "relations", "f-XYZ"], {}),
        "$.checkpoints[1].layers[0].relations['f-XYZ']: unexpected key 'f-XYZ'",
    ),
    "bad status": (
        _set(["checkpoints", 0, "status"], "done"),
        '$.checkpoints[0].status: must be one of ["ok", "failed"]',
    ),
    "ok with error": (
        _set(["checkpoints", 0, "error"], "boom"),
        "$.checkpoints[0].error: expected null",
    ),
    "failed without error": (
        _set(["checkpoints", 0, "status"], "failed"),
        "$.checkpoints[0].error: expected string",
    ),
    "bool as number": (
        _set([*L0, "d_in"], True),
        "$.checkpoints[1].layers[0].d_in: expected integer",
    ),
    "negative std": (
        _set([*L0, "relations", "b-RWA", "null_std"], -0.1),
        "$.checkpoints[1].layers[0].relations['b-RWA'].null_std: must be ≥ 0",
    ),
    "three exponents": (
        _set([*L0, "pah", "phase", "exponents"], [1.0, 2.0, 3.0]),
        "$.checkpoints[1].layers[0].pah.phase.exponents: must have at least 4 item(s)",
    ),
    "extra top-level key": (_set(["extra"], 1), "$.extra: unexpected key 'extra'"),
    "version as text": (
        _set(["schema_version"], "1"),
        "$.schema_version: expected a positive integer, got '1'",
    ),
    "holds is a string": (
        _set([*L0, "cross_terms", "b-CROSS", "holds"], "yes"),
        "$.checkpoints[1].layers[0].cross_terms['b-CROSS'].holds: expected boolean or null",
    ),
    "bad sha": (
        _set(["checkpoints", 0, "sha256"], "xyz"),
        '$.checkpoints[0].sha256: "xyz" does not match',
    ),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_broken_reports_fail_with_the_json_path(align_report: dict, name: str) -> None:
    mutate, message = MUTATIONS[name]
    broken = copy.deepcopy(align_report)
    mutate(broken)
    assert not _jsonschema_ok(broken, "align")  # the reference validator agrees
    with pytest.raises(ReportError) as info:
        schema.validate(broken)
    assert str(info.value).startswith(message), str(info.value)


def test_failed_entries_validate(align_report: dict) -> None:
    r = copy.deepcopy(align_report)
    c0 = r["checkpoints"][0]
    r["checkpoints"][0] = {k: c0[k] for k in ("step", "path", "sha256", "status")} | {
        "status": "failed",
        "error": "x: cannot read",
    }
    r["checkpoints"][1]["layers"][0].update(
        status="failed", reason="non-finite", relations=None, cross_terms=None, pah=None
    )
    assert _ours_ok(r) and _jsonschema_ok(r, "align")
    r["checkpoints"][1]["layers"][0]["relations"] = {}
    assert not _ours_ok(r) and not _jsonschema_ok(r, "align")


@pytest.mark.parametrize(
    ("report", "needle"),
    [
        ([], "a report must be a JSON object"),
        ({"schema": "other/x"}, "not a symtool report"),
        ({"schema": "symtool/nope", "schema_version": 1}, "unknown report kind 'nope'"),
        ({"schema": "symtool/align", "schema_version": 99}, f"reads up to {SCHEMA_VERSION}"),
    ],
)
def test_not_a_report(report: Any, needle: str) -> None:
    with pytest.raises(ReportError, match=needle):
        schema.validate(report)


def test_validator_agrees_with_jsonschema_on_random_damage(align_report: dict) -> None:
    """Replace each leaf of one layer by values of other types; both validators agree."""
    layer = align_report["checkpoints"][1]["layers"][1]
    paths: list[list[Any]] = []

    def walk(node: Any, path: list[Any]) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, [*path, k])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, [*path, i])
        else:
            paths.append(path)

    walk(layer, [])
    assert len(paths) > 100
    for path in paths[::3]:
        for value in (None, "x", -1, 0.5, True, [], {}):
            broken = copy.deepcopy(align_report)
            _set(["checkpoints", 1, "layers", 1, *path], value)(broken)
            assert _ours_ok(broken) == _jsonschema_ok(broken, "align"), (path, value)


# --------------------------------------------------------------------------- CLI


def test_schema_command_prints_the_shipped_schema() -> None:
    result = _invoke("schema", "align")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == schema.load_schema("align")
    listing = _invoke("schema")
    assert listing.exit_code == 0
    line = f"align\tsymtool/align\tschema_version {SCHEMA_VERSION}"
    assert line in listing.stdout.splitlines()
    bad = _invoke("schema", "nope")
    assert bad.exit_code == 2 and "no schema for 'nope'" in bad.stderr


def test_schema_command_writes_a_file(tmp_path: Path) -> None:
    out = tmp_path / "inspect.schema.json"
    result = _invoke("schema", "inspect", "-o", str(out))
    assert result.exit_code == 0 and result.stdout == ""
    assert json.loads(out.read_text(encoding="utf-8"))["$id"].endswith(f":inspect:{SCHEMA_VERSION}")


def test_every_rendered_report_is_validated(tmp_path: Path, align_report: dict) -> None:
    """The suite-wide hook sees (and validates) what commands render."""
    RENDERED.clear()
    path = tmp_path / "a.json"
    path.write_text(json.dumps(align_report), encoding="utf-8")
    assert _invoke("inspect", str(ROOT / "fixtures" / "mlp_wd"), "-f", "json").exit_code == 0
    assert _invoke("check", str(path), "-r", "b-RWA>-1", "-f", "json").exit_code == 0
    assert _invoke("diff", str(path), str(path), "-f", "csv").exit_code == 0
    assert set(RENDERED) == {"symtool/inspect", "symtool/check", "symtool/diff"}
    # A report that breaks its schema does not get through the sink.
    broken = copy.deepcopy(align_report)
    broken["complete"] = "yes"
    with pytest.raises(ReportError, match=r"\$\.complete: expected boolean"):
        Sink("json", None).render(broken)


@pytest.fixture(scope="module")
def weight_reports() -> dict[str, dict[str, Any]]:
    """A symmetry report (mlp_wd) and an ode report (bidirectional 2-layer LSTM)."""
    out = {}
    for kind, run, extra in (("symmetry", "mlp_wd", ["--last", "3"]), ("ode", "lstm2", [])):
        result = _invoke(kind, str(ROOT / "fixtures" / run), *extra, "-f", "json")
        assert result.exit_code == 0, result.stderr
        out[kind] = json.loads(result.stdout)
    return out


@pytest.mark.parametrize("kind", ["symmetry", "ode"])
def test_symmetry_and_ode_reports_validate(weight_reports: dict, kind: str) -> None:
    report = weight_reports[kind]
    assert schema.validate(report) == kind and _jsonschema_ok(report, kind)
    assert report["checkpoints"] and all(e["status"] == "ok" for e in report["checkpoints"])


def test_symmetry_reports_of_version_2_still_validate(weight_reports: dict) -> None:
    # docs/reports.md: version 3 added units' linear_pair and the imbalance trends' quantity
    old = copy.deepcopy(weight_reports["symmetry"])
    old["schema_version"] = 2
    for entry in old["checkpoints"]:
        for units in entry["units"]:
            del units["linear_pair"]
    for trend in old["sequence"]["imbalance"]:
        del trend["quantity"]
    assert schema.validate(old) == "symmetry"
    with pytest.raises(ReportError, match="linear_pair"):
        schema.validate({**old, "schema_version": 3})
    new = weight_reports["symmetry"]
    assert all("linear_pair" in u for e in new["checkpoints"] for u in e["units"])
    assert [t["quantity"] for t in new["sequence"]["imbalance"]] == ["units"] * len(
        new["sequence"]["imbalance"])


@pytest.mark.parametrize(
    ("kind", "path", "value", "message"),
    [
        ("symmetry", ["checkpoints", 0, "layers", 0, "ranks", 0, "rank"], -1, "must be ≥ 0"),
        ("symmetry", ["checkpoints", 0, "units", 0, "source"], "guess", "must be one of"),
        ("symmetry", ["sequence", "events"], {}, "expected array"),
        ("ode", ["checkpoints", 0, "layers", 0, "direction"], "up", "must be one of"),
        ("ode", ["checkpoints", 0, "layers", 0, "verdict", "label"], "fine", "must be one of"),
        ("ode", ["checkpoints", 0, "layers", 1, "rest", "eigenvalues", 0], [1.0], "at least 2"),
    ],
)
def test_symmetry_and_ode_schemas_catch_mistakes(
    weight_reports: dict, kind: str, path: list[Any], value: Any, message: str
) -> None:
    broken = copy.deepcopy(weight_reports[kind])
    _set(path, value)(broken)
    assert not _jsonschema_ok(broken, kind)
    with pytest.raises(ReportError, match=message):
        schema.validate(broken)
