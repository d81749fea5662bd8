"""Find linear maps, hidden-unit pairs and attention blocks in a state dict, from weights alone.

docs/theory.md §1 (what a layer is: linear and conv weights as ``d_out × d_in``
matrices; attention split into Q, K, V, O; everything else recorded as skipped) and
section 5 (unit pairs from consecutive layers whose shapes chain, or declared by the user).

Only names and shapes are read here; :func:`layer_matrix` materialises one float64 matrix
when an analysis needs it. The rules are documented for users in ``docs/symmetry.md``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from symtool.activations import NAMES as ACTIVATIONS
from symtool.errors import UsageError
from symtool.symmetry.records import SkippedTensor

Tensor = torch.Tensor

_EMBED_NAMES = frozenset({"wte", "wpe", "shared", "tok_embeddings"})
_GPT2_CONV1D = frozenset({"c_attn", "c_proj", "c_fc"})
_QKV_FAMILIES: tuple[tuple[tuple[str, str, str], tuple[str, ...]], ...] = (
    (("q_proj", "k_proj", "v_proj"), ("o_proj", "out_proj", "dense")),
    (("query", "key", "value"), ("out", "dense", "output.dense", "..output.dense")),
    (("q", "k", "v"), ("o",)),
    (("wq", "wk", "wv"), ("wo",)),
    (("to_q", "to_k", "to_v"), ("to_out.0", "to_out")),
)
"""(q, k, v) module names of one naming family and where its output projection lives:
a sibling name, or ``..name`` for a sibling of the parent (BERT's ``attention.output``)."""

_MLP_FAMILIES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("gate_proj", "up_proj"), "down_proj"),
    (("w1", "w3"), "w2"),
    (("c_fc",), "c_proj"),
    (("fc1",), "fc2"),
    (("intermediate.dense",), "output.dense"),
    (("dense_h_to_4h",), "dense_4h_to_h"),
    (("wi", "wi_0", "wi_1"), "wo"),
    (("lin1",), "lin2"),
)
"""(incoming, outgoing) module names of a transformer MLP, relative to one parent: the
incoming layers' outputs pass through the activation (a gated MLP multiplies gate and up)
into the outgoing layer. Llama/Mistral, Mixtral experts, GPT-2, OPT/ViT, BERT,
GPT-NeoX/Falcon, T5, DistilBERT."""

_HEAD_NAMES = ("lm_head", "score", "classifier", "cls.predictions.decoder")
"""Names of an output head (the softmax classifier), wherever it sits in the state dict."""

PairLike = tuple[str, str] | tuple[str, str, str]


@dataclass(frozen=True)
class LinearMap:
    """One linear map found in the state dict.

    Attributes:
        name: layer name: the weight key without ``.weight``; parts of a fused attention
            weight add ``.q``/``.k``/``.v``.
        key: state-dict key of the stored weight.
        bias_key: state-dict key of the bias, if any.
        shape: ``(d_out, d_in)`` as analysed.
        kind: ``linear``, ``conv`` or ``conv1d`` (GPT-2's transposed layout).
        channels_in: input channels (conv) or ``d_in`` (linear).
        kernel: ``prod(kernel)`` for conv, 1 otherwise.
        transposed: the stored weight is ``d_in × d_out`` (GPT-2 Conv1D).
        rows: row range of the analysed matrix inside the (transposed) stored weight.
        bias_rows: row range of the bias inside the stored bias.
        role: ``plain``, or ``q``/``k``/``v``/``o`` for attention projections.
        dtype: the stored dtype.
    """

    name: str
    key: str
    bias_key: str | None
    shape: tuple[int, int]
    kind: str
    channels_in: int
    kernel: int
    transposed: bool
    rows: tuple[int, int] | None
    bias_rows: tuple[int, int] | None
    role: str
    dtype: torch.dtype


