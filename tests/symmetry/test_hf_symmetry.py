"""``symmetry`` on Hugging Face runs reads the architecture from config.json: heads and
key/value heads, MLP pairs by structure with the configured activation, the untied head
as the softmax classifier; a ``--model`` factory building the same model agrees."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from symtool.inputs import checkpoints as ck
from symtool.inputs import models
from symtool.symmetry.layout import discover, layer_matrix
from symtool.symmetry.records import SymmetrySettings
from symtool.symmetry.run import SymmetryRun, run_symmetry
from tests import hf_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {k: hf_runs.save_run(root, k) for k in ("gpt2", "llama", "bert")}


WANT = {
    # kind: (attention blocks, heads, kv heads, head dim, mlp pairs, activation, softmax layer)
    "gpt2": (
        [f"transformer.h.{i}.attn" for i in range(2)], 4, 4, 4,
        [(f"transformer.h.{i}.mlp.c_fc", f"transformer.h.{i}.mlp.c_proj") for i in range(2)],
        "gelu", None,
    ),
    "llama": (
        [f"model.layers.{i}.self_attn" for i in range(2)], 4, 2, 4,
        [(f"model.layers.{i}.mlp.{inc}", f"model.layers.{i}.mlp.down_proj")
         for i in range(2) for inc in ("gate_proj", "up_proj")],
        "silu", "lm_head",
    ),
}


def _check(entry: dict, kind: str) -> None:
    blocks, heads, kv, dh, pairs, act, head = WANT[kind]
    assert entry["status"] == "ok"
    att = entry["attention"]
    assert [a["name"] for a in att] == blocks
    for a in att:
        assert a["reason"] is None
        assert (a["heads"], a["kv_heads"], a["head_dim"]) == (heads, kv, dh)
        assert [h["index"] for h in a["head_records"]] == list(range(heads))
        assert all(len(h["qk_ranks"]) and len(h["ov_ranks"]) for h in a["head_records"])
    units = entry["units"]
    assert [(u["incoming"], u["outgoing"]) for u in units] == pairs
    assert {u["activation"] for u in units} == {act}
    assert {u["source"] for u in units} == {"structure"}
    for u in units:  # never across the residual stream: both ends in one MLP module
        assert u["incoming"].rpartition(".")[0] == u["outgoing"].rpartition(".")[0]
    assert (entry["softmax"] or {}).get("layer") == head


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_symmetry_reads_the_config(runs: dict[str, Path], kind: str) -> None:
    ckpts = ck.discover([runs[kind]])
    report = run_symmetry(ckpts, SymmetryRun(settings=SymmetrySettings()))
    for entry in report["checkpoints"]:
        _check(entry, kind)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_a_factory_building_the_same_model_agrees(
    runs: dict[str, Path], kind: str, tmp_path: Path
) -> None:
    (tmp_path / "factory.py").write_text(
        "from tests import hf_runs\n\n"
        f"def make():\n    return hf_runs.model({kind!r})\n"
    )
    ckpts = ck.discover([runs[kind]])
    run = SymmetryRun(settings=SymmetrySettings(), factory="factory.py:make", base_dir=tmp_path)
    report = run_symmetry(ckpts, run)
    for entry in report["checkpoints"]:
        _check(entry, kind)


def test_conv1d_is_read_as_its_transpose_in_both_analyses(runs: dict[str, Path]) -> None:
    ckpt = ck.discover([runs["gpt2"]])[0]
    sd = ck.load(ckpt).tensors
    lay = discover(sd)
    model = models.build_model(None, None, {}, config_dir=ckpt.path)
    models.load_state(model, models.complete_tied(model, sd), source=ckpt.path)
    refs = {r.name: r for r in models.select_layers(model)[0]}
    for name in ("transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_proj",
                 "transformer.h.0.attn.c_proj"):
        sym = layer_matrix(sd, lay.layer(name))
        assert torch.equal(sym, refs[name].weight_matrix().double())
    qkv = torch.cat([layer_matrix(sd, lay.layer(f"transformer.h.0.attn.c_attn.{p}"))
                     for p in "qkv"])
    assert torch.equal(qkv, refs["transformer.h.0.attn.c_attn"].weight_matrix().double())


def test_bert_pairs_its_mlp_and_has_no_false_classifier(runs: dict[str, Path]) -> None:
    report = run_symmetry(ck.discover([runs["bert"]]), SymmetryRun(settings=SymmetrySettings()))
    entry = report["checkpoints"][-1]
    assert [(u["incoming"], u["outgoing"], u["activation"]) for u in entry["units"]] == [
        (f"bert.encoder.layer.{i}.intermediate.dense", f"bert.encoder.layer.{i}.output.dense",
         "gelu") for i in range(2)
    ]
    assert [(a["name"], a["heads"], a["o"]) for a in entry["attention"]] == [
        (f"bert.encoder.layer.{i}.attention.self", 4,
         f"bert.encoder.layer.{i}.attention.output.dense") for i in range(2)
    ]
    # the MLM decoder is tied to the embedding and not stored; the last sorted layer
    # (cls.predictions.transform.dense, hidden -> hidden) is no classifier
    assert entry["softmax"] is None
