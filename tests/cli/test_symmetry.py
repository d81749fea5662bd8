"""`symtool symmetry` end to end on planted checkpoints: dead, identical units, low rank,
subspaces, pairs from --pair and from a model graph, sequences and --resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from symtool.cli.app import app
from symtool.report.files import VOLATILE_FIELDS

runner = CliRunner()


def _invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def _planted(seed: int = 0) -> dict[str, torch.Tensor]:
    """fc1 (16 units) → relu → fc2: units 3, 7 dead; unit 5 a rescaled copy of unit 1;
    fc2 of rank 2."""
    g = torch.Generator().manual_seed(seed)
    w1, b1 = torch.randn(16, 8, generator=g), torch.randn(16, generator=g)
    w2 = torch.randn(4, 2, generator=g) @ torch.randn(2, 16, generator=g)
    w1[[3, 7]] = 0.0
    b1[[3, 7]] = 0.0
    w2[:, [3, 7]] = 0.0
    w1[5], b1[5], w2[:, 5] = 2.0 * w1[1], 2.0 * b1[1], 0.5 * w2[:, 1]
    return {"fc1.weight": w1, "fc1.bias": b1, "fc2.weight": w2, "fc2.bias": torch.zeros(4)}


def _one(tmp_path: Path, sd: dict[str, torch.Tensor], *args: object) -> dict:
    path = tmp_path / "model.safetensors"
    save_file(sd, str(path))
    res = _invoke("symmetry", path, "-f", "json", *args)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_planted_structure_is_recovered(tmp_path: Path) -> None:
    rep = _one(tmp_path, _planted())
    e = rep["checkpoints"][0]
    ranks = {la["name"]: {r["tau"]: r["rank"] for r in la["ranks"]} for la in e["layers"]}
    assert ranks["fc2"][0.01] == 2 and ranks["fc1"][0.01] == 8
    (units,) = e["units"]
    assert (units["incoming"], units["outgoing"]) == ("fc1", "fc2")
    dead = {d["tau"]: d["dead"] for d in units["dead"]}
    assert dead[0.01] == 2 and units["dead_units"] == [3, 7]
    assert units["clusters"] == [[1, 5]]  # the rescaled copy, balanced under ReLU
    assert units["independent_units"] == 16 - 2 - 1


def test_gelu_does_not_merge_rescaled_copies(tmp_path: Path) -> None:
    rep = _one(tmp_path, _planted(), "--activation", "gelu")
    assert rep["checkpoints"][0]["units"][0]["clusters"] == []


def test_gaussian_weights_have_no_dead_or_identical_units(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    sd = {
        "a.weight": torch.randn(64, 32, generator=g),
        "b.weight": torch.randn(10, 64, generator=g),
    }
    e = _one(tmp_path, sd)["checkpoints"][0]
    un = e["units"][0]
    assert all(d["dead"] == 0 for d in un["dead"]) and un["clusters"] == []
    for la in e["layers"]:
        r = next(r for r in la["ranks"] if r["tau"] == 0.01)
        assert r["excess_nullity_gaussian"] <= 0.5


def test_explicit_pairs_and_model_graph_pairs(tmp_path: Path) -> None:
    sd = _planted()
    sd = {k.replace("fc1", "enc").replace("fc2", "dec"): v for k, v in sd.items()}
    explicit = _one(tmp_path, sd, "--pair", "enc:dec:tanh")
    un = explicit["checkpoints"][0]["units"][0]
    assert (un["incoming"], un["outgoing"], un["activation"]) == ("enc", "dec", "tanh")
    (tmp_path / "net.py").write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.enc = torch.nn.Linear(8, 16)\n"
        "        self.act = torch.nn.Tanh()\n"
        "        self.dec = torch.nn.Linear(16, 4)\n"
        "def make():\n"
        "    return Net()\n"
    )
    graph = _one(tmp_path, sd, "--model", tmp_path / "net.py:make")
    un = graph["checkpoints"][0]["units"][0]
    assert (un["incoming"], un["outgoing"], un["activation"]) == ("enc", "dec", "tanh")


def test_subspaces_are_saved_orthonormal_and_named(tmp_path: Path) -> None:
    out = tmp_path / "sub.safetensors"
    _one(tmp_path, _planted(), "--save-subspaces", out)
    bases = load_file(str(out))
    broken, restored = bases["fc2.in.broken"], bases["fc2.in.restored"]
    assert broken.shape == (16, 2) and restored.shape == (16, 14)
    both = torch.cat([broken, restored], dim=1).double()
    assert torch.allclose(both.T @ both, torch.eye(16, dtype=torch.float64), atol=1e-10)
    w2 = _planted()["fc2.weight"].double()
    assert float((w2 @ restored.double()).norm()) < 1e-2 * float(w2.norm())
    assert bases["fc2.out.broken"].shape == (4, 2)


@pytest.mark.parametrize("names", [("a", "b"), ("runA/step_100", "runB/step_100")],
                         ids=["no-steps", "same-step"])
def test_subspaces_of_several_checkpoints_never_overwrite_each_other(tmp_path: Path, names):
    paths = []
    for seed, name in enumerate(names):
        path = tmp_path / f"{name}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(_planted(seed), str(path))
        paths.append(path)
    out = tmp_path / "sub.safetensors"
    res = _invoke("symmetry", *paths, "-f", "json", "--save-subspaces", out)
    assert res.exit_code == 0, res.output
    entries = json.loads(res.stdout)["checkpoints"]
    files = [Path(e["subspaces"]) for e in entries]
    assert len(set(files)) == 2 and all(f.is_file() for f in files)
    for e, f in zip(entries, files, strict=True):  # each file holds its own checkpoint's bases
        w2 = load_file(e["path"])["fc2.weight"].double()
        restored = load_file(str(f))["fc2.in.restored"].double()
        assert float((w2 @ restored).norm()) < 1e-2 * float(w2.norm())
    assert not torch.equal(*(load_file(str(f))["fc2.in.broken"] for f in files))


def _sequence(tmp_path: Path) -> Path:
    """Rank of a layer grows 1 → 2 → 3 at steps 20 and 50 (each held ≥ 2 checkpoints)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(3)
    u, _ = torch.linalg.qr(torch.randn(12, 12, generator=g))
    v, _ = torch.linalg.qr(torch.randn(12, 12, generator=g))
    for step in (0, 10, 20, 30, 40, 50, 60, 70):
        s = torch.zeros(12)
        s[0] = 1.0
        s[1] = 0.5 if step >= 20 else 1e-4
        s[2] = 0.3 if step >= 50 else 1e-4
        w = (u * s) @ v.T
        save_file(
            {"lin.weight": w.float().contiguous()}, str(tmp_path / f"step_{step}.safetensors")
        )
    return tmp_path