@dataclass(frozen=True)
class PairSpec:
    """Two layers sharing hidden units: rows of ``incoming``, column groups of ``outgoing``."""

    incoming: str
    outgoing: str
    kind: str
    width: int
    source: str
    activation: str


@dataclass(frozen=True)
class AttentionSpec:
    """One attention block: names of its Q, K, V (and O) linear maps."""

    name: str
    layout: str
    q: str
    k: str
    v: str
    o: str | None


@dataclass(frozen=True)
class Layout:
    """What :func:`discover` found.

    Attributes:
        layers: every analysed linear map, in state-dict order.
        pairs: unit pairs (automatic, or the caller's).
        attention: attention blocks.
        skipped: tensors not analysed, with reasons.
        classifier: state-dict key of the classifier weight (rows = classes), or None.
        classifier_bias: key of its bias, or None.
        classifier_name: the name reported for the classifier.
    """

    layers: tuple[LinearMap, ...]
    pairs: tuple[PairSpec, ...]
    attention: tuple[AttentionSpec, ...]
    skipped: tuple[SkippedTensor, ...]
    classifier: str | None
    classifier_bias: str | None
    classifier_name: str | None

    def layer(self, name: str) -> LinearMap:
        """The linear map called ``name``."""
        for lm in self.layers:
            if lm.name == name:
                return lm
        raise KeyError(name)


def layer_matrix(state: Mapping[str, Tensor], lm: LinearMap) -> Tensor:
    """The layer's weight as a contiguous float64 ``d_out × d_in`` matrix.

    A transposed layout is made contiguous in its stored dtype before widening: torch
    copies a transposed float64 view an order of magnitude slower than it widens.
    """
    w = state[lm.key].detach()
    w = w.t() if lm.transposed else w.reshape(w.shape[0], -1)
    if lm.rows is not None:
        w = w[lm.rows[0] : lm.rows[1]]
    return w.to(device="cpu").contiguous().to(torch.float64)


def layer_bias(state: Mapping[str, Tensor], lm: LinearMap) -> Tensor | None:
    """The layer's bias as a float64 vector, or None."""
    if lm.bias_key is None:
        return None
    b = state[lm.bias_key].detach().reshape(-1)
    if lm.bias_rows is not None:
        b = b[lm.bias_rows[0] : lm.bias_rows[1]]
    return b.to(device="cpu", dtype=torch.float64)


def _module(key: str, suffix: str) -> str:
    """``key`` without ``suffix`` and the dot before it."""
    return key[: -len(suffix)].rstrip(".")


def _is_embedding(module: str) -> bool:
    """Whether a module name looks like an embedding table."""
    return any("emb" in part.lower() or part in _EMBED_NAMES for part in module.split("."))


def _join(prefix: str, name: str) -> str:
    """``prefix.name`` (or ``name`` at the top level)."""
    return f"{prefix}.{name}" if prefix else name


