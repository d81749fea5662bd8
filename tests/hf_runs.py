"""Tiny Hugging Face runs written under tmp_path: GPT-2 (Conv1D, tied head), Llama
(grouped-query attention, SiLU gate, untied head) and BERT (masked LM), built from local
configs with random weights, saved with ``save_pretrained`` as ``checkpoint-N/`` folders
with a token probe beside them. Used by the inputs, align and symmetry tests."""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 40
SEQ = 12


def config(kind: str):
    """A small config of ``kind`` (``gpt2``, ``llama``, ``bert``)."""
    import transformers as tf

    if kind == "gpt2":
        return tf.GPT2Config(
            vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=4, n_positions=32,
            bos_token_id=0, eos_token_id=0, architectures=["GPT2LMHeadModel"],
        )
    if kind == "llama":
        return tf.LlamaConfig(
            vocab_size=VOCAB, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
            tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, pad_token_id=None,
            hidden_act="silu", architectures=["LlamaForCausalLM"],
        )
    if kind == "bert":
        return tf.BertConfig(
            vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=24, max_position_embeddings=32, pad_token_id=0,
            architectures=["BertForMaskedLM"],
        )
    raise ValueError(kind)


def model(kind: str, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised model of ``kind``, float32, eval mode."""
    import transformers as tf

    torch.manual_seed(seed)
    auto = tf.AutoModelForMaskedLM if kind == "bert" else tf.AutoModelForCausalLM
    return auto.from_config(config(kind), attn_implementation="eager").float().eval()


def token_probe(seed: int = 1, n: int = 5) -> dict[str, torch.Tensor]:
    """``input_ids`` and an ``attention_mask`` whose first two sequences are right-padded."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, SEQ), generator=g)
    mask = torch.ones(n, SEQ, dtype=torch.int64)
    mask[0, 8:] = 0
    mask[1, 5:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    return {"input_ids": ids, "attention_mask": mask}


def save_run(root: Path, kind: str, steps: tuple[int, ...] = (10, 20)) -> Path:
    """``root/kind/checkpoint-N/`` for each step (weights perturbed between steps), and
    ``probe.safetensors`` beside them. Returns the run folder."""
    from safetensors.torch import save_file

    run = root / kind
    m = model(kind)
    g = torch.Generator().manual_seed(7)
    for step in steps:
        m.save_pretrained(run / f"checkpoint-{step}")
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    save_file(token_probe(), run / "probe.safetensors")
    return run
