"""Hugging Face checkpoints: a folder with ``config.json`` builds its own model.

``save_pretrained`` folders and the Trainer's ``checkpoint-N/`` folders hold
``config.json`` beside ``model.safetensors`` (or ``pytorch_model.bin``, or shards). The
model is built with ``AutoModelFor*.from_config`` from the config's ``architectures``; no
weights are downloaded and nothing is unpickled: the shards are read by
:mod:`symtool.inputs.checkpoints` (``.bin`` only through ``torch.load(weights_only=True)``)
and ``training_args.bin``, ``optimizer.pt``, ``scheduler.pt`` and ``rng_state*.pth`` are
never opened. ``transformers`` is an optional extra (``symtool[hf]``), imported only here
and only when such a folder is analysed.

The config also says what :mod:`symtool.symmetry` cannot read from weights alone (heads,
key/value heads, head size, the MLP activation) and which loss the model was trained with
(:func:`default_loss`; docs/huggingface.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from symtool.errors import ModelError

CONFIG = "config.json"
EXTRA = "pip install 'symtool[hf]'"
"""How to install what Hugging Face checkpoints need (transformers, tokenizers)."""

_AUTO_CLASSES = (
    ("ForCausalLM", "AutoModelForCausalLM"),
    ("LMHeadModel", "AutoModelForCausalLM"),
    ("ForMaskedLM", "AutoModelForMaskedLM"),
    ("ForSequenceClassification", "AutoModelForSequenceClassification"),
    ("ForTokenClassification", "AutoModelForTokenClassification"),
    ("ForQuestionAnswering", "AutoModelForQuestionAnswering"),
    ("ForImageClassification", "AutoModelForImageClassification"),
)
"""Architecture-name suffix → the ``transformers`` auto class that builds it."""

_ACTIVATIONS = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_new": "gelu",
    "gelu_fast": "gelu",
    "gelu_pytorch_tanh": "gelu",
    "gelu_python": "gelu",
    "quick_gelu": "gelu",
    "silu": "silu",
    "swish": "silu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "linear": "identity",
    "identity": "identity",
    "leaky_relu": "leaky_relu",
    "elu": "elu",
    "softplus": "softplus",
}
"""``hidden_act``/``activation_function`` values → symtool's activation names
(:mod:`symtool.activations`); the gelu variants differ only in their approximation."""


@dataclass(frozen=True)
class Architecture:
    """What ``config.json`` says about a model.

    Attributes:
        name: the first of ``architectures`` (``GPT2LMHeadModel``, ``LlamaForCausalLM``),
            or None.
        model_type: ``gpt2``, ``llama``, ``bert``, ...
        heads: query heads per attention block, or None.
        kv_heads: key/value heads (grouped-query attention), or None (= heads).
        head_dim: size of one head, or None.
        activation: the MLP activation in symtool's names (``unknown`` if not one of them).
        hidden_act: the config's own activation name, or None.
        tied: whether the output head is tied to the input embedding.
        num_labels: classification labels (sequence/token classification heads).
        max_positions: the longest sequence the model takes (position embeddings), or None.
    """

    name: str | None
    model_type: str | None
    heads: int | None
    kv_heads: int | None
    head_dim: int | None
    activation: str
    hidden_act: str | None
    tied: bool
    num_labels: int | None
    max_positions: int | None = None


def config_dir(path: Path) -> Path | None:
    """The folder whose Hugging Face ``config.json`` describes a checkpoint (the checkpoint
    folder, or the folder of a checkpoint file), or None.

    A ``config.json`` is a Hugging Face model config when it is a JSON object naming
    ``model_type`` or ``architectures``; any other (a training script's own settings) is
    not one, and the checkpoint is read as before.
    """
    folder = path if path.is_dir() else path.parent
    if not (folder / CONFIG).is_file():
        return None
    try:
        data = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and ("model_type" in data or "architectures" in data):
        return folder
    return None


def read_config(folder: Path) -> dict[str, Any]:
    """``config.json`` as a dict.

    Raises:
        ModelError: unreadable or not a JSON object.
    """
    path = folder / CONFIG
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the model config ({exc})", path=path) from None
    if not isinstance(data, dict):
        raise ModelError("the model config is not a JSON object", path=path)
    return data


def _int(cfg: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = cfg.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def architecture(cfg: dict[str, Any]) -> Architecture:
    """Read the structure a config describes (names differ between model families)."""
    archs = cfg.get("architectures") or []
    name = archs[0] if archs and isinstance(archs[0], str) else None
    heads = _int(cfg, "num_attention_heads", "n_head", "num_heads", "n_heads")
    kv = _int(cfg, "num_key_value_heads", "n_kv_heads", "num_kv_heads")
    hidden = _int(cfg, "hidden_size", "n_embd", "d_model", "dim")
    head_dim = _int(cfg, "head_dim")
    if head_dim is None and heads and hidden and hidden % heads == 0:
        head_dim = hidden // heads
    act = cfg.get("hidden_act") or cfg.get("activation_function") or cfg.get("hidden_activation")
    act = act if isinstance(act, str) else None
    tied = cfg.get("tie_word_embeddings")
    labels = cfg.get("id2label")
    return Architecture(
        name=name,
        model_type=cfg.get("model_type") if isinstance(cfg.get("model_type"), str) else None,
        heads=heads,
        kv_heads=kv,
        head_dim=head_dim,
        activation=_ACTIVATIONS.get(act, "unknown") if act else "unknown",
        hidden_act=act,
        tied=True if tied is None else bool(tied),
        num_labels=len(labels) if isinstance(labels, dict) and labels else _int(cfg, "num_labels"),
        max_positions=_int(cfg, "max_position_embeddings", "n_positions", "n_ctx"),
    )


def default_loss(arch: Architecture | None) -> str:
    """The loss a Hugging Face head is trained with, by its architecture name.

    ``*ForCausalLM``/``*LMHeadModel``: ``causal_lm`` (logits at position t predict token
    t+1); ``*ForMaskedLM``: ``masked_lm`` (cross-entropy at each position whose label is
    not ``-100``); ``*ForTokenClassification``: ``cross_entropy`` over positions;
    ``*ForSequenceClassification``: ``cross_entropy``, or ``mse`` with one label
    (regression). Anything else: ``cross_entropy``.
    """
    name = (arch.name if arch is not None else None) or ""
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return "causal_lm"
    if name.endswith("ForMaskedLM"):
        return "masked_lm"
    if name.endswith("ForSequenceClassification") and arch is not None and arch.num_labels == 1:
        return "mse"
    return "cross_entropy"


def loss_note(checkpoint: Path, loss: str | None) -> str | None:
    """A note when a given loss is not the one the checkpoint's architecture trains with
    and the difference is silent (``cross_entropy`` on a causal LM scores each position
    against its own token instead of the next one); None otherwise."""
    folder = config_dir(checkpoint)
    if loss not in ("cross_entropy", "masked_lm") or folder is None:
        return None
    arch = architecture(read_config(folder))
    if default_loss(arch) != "causal_lm":
        return None
    return (
        f"--loss {loss} does not shift labels, but {arch.name} is a causal LM trained on the "
        "next token: without --loss its causal_lm is used"
    )


def require_transformers() -> Any:
    """The ``transformers`` module.

    Raises:
        ModelError: it is not installed (exit 2, naming the extra).
    """
    try:
        import transformers
    except ImportError:
        raise ModelError(
            "a Hugging Face checkpoint (config.json) needs transformers: " + EXTRA
        ) from None
    return transformers


def build_model(folder: Path) -> nn.Module:
    """The model ``folder/config.json`` describes, in float32 with random weights.

    The auto class comes from the architecture name (``GPT2LMHeadModel`` →
    ``AutoModelForCausalLM``); attention runs in the plain ("eager") implementation so
    every projection is an ordinary module call.

    Raises:
        ModelError: transformers is missing, or the config cannot build a model.
    """
    tf = require_transformers()
    arch = architecture(read_config(folder))
    auto_name = next(
        (auto for suffix, auto in _AUTO_CLASSES if (arch.name or "").endswith(suffix)),
        "AutoModel",
    )
    try:
        config = tf.AutoConfig.from_pretrained(str(folder), local_files_only=True)
        auto = getattr(tf, auto_name)
        try:
            model = auto.from_config(config, attn_implementation="eager", dtype=torch.float32)
        except TypeError:  # older transformers: no dtype keyword
            model = auto.from_config(config, attn_implementation="eager")
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ModelError(
            f"cannot build {arch.name or 'the model'} from its config "
            f"({type(exc).__name__}: {first})",
            path=folder / CONFIG,
        ) from exc
    return model.float().eval()


def is_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is ``transformers``' ``Conv1D`` (GPT-2's linear layer, weight
    stored ``d_in × d_out``), recognised without importing transformers."""
    cls = type(module)
    return (
        cls.__name__ == "Conv1D"
        and cls.__module__.startswith("transformers")
        and isinstance(getattr(module, "weight", None), torch.Tensor)
        and module.weight.ndim == 2
    )