class _Finder:
    """One pass over a state dict that fills a :class:`Layout`."""

    def __init__(self, state: Mapping[str, Tensor]) -> None:
        self.state = state
        self.keys = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()]
        self.keyset = set(self.keys)
        self.claimed: dict[str, str] = {}  # key -> owner (layer name or attention block)
        self.layers: list[LinearMap] = []
        self.attention: list[AttentionSpec] = []
        self.skipped: list[SkippedTensor] = []
        self.tied: dict[str, str] = {}
        self.gpt2 = any(
            k.endswith("c_attn.weight")
            and state[k].dim() == 2
            and state[k].shape[1] == 3 * state[k].shape[0]
            for k in self.keys
        )

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.state[key].shape)

    def has(self, key: str, dim: int | None = None) -> bool:
        return key in self.keyset and (dim is None or self.state[key].dim() == dim)

    def add(
        self,
        name: str,
        key: str,
        bias_key: str | None,
        *,
        role: str = "plain",
        rows: tuple[int, int] | None = None,
        bias_rows: tuple[int, int] | None = None,
        transposed: bool = False,
        owner: str | None = None,
    ) -> LinearMap:
        w = self.state[key]
        if transposed:
            d_out, d_in, c_in, kernel, kind = w.shape[1], w.shape[0], w.shape[0], 1, "conv1d"
        elif w.dim() == 2:
            d_out, d_in, c_in, kernel, kind = w.shape[0], w.shape[1], w.shape[1], 1, "linear"
        else:
            kernel = math.prod(w.shape[2:])
            d_out, c_in, kind = w.shape[0], w.shape[1], "conv"
            d_in = c_in * kernel
        if rows is not None:
            d_out = rows[1] - rows[0]
        if bias_key is not None:
            b = self.state.get(bias_key)
            n_b = None
            if b is not None:
                n_b = b.numel() if bias_rows is None else bias_rows[1] - bias_rows[0]
            if b is None or not b.is_floating_point() or b.dim() != 1 or n_b != d_out:
                bias_key, bias_rows = None, None
        lm = LinearMap(name, key, bias_key, (d_out, d_in), kind, c_in, kernel, transposed,
                       rows, bias_rows, role, w.dtype)
        self.layers.append(lm)
        for k in (key, bias_key):
            if k is not None:
                self.claimed[k] = owner or name
        return lm

    def fused(self, key: str, prefix: str, layout: str, o_key: str | None, bias: str | None,
              transposed: bool) -> None:
        """Split a fused ``3d × d`` QKV weight (rows q, k, v) into three maps."""
        rows = self.shape(key)[1 if transposed else 0]
        if rows % 3:
            return
        d = rows // 3
        owner = f"attention:{prefix}"
        names = []
        base = _module(key, ".weight") if key.endswith(".weight") else _join(prefix, "in_proj")
        for i, part in enumerate("qkv"):
            span = (i * d, (i + 1) * d)
            names.append(self.add(f"{base}.{part}", key, bias, role=part, rows=span,
                                  bias_rows=span, transposed=transposed, owner=owner).name)
        o_name = None
        if o_key is not None and self.has(o_key, 2):
            o_bias: str | None = o_key[: -len("weight")] + "bias"
            if o_bias not in self.state:
                o_bias = None
            o_name = self.add(_module(o_key, ".weight"), o_key, o_bias, role="o",
                              transposed=transposed, owner=owner).name
        self.attention.append(AttentionSpec(prefix, layout, *names, o_name))

    def find_attention(self) -> None:
        for key in self.keys:
            if key in self.claimed or self.state[key].dim() != 2:
                continue
            if key.endswith("in_proj_weight"):
                prefix = _module(key, "in_proj_weight")
                bias = _join(prefix, "in_proj_bias")
                self.fused(key, prefix, "fused", _join(prefix, "out_proj.weight"),
                           bias if bias in self.state else None, transposed=False)
            elif key.endswith("q_proj_weight") and self.has(key[:-13] + "k_proj_weight"):
                self.mha_separate(key[:-13].rstrip("."))
            elif self.gpt2 and key.endswith("c_attn.weight"):
                prefix = _module(key, "c_attn.weight")
                bias = _join(prefix, "c_attn.bias")
                self.fused(key, prefix, "gpt2", _join(prefix, "c_proj.weight"),
                           bias if bias in self.state else None, transposed=True)
            elif key.endswith("qkv.weight") and self.shape(key)[0] == 3 * self.shape(key)[1]:
                prefix = _module(key, "qkv.weight")
                bias = _join(prefix, "qkv.bias")
                self.fused(key, prefix, "fused", _join(prefix, "proj.weight"),
                           bias if bias in self.state else None, transposed=False)
        self.find_separate()

    def mha_separate(self, prefix: str) -> None:
        """nn.MultiheadAttention with ``kdim``/``vdim``: separate weights, fused bias."""
        owner = f"attention:{prefix}"
        bias = _join(prefix, "in_proj_bias")
        names = []
        offset = 0
        for part in "qkv":
            key = _join(prefix, f"{part}_proj_weight")
            if not self.has(key, 2):
                return
            d = self.shape(key)[0]
            names.append(self.add(_join(prefix, f"{part}_proj"), key,
                                  bias if bias in self.state else None, role=part,
                                  bias_rows=(offset, offset + d), owner=owner).name)
            offset += d
        o_key = _join(prefix, "out_proj.weight")
        o_name = None
        if self.has(o_key, 2):
            o_bias = _join(prefix, "out_proj.bias")
            o_name = self.add(_join(prefix, "out_proj"), o_key,
                              o_bias if o_bias in self.state else None, role="o", owner=owner).name
        self.attention.append(AttentionSpec(prefix, "fused", *names, o_name))

    def find_separate(self) -> None:
        modules = {_module(k, ".weight"): k for k in self.keys
                   if k.endswith(".weight") and k not in self.claimed and self.state[k].dim() == 2}
        for module in list(modules):
            parent, _, last = module.rpartition(".")
            for (qn, kn, vn), o_names in _QKV_FAMILIES:
                if last != qn:
                    continue
                parts = [_join(parent, n) for n in (qn, kn, vn)]
                if not all(p in modules and modules[p] not in self.claimed for p in parts):
                    continue
                o_module = None
                for o in o_names:
                    cand = (_join(parent.rpartition(".")[0], o[2:]) if o.startswith("..")
                            else _join(parent, o))
                    if cand in modules and modules[cand] not in self.claimed:
                        o_module = cand
                        break
                owner = f"attention:{parent}"
                names = []
                for role, p in zip("qkv", parts, strict=True):
                    names.append(self.add(p, modules[p], p + ".bias", role=role, owner=owner).name)
                o_name = None
                if o_module is not None:
                    o_name = self.add(o_module, modules[o_module], o_module + ".bias", role="o",
                                      owner=owner).name
                self.attention.append(AttentionSpec(parent, "separate", *names, o_name))

    def find_plain(self) -> None:
        embeddings: list[str] = []
        for key in self.keys:
            if key in self.claimed:
                continue
            t = self.state[key]
            if not (key == "weight" or key.endswith(".weight")) or t.dim() < 2:
                continue
            module = _module(key, "weight") if key == "weight" else _module(key, ".weight")
            if t.dim() == 2 and _is_embedding(module):
                embeddings.append(key)
                self.claimed[key] = key
                self.skipped.append(SkippedTensor(key, tuple(t.shape),
                                            "embedding (a lookup table, not a linear map)"))
                continue
            tied = next((e for e in embeddings if self._same(key, e)), None)
            if tied is not None:
                self.claimed[key] = key
                self.tied[key] = tied
                self.skipped.append(SkippedTensor(key, tuple(t.shape), f"tied to embedding {tied}"))
                continue
            transposed = (self.gpt2 and t.dim() == 2
                          and module.rpartition(".")[2] in _GPT2_CONV1D)
            self.add(module, key, _join(module, "bias"), transposed=transposed)

    def _same(self, key: str, other: str) -> bool:
        a, b = self.state[key], self.state[other]
        if a.shape != b.shape:
            return False
        return a.data_ptr() == b.data_ptr() or bool(torch.equal(a, b))

    def record_rest(self) -> None:
        for key in self.keys:
            if key in self.claimed:
                continue
            t = self.state[key]
            if t.dim() == 0:
                reason = "scalar"
            elif t.dim() == 1:
                reason = "1-D parameter or buffer (norm scale/shift, running statistic, bias)"
            else:
                reason = "not a .weight tensor (buffer or unrecognised parameter)"
            self.skipped.append(SkippedTensor(key, tuple(t.shape), reason))