def test_sequence_events_and_modes_at_the_right_steps(tmp_path: Path) -> None:
    res = _invoke("symmetry", _sequence(tmp_path), "-f", "json")
    assert res.exit_code == 0, res.output
    seq = json.loads(res.stdout)["sequence"]
    rank_events = [
        (ev["step"], ev["label"], ev["after"]) for ev in seq["events"] if ev["quantity"] == "rank"
    ]
    assert rank_events == [(20, "breaking", 2), (50, "breaking", 3)]
    assert [(m["mode"], m["step"]) for m in seq["modes"]] == [(2, 20), (3, 50)]


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE_FIELDS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def test_resume_gives_the_same_report(tmp_path: Path) -> None:
    run = _sequence(tmp_path / "run")
    full, part = tmp_path / "full.json", tmp_path / "part.json"
    assert _invoke("symmetry", run, "-o", full).exit_code == 0
    rep = json.loads(full.read_text())
    rep["checkpoints"], rep["complete"], rep["sequence"] = rep["checkpoints"][:3], False, None
    part.write_text(json.dumps(rep))
    assert _invoke("symmetry", run, "-o", part, "--resume").exit_code == 0
    assert _strip(json.loads(part.read_text())) == _strip(json.loads(full.read_text()))


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_fixture_renders(fixtures_dir: Path, fmt: str) -> None:
    res = _invoke("symmetry", fixtures_dir / "mlp_wd", "--last", "3", "-f", fmt)
    assert res.exit_code == 0, res.output
    if fmt == "csv":
        rows = res.stdout.strip().splitlines()
        assert rows[0].startswith("step,checkpoint,layer,group,quantity,tau,value")
        assert any(",units,dead,0.01," in r for r in rows)
    else:
        assert "rotation symmetry" in res.stdout and "Hidden units" in res.stdout


