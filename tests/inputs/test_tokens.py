"""Text probes (:mod:`symtool.inputs.tokens`): tokenised with the run's tokenizer, cut
into windows, padding masked out of rows and labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("tokenizers")

from symtool.errors import ProbeError
from symtool.inputs import tokens

TEXT = "the cat sat on the mat . the dog ate the bone . a bird flew over the tree ."


def _tokenizer(folder: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([TEXT], trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def test_windows_pad_only_the_last_and_mask_it() -> None:
    t = tokens.windows(list(range(1, 11)), 4)
    assert t["input_ids"].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 0, 0]]
    assert t["attention_mask"].tolist() == [[1] * 4, [1] * 4, [1, 1, 0, 0]]
    assert t["labels"][2].tolist() == [9, 10, -100, -100]
    assert tokens.windows(list(range(8)), 4)["attention_mask"].all()


def test_text_probe_tokenises_with_the_tokenizer_beside_the_checkpoints(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ckpt = run / "checkpoint-5"
    ckpt.mkdir(parents=True)
    _tokenizer(run)
    assert tokens.find_tokenizer([ckpt]) == run
    (run / "probe.txt").write_text(TEXT)
    data = tokens.text_probe(run / "probe.txt", run, seq_len=8)
    words = TEXT.split()
    vocab = json.loads((run / "tokenizer.json").read_text())["model"]["vocab"]
    want = [vocab[w] for w in words]
    assert data.x["input_ids"][data.mask].tolist() == want  # every token once, in order
    assert int(data.mask.sum()) == len(words)  # padded positions are no rows
    assert data.n == -(-len(words) // 8)
    assert bool((data.y[~data.mask] == -100).all())
    assert torch.equal(data.y[data.mask], data.x["input_ids"][data.mask])
    assert tokens.text_probe(run / "probe.txt", run, seq_len=8, samples=1).n == 1


def test_jsonl_reads_each_text_field(tmp_path: Path) -> None:
    tok = _tokenizer(tmp_path / "tok")
    lines = [json.dumps({"text": "the cat sat"}), "", json.dumps({"text": "a bird", "id": 3})]
    (tmp_path / "p.jsonl").write_text("\n".join(lines))
    assert tokens.read_texts(tmp_path / "p.jsonl") == ["the cat sat", "a bird"]
    data = tokens.text_probe(tmp_path / "p.jsonl", tok, seq_len=4)
    assert int(data.mask.sum()) == 5
    (tmp_path / "bad.jsonl").write_text(json.dumps({"content": "x"}))
    with pytest.raises(ProbeError, match="line 1 has no string 'text'"):
        tokens.read_texts(tmp_path / "bad.jsonl")


def test_a_text_probe_without_a_tokenizer_says_how_to_give_one(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text(TEXT)
    with pytest.raises(ProbeError, match="--tokenizer DIR"):
        tokens.text_probe(tmp_path / "p.txt", None, seq_len=8)
    with pytest.raises(ProbeError, match="no tokenizer here"):
        tokens.text_probe(tmp_path / "p.txt", tmp_path, seq_len=8)