def _chain(a: LinearMap, b: LinearMap) -> tuple[str, int] | None:
    """How ``b`` consumes the outputs of ``a``: (kind, columns per unit), or None."""
    if b.channels_in == a.shape[0]:
        kind = "conv" if b.kind == "conv" else "linear"
        return kind, b.kernel
    if a.kind == "conv" and b.kind != "conv" and b.shape[1] % a.shape[0] == 0:
        return "conv_to_linear", b.shape[1] // a.shape[0]
    return None


def _auto_pairs(finder: _Finder, activation: str) -> list[PairSpec]:
    """Consecutive plain layers whose shapes chain, nothing else in between."""
    owners: list[str | None] = []
    for key in finder.keys:
        owner = finder.claimed.get(key)
        if not owners or owners[-1] != owner or owner is None:
            owners.append(owner)
    by_name = {lm.name: lm for lm in finder.layers}
    pairs = []
    for first, second in itertools.pairwise(owners):
        a, b = by_name.get(first or ""), by_name.get(second or "")
        if a is None or b is None or a.role != "plain" or b.role != "plain":
            continue
        chained = _chain(a, b)
        if chained is not None:
            pairs.append(PairSpec(a.name, b.name, chained[0], chained[1], "auto", activation))
    return pairs


def _mlp_pairs(finder: _Finder, activation: str) -> list[PairSpec]:
    """Transformer MLP pairs by name (:data:`_MLP_FAMILIES`) whose shapes chain."""
    by_name = {lm.name: lm for lm in finder.layers if lm.role == "plain"}
    pairs = []
    for name, b in by_name.items():
        for incoming, outgoing in _MLP_FAMILIES:
            if name != outgoing and not name.endswith("." + outgoing):
                continue
            parent = name[: -len(outgoing)].rstrip(".")
            for inc in incoming:
                a = by_name.get(_join(parent, inc))
                chained = None if a is None else _chain(a, b)
                if a is not None and chained is not None:
                    pairs.append(PairSpec(a.name, b.name, chained[0], chained[1], "structure",
                                          activation))
    return pairs


