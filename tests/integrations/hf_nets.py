"""Tiny Hugging Face models for the Trainer tests (``--model tests.integrations.hf_nets:...``).

``Tiny`` is a ``PreTrainedModel`` whose linear maps are ``nn.Linear``; ``gpt2`` a 2-layer
GPT-2 from a local config (``Conv1D`` maps, tied head), ``gpt2_eager`` the same with eager
attention, as ``symtool align`` builds a Hugging Face checkpoint (PyTorch's fused SDPA
attention differs from it by float32 round-off).
"""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PretrainedConfig, PreTrainedModel

from tests.api.nets import mlp


class TinyConfig(PretrainedConfig):
    model_type = "symtool-tiny"


class Tiny(PreTrainedModel):
    """The test MLP as a ``PreTrainedModel``: logits without labels, else loss and logits."""

    config_class = TinyConfig

    def __init__(self, config: TinyConfig) -> None:
        super().__init__(config)
        self.net = mlp()

    def _init_weights(self, module: torch.nn.Module) -> None:
        """Keep torch's initialisation (seeded by the test)."""

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        logits = self.net(x)
        if labels is None:
            return logits
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}


def tiny() -> Tiny:
    return Tiny(TinyConfig())


def _config() -> GPT2Config:
    return GPT2Config(
        vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2,
        resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
    )


def gpt2() -> GPT2LMHeadModel:
    return GPT2LMHeadModel(_config())


def gpt2_eager() -> GPT2LMHeadModel:
    return GPT2LMHeadModel._from_config(_config(), attn_implementation="eager")
