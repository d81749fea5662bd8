"""Text probes: a ``.txt`` or ``.jsonl`` file tokenised with the run's tokenizer.

The tokenizer is the one beside the checkpoints (``tokenizer.json`` or a Hugging Face
``tokenizer_config.json`` in a checkpoint folder or its parent) or ``--tokenizer DIR``.
Every document (the whole ``.txt``; each ``.jsonl`` line's ``text``) is encoded as the
tokenizer does by default (with its special tokens), the token ids are concatenated and
cut into windows of ``seq_len`` tokens; the last window is padded, and its padded
positions have attention mask 0 and label ``-100``, so they are never rows of any layer
(docs/huggingface.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from symtool.errors import ProbeError
from symtool.inputs.checkpoints import sha256
from symtool.inputs.hf import EXTRA
from symtool.inputs.probes import ProbeData

TEXT_SUFFIXES = (".txt", ".jsonl")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
SEQ_LEN = 128
"""Tokens per window when ``--seq-len`` is not given (fewer when the model's context is
shorter: :func:`window_length`)."""


def window_length(seq_len: int | None, max_positions: int | None) -> int:
    """``--seq-len``, or :data:`SEQ_LEN` capped at the model's context length."""
    if seq_len is not None:
        return seq_len
    return min(SEQ_LEN, max_positions) if max_positions else SEQ_LEN


def is_text(path: Path) -> bool:
    """Whether a probe file is text to tokenise."""
    return path.suffix.lower() in TEXT_SUFFIXES


def find_tokenizer(checkpoints: Iterable[Path]) -> Path | None:
    """The folder of the tokenizer beside the checkpoints (each checkpoint's folder, then
    its parent, where a Trainer run keeps it), or None."""
    for ckpt in checkpoints:
        folder = ckpt if ckpt.is_dir() else ckpt.parent
        for place in (folder, folder.parent):
            if any((place / name).is_file() for name in TOKENIZER_FILES):
                return place
    return None


def load_tokenizer(folder: Path) -> Callable[[str], list[int]]:
    """``text → token ids`` of the tokenizer in ``folder``.

    ``tokenizer.json`` is read with ``tokenizers``; otherwise ``transformers``'
    ``AutoTokenizer`` reads the folder (local files only).

    Raises:
        ProbeError: no tokenizer there, the library is missing, or it cannot be read.
    """
    try:
        if (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
            return lambda text: list(tok.encode(text).ids)
        if (folder / "tokenizer_config.json").is_file():
            from transformers import AutoTokenizer

            auto = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            return lambda text: list(auto(text)["input_ids"])
    except ImportError:
        raise ProbeError(f"a text probe needs the tokenizer libraries: {EXTRA}") from None
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ProbeError(f"cannot read the tokenizer ({first})", path=folder) from exc
    raise ProbeError(
        f"no tokenizer here (looked for {', '.join(TOKENIZER_FILES)})", path=folder
    )


def read_texts(path: Path) -> list[str]:
    """The documents of a text probe: the whole ``.txt``, or each ``.jsonl`` line's
    ``text`` field (blank lines skipped).

    Raises:
        ProbeError: unreadable, or a ``.jsonl`` line without a string ``text``.
    """
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProbeError(f"cannot read text probe ({exc})", path=path) from None
    if path.suffix.lower() == ".txt":
        return [raw]
    texts = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise ProbeError(f"line {number} is not JSON ({exc})", path=path) from None
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise ProbeError(f"line {number} has no string 'text' field", path=path)
        texts.append(text)
    return texts


def windows(ids: list[int], seq_len: int, pad: int = 0) -> dict[str, torch.Tensor]:
    """Token ids cut into ``seq_len`` windows: ``input_ids``, ``attention_mask`` (0 on the
    last window's padding) and ``labels`` (``-100`` there)."""
    n = max(1, -(-len(ids) // seq_len))
    flat = torch.full((n * seq_len,), pad, dtype=torch.int64)
    flat[: len(ids)] = torch.tensor(ids, dtype=torch.int64)
    mask = torch.zeros(n * seq_len, dtype=torch.int64)
    mask[: len(ids)] = 1
    input_ids, attention = flat.reshape(n, seq_len), mask.reshape(n, seq_len)
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "labels": input_ids.masked_fill(attention == 0, -100),
    }


def text_probe(
    path: Path, tokenizer: Path | None, seq_len: int, samples: int | None = None
) -> ProbeData:
    """A token probe from a text file.

    Args:
        path: the ``.txt``/``.jsonl`` file.
        tokenizer: the tokenizer's folder (``--tokenizer``, or the one beside the
            checkpoints); None is an error.
        seq_len: tokens per window.
        samples: keep the first N windows.

    Raises:
        ProbeError: no tokenizer, no tokens, or an unreadable file.
    """
    if not path.is_file():
        raise ProbeError("probe file not found", path=path)
    if tokenizer is None:
        raise ProbeError(
            "a text probe needs the run's tokenizer: put tokenizer.json beside the "
            "checkpoints or pass --tokenizer DIR",
            path=path,
        )
    if seq_len < 2:
        raise ProbeError(f"--seq-len must be at least 2, got {seq_len}", path=path)
    encode = load_tokenizer(tokenizer)
    ids = [i for text in read_texts(path) for i in encode(text)]
    if not ids:
        raise ProbeError("the text probe has no tokens", path=path)
    t = windows(ids, seq_len)
    if samples is not None:
        t = {k: v[:samples] for k, v in t.items()}
    keep = t["attention_mask"].bool()
    x = {"input_ids": t["input_ids"], "attention_mask": t["attention_mask"]}
    return ProbeData(path, sha256(path), x, t["labels"], keep, ("text",),
                     "input_ids", "input_ids")