def has_named_head(state: Mapping[str, Tensor]) -> bool:
    """Whether the state dict stores an output head by name (:data:`_HEAD_NAMES`)."""
    for key in state:
        module = key.removesuffix(".weight")
        if module != key and (module in _HEAD_NAMES
                              or module.rpartition(".")[2] in _HEAD_NAMES[:2]):
            return True
    return False


def _explicit_pairs(finder: _Finder, pairs: Sequence[PairLike], activation: str) -> list[PairSpec]:
    """The caller's pairs, checked; every problem is reported in one error."""
    by_name = {lm.name: lm for lm in finder.layers}
    for lm in finder.layers:
        by_name.setdefault(lm.key, lm)
    out, errors = [], []
    for pair in pairs:
        if len(pair) not in (2, 3):
            errors.append(f"{pair!r}: expected (incoming, outgoing[, activation])")
            continue
        act = pair[2] if len(pair) == 3 else activation
        a, b = by_name.get(pair[0]), by_name.get(pair[1])
        missing = [n for n, lm in ((pair[0], a), (pair[1], b)) if lm is None]
        if missing:
            errors.append(f"{pair[0]}:{pair[1]}: no analysed layer named {', '.join(missing)}")
            continue
        if act not in ACTIVATIONS:
            errors.append(f"{pair[0]}:{pair[1]}: unknown activation {act!r}")
            continue
        chained = _chain(a, b)
        if chained is None:
            errors.append(f"{pair[0]}:{pair[1]}: shapes do not chain ({a.shape[0]} outputs, "
                          f"{b.shape[1]} inputs)")
            continue
        out.append(PairSpec(a.name, b.name, chained[0], chained[1], "explicit", act))
    if errors:
        raise UsageError("bad unit pairs: " + "; ".join(errors))
    return out