def test_all_values_lists_the_exact_singular_values(tmp_path: Path) -> None:
    sd = _planted()
    rep = _one(tmp_path, sd, "--all-values")
    layer = next(la for la in rep["checkpoints"][0]["layers"] if la["name"] == "fc1")
    expected = torch.linalg.svdvals(sd["fc1.weight"].double())
    assert torch.allclose(
        torch.tensor(layer["singular_values"], dtype=torch.float64),
        expected,
        rtol=1e-10,
        atol=1e-12,
    )


def test_linear_pair_in_json_table_and_csv(tmp_path: Path) -> None:
    sd = _planted()
    rep = _one(tmp_path, sd, "--activation", "identity")
    pair = rep["checkpoints"][0]["units"][0]["linear_pair"]
    a = torch.cat([sd["fc1.weight"], sd["fc1.bias"][:, None]], 1).double()
    b = sd["fc2.weight"].double()
    assert pair["imbalance_norm"] == pytest.approx(
        float(torch.linalg.matrix_norm(a @ a.T - b.T @ b)), rel=1e-10)
    lam = torch.linalg.eigvalsh(a @ a.T + b.T @ b).flip(0).clamp_min(0)
    rank = int(((lam / lam[0]).sqrt() > 0.01).sum())
    assert {r["tau"]: r["count"] for r in pair["ranks"]}[0.01] == rank
    path = tmp_path / "model.safetensors"
    table = _invoke("symmetry", path, "--activation", "identity", "-f", "table")
    assert table.exit_code == 0, table.output
    assert f"linear pair fc1 → fc2: rank of K = AAᵀ + BᵀB @0.01 {rank}" in table.stdout
    csv = _invoke("symmetry", path, "--activation", "identity", "-f", "csv")
    assert any(f",pair_k_rank,0.01,{rank},ok," in r for r in csv.stdout.splitlines())
    assert _one(tmp_path, sd)["checkpoints"][0]["units"][0]["linear_pair"] is None


def test_records_that_could_not_be_analysed_show_their_reason(tmp_path: Path) -> None:
    """Table and CSV say why: a NaN layer, a zero classifier, heads that do not split."""
    g = torch.Generator().manual_seed(1)
    w1 = torch.randn(8, 4, generator=g)
    w1[0, 0] = float("nan")
    sd = {"fc1.weight": w1, "fc1.bias": torch.zeros(8), "fc2.weight": torch.zeros(3, 8),
          "fc2.bias": torch.zeros(3)}
    for n, rows in (("q", 16), ("k", 16), ("v", 16), ("o", 16)):
        sd[f"attn.{n}_proj.weight"] = torch.randn(rows, 16, generator=g)
    path = tmp_path / "m.safetensors"
    save_file(sd, str(path))
    table = _invoke("symmetry", path, "--heads", "3", "-f", "table")
    assert table.exit_code == 0, table.output
    text = table.stdout
    assert "non-finite weights" in text and "zero matrix" in text
    assert "softmax translation of fc2: zero matrix" in text
    assert "no per-head analysis: 16 query rows do not split into 3 heads" in text
    csv = _invoke("symmetry", path, "--heads", "3", "-f", "csv").stdout.splitlines()
    assert any(",fc1,rank,sigma_max,,,failed,non-finite weights" in r for r in csv)
    assert any(",attn,attention,heads,,3,failed,16 query rows do not split" in r for r in csv)
    assert any(",fc2,rank,sigma_max,,0.0,failed,zero matrix" in r for r in csv)
    assert any(",fc2,softmax,translation,,,failed,zero matrix" in r for r in csv)
