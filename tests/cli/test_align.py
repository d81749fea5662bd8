"""`symtool align` end to end: report structure, identities, failures kept apart, resume."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from symtool.cli.app import app
from symtool.report.files import VOLATILE_FIELDS

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def _strip_volatile(obj):
    if isinstance(obj, dict):
        return {k: _strip_volatile(v) for k, v in obj.items() if k not in VOLATILE_FIELDS}
    if isinstance(obj, list):
        return [_strip_volatile(v) for v in obj]
    return obj


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """Three checkpoints of a 3-layer tanh MLP and probe data, no config."""
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(6, 10),
        torch.nn.Tanh(),
        torch.nn.Linear(10, 8),
        torch.nn.Tanh(),
        torch.nn.Linear(8, 3),
    )
    for step in (0, 10, 20):
        sd = {
            k: v + 0.05 * step * torch.randn(v.shape, generator=g)
            for k, v in net.state_dict().items()
        }
        save_file(sd, str(tmp_path / f"step_{step:06d}.safetensors"))
    save_file(
        {"x": torch.randn(96, 6, generator=g), "y": torch.randint(0, 3, (96,), generator=g)},
        str(tmp_path / "probe.safetensors"),
    )
    return tmp_path


def _align(run_dir: Path, *extra: object, batch: int = 32):
    return _invoke(
        "align",
        run_dir,
        "--data",
        run_dir / "probe.safetensors",
        "--activation",
        "tanh",
        "--batch-size",
        str(batch),
        "--null-samples",
        "4",
        "--bootstrap",
        "20",
        *extra,
    )


def test_json_report_structure_and_verify_identities(run_dir: Path) -> None:
    res = _align(run_dir, "--verify", "--dtype", "float64", "-f", "json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["schema"] == "symtool/align" and rep["complete"] is True
    assert rep["provenance"]["probe"]["samples"] == 96
    assert len(rep["provenance"]["probe"]["sha256"]) == 64
    assert [e["step"] for e in rep["checkpoints"]] == [0, 10, 20]
    for e in rep["checkpoints"]:
        assert len(e["sha256"]) == 64
        names = [layer["name"] for layer in e["layers"]]
        assert names == ["0", "2", "4"]
        for layer in e["layers"]:
            assert set(layer["relations"]) == {"f-RGA", "f-GWA", "f-RWA", "b-RGA", "b-GWA", "b-RWA"}
            assert layer["relations"]["b-GWA"]["formula"] == "G_b ~ Z_b"
            assert layer["rows"] == 96
            # the exact identities hold to float64 round-off
            assert layer["verify"]["h_b_error"] < 1e-8
            assert layer["verify"]["g_a_error"] < 1e-8
            assert set(layer["pah"]["fits"]) >= {"H_a~Z_a", "G_b~Z_b"}


def test_csv_is_tidy(run_dir: Path) -> None:
    res = _align(run_dir, "--no-pah", "-f", "csv")
    lines = res.stdout.strip().splitlines()
    header = lines[0].split(",")
    assert header[:3] == ["step", "checkpoint", "layer"]
    # 3 checkpoints × 3 layers × (6 relations + 2 cross terms)
    assert len(lines) - 1 == 3 * 3 * 8


def test_batch_size_does_not_change_the_numbers(run_dir: Path) -> None:
    a = json.loads(_align(run_dir, "--dtype", "float64", "-f", "json").stdout)
    b = json.loads(_align(run_dir, "--dtype", "float64", "-f", "json", batch=96).stdout)
    for ea, eb in zip(a["checkpoints"], b["checkpoints"], strict=True):
        for la, lb in zip(ea["layers"], eb["layers"], strict=True):
            for rid in la["relations"]:
                assert la["relations"][rid]["alpha"] == pytest.approx(
                    lb["relations"][rid]["alpha"], abs=1e-10
                )


def test_reports_are_reproducible_except_volatile_fields(run_dir: Path) -> None:
    a = json.loads(_align(run_dir, "-f", "json").stdout)
    b = json.loads(_align(run_dir, "-f", "json").stdout)
    assert _strip_volatile(a) == _strip_volatile(b)


def test_a_bad_checkpoint_is_recorded_and_the_rest_analysed(run_dir: Path) -> None:
    (run_dir / "step_000015.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    save_file({"other.weight": torch.zeros(2, 2)}, str(run_dir / "step_000017.safetensors"))
    res = _align(run_dir, "-f", "json")
    assert res.exit_code == 1
    rep = json.loads(res.stdout)
    status = {e["step"]: e["status"] for e in rep["checkpoints"]}
    assert status == {0: "ok", 10: "ok", 15: "failed", 17: "failed", 20: "ok"}
    errors = {e["step"]: e["error"] for e in rep["checkpoints"]}
    assert "step_000015.safetensors" in errors[15] and "safetensors" in errors[15]
    # all missing and unexpected keys listed at once
    assert "0.weight" in errors[17] and "4.bias" in errors[17] and "other.weight" in errors[17]
    assert "step_000015" in res.stderr


def test_resume_gives_the_same_report(run_dir: Path, tmp_path_factory) -> None:
    out_dir = tmp_path_factory.mktemp("out")
    full = out_dir / "full.json"
    assert _align(run_dir, "--out", full).exit_code == 0
    # an interrupted run: only the first checkpoint finished
    partial = json.loads(full.read_text())
    partial["checkpoints"] = partial["checkpoints"][:1]
    partial["complete"] = False
    resumed = out_dir / "resumed.json"
    resumed.write_text(json.dumps(partial))
    assert _align(run_dir, "--out", resumed, "--resume").exit_code == 0
    assert _strip_volatile(json.loads(resumed.read_text())) == _strip_volatile(
        json.loads(full.read_text())
    )
    # other settings: refused
    res = _align(run_dir, "--out", resumed, "--resume", "--metric", "cosine")
    assert res.exit_code == 2 and "other settings" in res.stderr


def test_config_beside_checkpoints_needs_no_flags(run_dir: Path) -> None:
    (run_dir / "symtool.toml").write_text(
        '[model]\nactivation = "tanh"\n[data]\npath = "probe.safetensors"\nbatch_size = 32\n'
        "[align]\nnull_samples = 4\nbootstrap = 20\n"
    )
    res = _invoke("align", run_dir, "-f", "json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["provenance"]["settings"]["activation"] == "tanh"
    assert len(rep["checkpoints"]) == 3  # the probe file is not taken for a checkpoint


def test_save_matrices(run_dir: Path, tmp_path_factory) -> None:
    from safetensors.torch import load_file

    out = tmp_path_factory.mktemp("m") / "mats.safetensors"
    assert (
        _align(
            run_dir, "--steps", "20", "--save-matrices", out, "--moments", "raw", "-f", "json"
        ).exit_code
        == 0
    )
    mats = load_file(str(out))
    W = mats["step_20/2/W"]
    assert torch.allclose(mats["step_20/2/Z_a"], W.T @ W)
    assert mats["step_20/2/H_a"].shape == (10, 10) and mats["step_20/2/G_b"].shape == (8, 8)


def test_no_probe_data_is_a_usage_error(run_dir: Path) -> None:
    (run_dir / "probe.safetensors").rename(run_dir / "val_probe.safetensors")  # not "beside"
    res = _invoke("align", run_dir)
    assert res.exit_code == 2 and "no probe data" in res.stderr
    assert "beside the checkpoints" in res.stderr


def test_missing_probe_keys_listed(run_dir: Path) -> None:
    res = _invoke("align", run_dir, "--data", run_dir / "probe.safetensors", "--inputs", "images")
    assert res.exit_code == 2 and "images" in res.stderr and "probe.safetensors" in res.stderr


def test_fixture_runs_with_no_flags(fixtures_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(fixtures_dir / "mlp_wd", tmp_path / "mlp_wd")
    res = _invoke("align", tmp_path / "mlp_wd", "--last", "1", "--null-samples", "4", "-f", "json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert [layer["name"] for layer in rep["checkpoints"][0]["layers"]] == ["0", "2", "4", "6"]


# ------------------------------------------------------------- layer partitioning


def test_max_memory_passes_give_the_same_numbers(run_dir: Path, tmp_path: Path) -> None:
    one, split = tmp_path / "one.json", tmp_path / "split.json"
    assert _align(run_dir, "--verify", "--out", one).exit_code == 0
    # 10×6, 8×10, 3×8 layers with --verify: 10.5, 12.8, 5.5 KiB; 15.7 KiB fits no two
    res = _align(run_dir, "--verify", "--max-memory", "1.5e-5", "--out", split)
    assert res.exit_code == 0, res.output
    a, b = json.loads(one.read_text()), json.loads(split.read_text())
    assert [e["passes"] for e in a["checkpoints"]] == [1, 1, 1]
    assert [e["passes"] for e in b["checkpoints"]] == [3, 3, 3]
    assert b["provenance"]["settings"]["max_memory"] == 1.5e-5
    for rep in (a, b):
        rep["provenance"]["settings"].pop("max_memory")
        for e in rep["checkpoints"]:
            e.pop("passes")
    assert _strip_volatile(a) == _strip_volatile(b)


def test_max_memory_skips_a_layer_too_big_alone_and_resume_may_change_it(
    run_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r.json"
    res = _align(run_dir, "--max-memory", "7e-6", "--out", out)  # 7.3 KiB: 8×10 (7.7) is not
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    skipped = {s["name"]: s["reason"] for s in rep["checkpoints"][0]["skipped_layers"]}
    assert "--max-memory" in skipped["2"] and "GiB" in skipped["2"]
    assert [layer["name"] for layer in rep["checkpoints"][0]["layers"]] == ["0", "4"]
    # resuming with another budget is allowed: it changes how, not what, is computed
    rep["checkpoints"] = rep["checkpoints"][:1]
    rep["complete"] = False
    out.write_text(json.dumps(rep))
    again = _align(run_dir, "--max-memory", "1e-5", "--out", out, "--resume")
    assert again.exit_code == 0, again.output
    resumed = json.loads(out.read_text())
    # each entry records its own skips: the bigger budget analyses layer 2 from then on
    assert [len(e["layers"]) for e in resumed["checkpoints"]] == [2, 3, 3]
    assert resumed["provenance"]["settings"]["max_memory"] == 1e-5
    bad = _align(run_dir, "--max-memory", "0", "--out", tmp_path / "x.json")
    assert bad.exit_code == 2 and "--max-memory" in bad.stderr


def test_table_and_csv_carry_every_reason(run_dir: Path) -> None:
    """Undefined α, κ, Δκ and phase say why in the table and the CSV; skipped layers are
    CSV rows too (they were only in the JSON and the table)."""
    from rich.console import Console

    from symtool.report.sink import TABLES, Sink

    res = _align(run_dir, "--steps", "20", "--max-layer-dim", "9", "-f", "json")
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    (entry,) = report["checkpoints"]
    assert [s["name"] for s in entry["skipped_layers"]] == ["0", "2"]  # 10 wide > 9
    layer = next(la for la in entry["layers"] if la["name"] == "4")
    layer["relations"]["b-RGA"].update(alpha=None, z=None, holds=None, null_mean=None,
                                       null_std=None, reason="planted: constant matrix")
    pah = layer["pah"]
    pah["fits"]["H_b~Z_b"].update(kappa=None, reason="planted: 1 eigenpair kept")
    pah["consistency"].update(h_shift=None, reason="planted: κ undefined")
    pah["phase"].update(name=None, distance=None, reason="planted: no phase")
    console = Console(file=io.StringIO(), width=200, record=True)
    TABLES[report["schema"]](report, console)
    table = console.export_text()
    assert "layer 4: α(b-RGA) undefined: planted: constant matrix" in table
    assert "layer 4: κ(H_b~Z_b) undefined: planted: 1 eigenpair kept" in table
    assert "layer 4: Δκ undefined: planted: κ undefined" in table
    assert "layer 4: phase undefined: planted: no phase" in table
    rows = list(csv.DictReader(io.StringIO(Sink("csv", None).render(report))))
    by = {(r["layer"], r["metric"], r["quantity"]): r for r in rows}
    assert by["4", "consistency", "h_shift"]["reason"] == "planted: κ undefined"
    assert by["4", "phase_distance", "phase"]["reason"] == "planted: no phase"
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert [r["layer"] for r in skipped] == ["0", "2"]
    assert all("max-layer-dim" in r["reason"] for r in skipped)


def test_a_probe_source_without_samples_is_an_input_error(run_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "src.py"
    src.write_text("def empty():\n    return iter([])\n", encoding="utf-8")
    res = _invoke("align", run_dir, "--data", f"{src}:empty", "--null-samples", "4",
                  "--steps", "20")
    assert res.exit_code == 2
    assert f"probe source '{src}:empty' gave no samples" in res.stderr
    assert "never called" not in res.stderr  # it was misread as a model problem


def test_relative_source_on_the_command_line_is_taken_from_the_working_directory(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--data src.py:fn finds src.py in the working directory even when a symtool.toml
    beside the checkpoints (whose own relative paths use its folder) is in play."""
    (run_dir / "symtool.toml").write_text("[align]\nnull_samples = 4\n", encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    (work / "src.py").write_text(
        "from safetensors.torch import load_file\n"
        f"def batches():\n    d = load_file({str(run_dir / 'probe.safetensors')!r})\n"
        "    yield d['x'], d['y']\n", encoding="utf-8")
    monkeypatch.chdir(work)
    res = _invoke("align", run_dir, "--data", "src.py:batches", "--activation", "tanh",
                  "--steps", "20", "--bootstrap", "10", "-f", "json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["checkpoints"][0]["samples"] == 96
