"""The Hugging Face fixture runs in one command: ``symtool align fixtures/gpt2`` (text
probe and tokenizer found beside the checkpoints) and ``symtool symmetry`` without flags."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from symtool.cli.app import app

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

runner = CliRunner()


def _invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.mark.parametrize(("kind", "n_layers"), [("gpt2", 9), ("llama", 15)])
def test_align_fixture_in_one_command(
    fixtures_dir: Path, tmp_path: Path, kind: str, n_layers: int
) -> None:
    run = tmp_path / kind
    shutil.copytree(fixtures_dir / kind, run)
    res = _invoke("align", run, "--last", "1", "--null-samples", "2", "--bootstrap", "0",
                  "--verify", "--dtype", "float64", "-f", "json")
    assert res.exit_code == 0, res.output
    assert "found beside the checkpoints" in res.stderr
    rep = json.loads(res.stdout)
    probe = rep["provenance"]["probe"]
    assert probe["path"].endswith("probe.txt") and probe["tokenizer"] == str(run)
    settings = rep["provenance"]["settings"]
    assert (settings["loss"], settings["seq_len"], settings["tokenizer"]) == ("causal_lm", 64,
                                                                              None)
    layers = rep["checkpoints"][0]["layers"]
    assert len(layers) == n_layers and layers[-1]["name"] == "lm_head"
    text = (run / "probe.txt").read_text().split()
    assert {la["rows"] for la in layers} == {len(text)}  # one row per word, no padding
    for la in layers:
        assert la["status"] == "ok"
        assert max(la["verify"]["h_b_error"], la["verify"]["g_a_error"]) <= 1e-10


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_symmetry_fixture_without_flags(fixtures_dir: Path, kind: str) -> None:
    res = _invoke("symmetry", fixtures_dir / kind, "--last", "1", "-f", "json")
    assert res.exit_code == 0, res.output
    entry = json.loads(res.stdout)["checkpoints"][0]
    assert all(a["heads"] == 4 and len(a["head_records"]) == 4 for a in entry["attention"])
    assert len(entry["attention"]) == 2
    acts = {u["activation"] for u in entry["units"]}
    assert acts == {"gelu" if kind == "gpt2" else "silu"}
    assert all(u["outgoing"].endswith(("c_proj", "down_proj")) for u in entry["units"])


def test_jsonl_probe_with_tokenizer_and_seq_len_flags(fixtures_dir: Path, tmp_path: Path) -> None:
    tok = tmp_path / "tok"
    tok.mkdir()
    shutil.copy(fixtures_dir / "gpt2" / "tokenizer.json", tok / "tokenizer.json")
    run = tmp_path / "gpt2"
    shutil.copytree(fixtures_dir / "gpt2", run)
    (run / "tokenizer.json").unlink()
    (run / "probe.txt").unlink()
    lines = ["the cat sees the moon .", "a bird helps my friend again ."]
    data = tmp_path / "p.jsonl"
    data.write_text("\n".join(json.dumps({"text": t}) for t in lines) + "\n")
    res = _invoke("align", run, "--data", data, "--last", "1", "--bootstrap", "0",
                  "-f", "json")
    assert res.exit_code == 2 and "--tokenizer DIR" in res.stderr
    res = _invoke("align", run, "--data", data, "--tokenizer", tok, "--seq-len", "5",
                  "--last", "1", "--bootstrap", "0", "-f", "json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    settings = rep["provenance"]["settings"]
    assert (settings["seq_len"], settings["tokenizer"]) == (5, str(tok))
    assert rep["provenance"]["probe"]["samples"] == 3  # 13 tokens in windows of 5
    assert {la["rows"] for la in rep["checkpoints"][0]["layers"]} == {13}


def test_an_unshifted_loss_on_a_causal_lm_is_noted(fixtures_dir: Path) -> None:
    res = _invoke("align", fixtures_dir / "gpt2", "--loss", "cross_entropy", "--last", "1",
                  "--bootstrap", "0", "-f", "json")
    assert res.exit_code == 0, res.output
    assert "does not shift labels" in res.stderr and "causal_lm" in res.stderr
    assert json.loads(res.stdout)["provenance"]["settings"]["loss"] == "cross_entropy"
    quiet = _invoke("align", fixtures_dir / "gpt2", "--last", "1", "--bootstrap", "0",
                    "-f", "json")
    assert "does not shift labels" not in quiet.stderr