def discover(
    state: Mapping[str, Tensor],
    *,
    pairs: Sequence[PairLike] | None = None,
    activation: str = "relu",
    classifier: str | None = None,
    mlp_activation: str | None = None,
) -> Layout:
    """Find the linear maps, unit pairs, attention blocks and classifier of a state dict.

    Args:
        state: the checkpoint's state dict; non-float tensors are ignored.
        pairs: explicit ``(incoming, outgoing[, activation])`` layer names; they replace
            the automatic pairs. None: pair consecutive layers whose shapes chain.
        activation: activation of pairs that do not name one.
        classifier: layer name or state-dict key of the classifier weight (rows =
            classes); None picks the last layer when it ends the state dict; ``""``
            disables the softmax record.
        mlp_activation: activation of transformer MLP pairs (a Hugging Face config's
            ``hidden_act``); None: ``activation``.

    Returns:
        The layout; only names and shapes, no matrices.

    Raises:
        UsageError: an explicit pair or classifier is unknown or does not fit.
    """
    finder = _Finder(state)
    finder.find_attention()
    finder.find_plain()
    finder.record_rest()
    if pairs is None:
        # a transformer's MLP pairs by structure; consecutive layers elsewhere in it meet
        # through the residual stream or attention, never through hidden units
        # (a transformer's layers in different modules meet through the residual stream
        # or attention, never through hidden units: there chains stay inside one module)
        found = _mlp_pairs(finder, mlp_activation or activation)
        mlp = {(p.incoming, p.outgoing) for p in found}
        both = {n for pair in mlp for n in pair}
        found += [p for p in _auto_pairs(finder, activation)
                  if (p.incoming, p.outgoing) not in mlp
                  and not (p.incoming in both and p.outgoing in both)
                  and (not finder.attention
                       or p.incoming.rpartition(".")[0] == p.outgoing.rpartition(".")[0])]
        order = {lm.name: i for i, lm in enumerate(finder.layers)}
        found.sort(key=lambda p: (order[p.incoming], order[p.outgoing]))
    else:
        found = _explicit_pairs(finder, pairs, activation)
    cls_key, cls_bias, cls_name = _classifier(finder, classifier)
    position = {k: i for i, k in enumerate(finder.keys)}
    finder.layers.sort(key=lambda lm: (position[lm.key], lm.rows or (0, 0)))
    order = {k: i for i, k in enumerate(state)}
    finder.skipped.sort(key=lambda s: order.get(s.name, len(order)))
    return Layout(tuple(finder.layers), tuple(found), tuple(finder.attention),
                  tuple(finder.skipped), cls_key, cls_bias, cls_name)


def _classifier(
    finder: _Finder, classifier: str | None
) -> tuple[str | None, str | None, str | None]:
    """(weight key, bias key, name) of the classifier, or Nones."""
    if classifier == "":
        return None, None, None
    by_name = {lm.name: lm for lm in finder.layers}
    if classifier is not None:
        lm = by_name.get(classifier)
        lm = lm or next((m for m in finder.layers if m.key == classifier), None)
        if lm is not None and lm.rows is None and not lm.transposed:
            return lm.key, lm.bias_key, lm.name
        key = classifier if classifier in finder.state else _join(classifier, "weight")
        if key in finder.state and finder.state[key].dim() == 2:
            bias = key[: -len("weight")] + "bias" if key.endswith("weight") else None
            return key, bias if bias in finder.state else None, classifier
        raise UsageError(f"classifier {classifier!r}: no 2-D weight or plain layer by that name")
    if not finder.keys:
        return None, None, None
    for lm in finder.layers:  # an output head by name (untied lm_head: keys are sorted)
        if lm.role == "plain" and lm.kind == "linear" and (
            lm.name in _HEAD_NAMES or lm.name.rpartition(".")[2] in _HEAD_NAMES[:2]
        ):
            return lm.key, lm.bias_key, lm.name
    last = finder.keys[-1]
    owner = finder.claimed.get(last)
    lm = by_name.get(owner or "")
    if lm is not None and lm.role == "plain" and lm.kind == "linear":
        return lm.key, lm.bias_key, lm.name
    if last in finder.tied:
        return last, None, _module(last, ".weight")
    return None, None, None
