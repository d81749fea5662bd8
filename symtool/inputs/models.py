"""Build the model, load a state dict into it strictly, and pick the layers to capture.

docs/theory.md §1: a *layer* is one linear map ``W`` (``nn.Linear``; ``nn.Conv1d/2d/3d``
with its kernel reshaped to ``C_out × C_in·prod(kernel)``). Every other module that owns
parameters is recorded as skipped with a reason, never silently dropped.

Without a ``--model`` factory, a checkpoint that is a plain chain of linear layers is
rebuilt as an MLP whose state-dict keys are exactly the checkpoint's keys, so strict
loading works and reports use the checkpoint's layer names.

Before that, :func:`prepare_state` takes the keys under an explicit ``--strip-prefix`` and
names a single module's bare ``weight``/``bias`` :data:`SINGLE_MODULE`; with a factory,
:func:`fit_prefix` removes a wrapper prefix (Lightning's ``model.``, ``net.``, ...) that
every key shares when the keys then fit the model exactly (docs/checkpoints.md).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from symtool.activations import FUNCTIONS, MODULES
from symtool.errors import ModelError
from symtool.inputs import hf
from symtool.inputs.imports import import_object

Tensor = torch.Tensor


_CONV_KINDS: dict[type[nn.Module], str] = {
    nn.Conv1d: "conv1d",
    nn.Conv2d: "conv2d",
    nn.Conv3d: "conv3d",
}
_LIST_LIMIT = 10

SINGLE_MODULE = "layer"
"""Layer name given to a single module's state dict (bare ``weight``/``bias`` keys)."""


# --------------------------------------------------------------------------- key prefixes
def normalize_prefix(prefix: str) -> str:
    """``model`` or ``model.`` → ``model.`` (a prefix is whole module-path components)."""
    prefix = prefix.strip()
    if not prefix.strip("."):
        raise ModelError(f"--strip-prefix {prefix!r}: give a module path such as model.")
    return prefix if prefix.endswith(".") else prefix + "."


def join_prefixes(*parts: str | None) -> str | None:
    """Prefixes removed one after the other, as one string (None when none was)."""
    joined = "".join(p for p in parts if p)
    return joined or None


def prepare_state(
    state_dict: Mapping[str, Tensor],
    *,
    strip_prefix: str | None = None,
    name_single: bool = True,
    source: object = None,
) -> tuple[dict[str, Tensor], str | None]:
    """The state dict an analysis reads, and the prefix taken off its keys.

    Args:
        state_dict: the checkpoint's tensors (``module.``/``_orig_mod.`` already removed by
            :func:`symtool.inputs.checkpoints.load`).
        strip_prefix: ``--strip-prefix``: keep only the keys under this prefix, without it
            (``student.`` of a distillation checkpoint; keys outside it are left out).
        name_single: name a single module's bare ``weight``/``bias`` keys
            ``layer.weight``/``layer.bias`` (:data:`SINGLE_MODULE`); off when a ``--model``
            factory's own keys are bare.
        source: the checkpoint path, named in errors.

    Raises:
        ModelError: no key starts with ``strip_prefix``.
    """
    out = dict(state_dict)
    prefix = None
    if strip_prefix is not None:
        prefix = normalize_prefix(strip_prefix)
        out = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if not out:
            raise ModelError(
                f"--strip-prefix {strip_prefix!r}: no key starts with {prefix!r}; keys: "
                + _listing(list(state_dict)),
                path=source,
            )
    if name_single:
        out = name_single_module(out)
    return out, prefix


def name_single_module(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``{weight, bias}`` of one module (``torch.save(nn.Linear(8, 4).state_dict())``) as
    ``layer.weight``/``layer.bias``; any other state dict unchanged."""
    keys = set(state_dict)
    if "weight" in keys and keys <= {"weight", "bias"}:
        return {f"{SINGLE_MODULE}.{k}": v for k, v in state_dict.items()}
    return dict(state_dict)


def fit_prefix(
    model: nn.Module, state_dict: Mapping[str, Tensor]
) -> tuple[dict[str, Tensor], str | None]:
    """Remove the leading module path every key shares when the rest fits ``model``.

    Lightning saves ``model.layer1.0.conv1.weight`` for a ``LightningModule`` holding the
    network as ``self.model``; other wrappers use ``net.``, ``student.``, .... The keys
    fit when, without the prefix, they are exactly the model's state-dict keys (shapes are
    checked by :func:`load_state`). Prefixes of one or more components are tried, shortest
    first.

    Returns:
        The state dict (unchanged when it fits already, or when no prefix makes it fit)
        and the prefix removed, or None.
    """
    expected = set(model.state_dict())
    keys = list(state_dict)
    if not keys or set(keys) == expected:
        return dict(state_dict), None
    prefix = ""
    while all(k.startswith(prefix) and "." in k[len(prefix) :] for k in keys):
        heads = {k[len(prefix) :].split(".", 1)[0] for k in keys}
        if len(heads) != 1:
            break
        prefix += heads.pop() + "."
        stripped = {k[len(prefix) :]: v for k, v in state_dict.items()}
        if set(complete_tied(model, stripped)) == expected:  # tied keys may be missing
            return stripped, prefix
    return dict(state_dict), None


def complete_tied(model: nn.Module, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Fill keys the file lacks because they are tied to a key it has.

    ``save_pretrained`` drops ``lm_head.weight`` when it is the input embedding; in the
    model both names hold one tensor, so the stored one is used for both.
    """
    out = dict(state_dict)
    shared: dict[tuple[int, tuple[int, ...]], list[str]] = {}
    for key, t in model.state_dict(keep_vars=True).items():
        shared.setdefault((t.data_ptr(), tuple(t.shape)), []).append(key)
    for keys in shared.values():
        have = next((k for k in keys if k in out), None)
        if have is not None and len(keys) > 1:
            for k in keys:
                out.setdefault(k, out[have])
    return out


# --------------------------------------------------------------------------- building
def build_model(
    factory: str | None,
    args: Mapping[str, Any] | None,
    state_dict: Mapping[str, Tensor],
    *,
    activation: str = "relu",
    base_dir: Path | None = None,
    config_dir: Path | None = None,
) -> nn.Module:
    """Build the model a state dict belongs to (weights are not loaded; see :func:`load_state`).

    Args:
        factory: ``module:callable`` returning an ``nn.Module`` (called with ``**args``),
            or ``None`` to rebuild a plain chain of linear layers (auto-MLP).
        args: keyword arguments for the factory.
        state_dict: the checkpoint's tensors (auto-MLP reads names, shapes and dtypes).
        activation: auto-MLP nonlinearity between layers (none after the last); one of
            :data:`symtool.activations.FUNCTIONS`.
        base_dir: folder a ``file.py:callable`` factory is relative to.
        config_dir: a Hugging Face checkpoint folder (``config.json``): without a factory,
            the model is built from its config (:func:`symtool.inputs.hf.build_model`).

    Raises:
        ModelError: the factory fails or returns something else, or (auto-MLP) the state
            dict is not a chain of linear layers, so ``--model`` is needed.
    """
    if factory is not None:
        fn = import_object(factory, base_dir)
        if not callable(fn):
            raise ModelError(f"model factory {factory!r} is not callable")
        try:
            model = fn(**dict(args or {}))
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise ModelError(
                f"model factory {factory!r} failed: {type(exc).__name__}: {first}"
            ) from exc
        if not isinstance(model, nn.Module):
            raise ModelError(
                f"model factory {factory!r} returned {type(model).__name__}, not an nn.Module"
            )
        return model
    if args:
        raise ModelError("model arguments were given but no --model factory to pass them to")
    if config_dir is not None:
        return hf.build_model(config_dir)
    if activation not in FUNCTIONS:
        raise ModelError(
            f"unknown activation {activation!r}; expected one of {', '.join(FUNCTIONS)}"
        )
    return _AutoMLP(_linear_chain(state_dict), activation)


def _linear_chain(state_dict: Mapping[str, Tensor]) -> list[tuple[str, Tensor, Tensor | None]]:
    """The ``(prefix, weight, bias)`` chain of a plain-MLP state dict, in key order."""
    why = _chain_problem(state_dict)
    if why:
        raise ModelError(
            f"checkpoint is not a plain chain of linear layers ({why}); "
            "pass --model module:factory to build its model"
        )
    layers: dict[str, dict[str, Tensor]] = {}
    for key, value in state_dict.items():
        prefix, _, leaf = key.rpartition(".")
        layers.setdefault(prefix, {})[leaf] = value
    return [(p, t["weight"], t.get("bias")) for p, t in layers.items()]


def _chain_problem(state_dict: Mapping[str, Tensor]) -> str:
    """Why a state dict is not an auto-MLP chain, or ``""`` when it is one."""
    if not state_dict:
        return "it has no tensors"
    layers: dict[str, dict[str, Tensor]] = {}
    for key, value in state_dict.items():
        prefix, dot, leaf = key.rpartition(".")
        if not dot or not prefix:
            return f"key {key!r} has no module prefix"
        if leaf not in ("weight", "bias"):
            return f"key {key!r} is neither a weight nor a bias"
        if not isinstance(value, Tensor):
            return f"{key!r} is not a tensor"
        layers.setdefault(prefix, {})[leaf] = value
    prev_out: int | None = None
    prev_name = ""
    for prefix, tensors in layers.items():
        w = tensors.get("weight")
        if w is None:
            return f"{prefix!r} has a bias but no weight"
        if w.ndim != 2:
            return f"{prefix}.weight has shape {tuple(w.shape)}, not 2-D"
        if not w.is_floating_point():
            return f"{prefix}.weight has dtype {w.dtype}"
        b = tensors.get("bias")
        if b is not None and tuple(b.shape) != (w.shape[0],):
            return f"{prefix}.bias has shape {tuple(b.shape)}, expected ({w.shape[0]},)"
        if prev_out is not None and w.shape[1] != prev_out:
            return f"{prefix}.weight takes {w.shape[1]} inputs but {prev_name} gives {prev_out}"
        prev_out, prev_name = w.shape[0], prefix
    for prefix in layers:
        for other in layers:
            if other.startswith(prefix + "."):
                return f"layer {prefix!r} also contains {other!r}"
    return ""


def _run_dtype(w: Tensor) -> torch.dtype:
    """The dtype an auto-MLP layer runs in: float32 for half-precision weights (bfloat16,
    float16: the storage format of LLM checkpoints, not a precision to compute in),
    else the weights' own. ``--dtype`` may still change it."""
    return w.dtype if w.dtype in (torch.float32, torch.float64) else torch.float32


class _AutoMLP(nn.Module):
    """Linear layers at the checkpoint's own module paths, applied in key order.

    Inputs whose last axis does not match the first layer are flattened from axis 1
    (e.g. images into an MLP).
    """

    def __init__(self, chain: list[tuple[str, Tensor, Tensor | None]], activation: str) -> None:
        super().__init__()
        self.activation = activation
        self._act = FUNCTIONS[activation]
        self._chain: list[nn.Linear] = []  # plain list: not registered twice
        for prefix, w, b in chain:
            parent: nn.Module = self
            *path, leaf = prefix.split(".")
            for part in path:
                child = parent._modules.get(part)
                if child is None:
                    child = nn.Module()
                    parent.add_module(part, child)
                parent = child
            layer = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, dtype=_run_dtype(w))
            parent.add_module(leaf, layer)
            self._chain.append(layer)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the chain with the activation between layers and none after the last."""
        if x.ndim > 2 and x.shape[-1] != self._chain[0].in_features:
            x = x.flatten(1)
        last = len(self._chain) - 1
        for i, layer in enumerate(self._chain):
            x = layer(x)
            if i < last:
                x = self._act(x)
        return x

    def extra_repr(self) -> str:
        """Show the activation in ``print(model)``."""
        return f"activation={self.activation}"


# --------------------------------------------------------------------------- loading
def load_state(model: nn.Module, state_dict: Mapping[str, Tensor], *, source: object) -> None:
    """Load a state dict strictly, listing every problem in one error.

    Args:
        model: the model to fill.
        state_dict: the checkpoint's tensors.
        source: the checkpoint path, named in the error.

    Raises:
        ModelError: missing keys, unexpected keys and shape mismatches, all in one line.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict
        and isinstance(state_dict[k], Tensor)
        and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    parts = []
    if missing:
        parts.append(f"missing {_listing(missing)}")
    if unexpected:
        parts.append(f"unexpected {_listing(unexpected)}")
    if mismatched:
        parts.append(f"shape mismatch {_listing(mismatched, noun='key')}")
    if parts:
        hint = _prefix_hint(missing, unexpected)
        raise ModelError(
            "state dict does not fit the model: " + "; ".join(parts) + hint, path=source
        )
    try:
        model.load_state_dict(dict(state_dict), strict=True)
    except (RuntimeError, TypeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"loading the state dict failed: {first}", path=source) from exc


def _listing(items: list[str], noun: str = "key") -> str:
    """``3 keys (a, b, c)``, truncated after a few names with a count."""
    shown = ", ".join(items[:_LIST_LIMIT])
    more = f", … and {len(items) - _LIST_LIMIT} more" if len(items) > _LIST_LIMIT else ""
    plural = "" if len(items) == 1 else "s"
    return f"{len(items)} {noun}{plural} ({shown}{more})"


def _prefix_hint(missing: list[str], unexpected: list[str]) -> str:
    """Name the wrapper prefix (DDP ``module.``, Lightning ``model.``, ...) that explains a
    mismatch, and the option that selects the keys under it."""
    if not missing or not unexpected:
        return ""
    heads = {k.split(".", 1)[0] for k in unexpected if "." in k}
    for prefix in ("module.", "_orig_mod.", "model.", *sorted(h + "." for h in heads)):
        under = [k[len(prefix) :] for k in unexpected if k.startswith(prefix)]
        if under and set(under) & set(missing):
            return (
                f" (checkpoint keys carry a {prefix!r} prefix; "
                f"--strip-prefix {prefix} keeps only the keys under it)"
            )
    return ""


# --------------------------------------------------------------------------- layers
@dataclass(frozen=True, eq=False)
class LayerRef:
    """One capturable linear map.

    Attributes:
        name: the module's name in ``model.named_modules()`` (the checkpoint's prefix).
        module: the ``nn.Linear`` or ``nn.ConvNd`` itself (hooks go on it).
        kind: ``"linear"``, ``"conv1d"``, ``"conv2d"`` or ``"conv3d"``.
        d_in: input width of ``W`` (conv: ``C_in · prod(kernel)``).
        d_out: output width of ``W``.
        transposed: the weight is stored ``d_in × d_out`` (``transformers``' ``Conv1D``,
            which computes ``x @ weight + bias``: ``W = weightᵀ``).
    """

    name: str
    module: nn.Module
    kind: str
    d_in: int
    d_out: int
    transposed: bool = False

    def weight_matrix(self) -> Tensor:
        """``W`` as ``d_out × d_in`` (conv kernels reshaped), detached, in the model's dtype."""
        w = self.module.weight.detach()
        return w.t() if self.transposed else w.reshape(w.shape[0], -1)


@dataclass(frozen=True)
class Skipped:
    """Something an analysis did not analyse (a module, a state-dict entry), and why.

    The one skipped record of ``align`` (modules) and ``ode`` (tensors); ``symmetry``'s
    :class:`symtool.symmetry.records.SkippedTensor` also records the tensor's shape.
    """

    name: str
    reason: str


def select_layers(
    model: nn.Module, patterns: list[str] | None = None
) -> tuple[list[LayerRef], list[Skipped]]:
    """Pick the layers to capture, and record every other parameterised module as skipped.

    Args:
        model: the built model.
        patterns: ``fnmatch`` globs on module names; ``None`` or empty selects every
            ``nn.Linear`` and ungrouped ``nn.Conv1d/2d/3d``. With patterns, modules that
            match but cannot be captured are reported as skipped.

    Raises:
        ModelError: a pattern matches no module (the message lists the layer names).
    """
    mha_children = _functional_children(model)
    layers: list[LayerRef] = []
    skipped: list[Skipped] = []
    names = []
    for name, module in model.named_modules():
        names.append(name)
        if patterns and not any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        label = name or "(root)"
        reason = mha_children.get(name) or _unsupported(module)
        if reason is None:
            layers.append(_layer_ref(label, module))
        elif reason and any(True for _ in module.parameters(recurse=False)):
            skipped.append(Skipped(label, reason))
    if patterns:
        unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in names)]
        if unmatched:
            available = [n for n in names if n]
            raise ModelError(
                f"layer pattern(s) {', '.join(map(repr, unmatched))} match no module; "
                f"modules: {_listing(available, noun='module')}"
            )
    return layers, skipped


def _layer_ref(name: str, module: nn.Module) -> LayerRef:
    """A :class:`LayerRef` for a supported module."""
    w = module.weight
    if hf.is_conv1d(module):
        return LayerRef(name, module, "linear", int(w.shape[0]), int(w.shape[1]), True)
    kind = "linear" if isinstance(module, nn.Linear) else _conv_kind(module)
    return LayerRef(name, module, kind, int(w[0].numel()), int(w.shape[0]))


def _conv_kind(module: nn.Module) -> str:
    """``conv1d``/``conv2d``/``conv3d`` for a (subclass of a) plain convolution."""
    for cls, kind in _CONV_KINDS.items():
        if isinstance(module, cls):
            return kind
    raise AssertionError(f"not a convolution: {type(module).__name__}")


def _functional_children(model: nn.Module) -> dict[str, str]:
    """Names of modules whose weights a parent applies functionally (their hooks never fire)."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            for child, _ in module.named_modules():
                if child:
                    full = f"{name}.{child}" if name else child
                    out[full] = (
                        "applied functionally by its parent nn.MultiheadAttention "
                        "(a forward hook on it never fires)"
                    )
    return out


def _unsupported(module: nn.Module) -> str | None:
    """Why a module is not captured (``""``: nothing to report), or ``None`` if it is."""
    if isinstance(module, nn.Linear) or hf.is_conv1d(module):
        if isinstance(module.weight, nn.parameter.UninitializedParameter):
            return "uninitialised lazy layer"
        return None
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return "transposed convolution is not supported"
    if isinstance(module, tuple(_CONV_KINDS)):
        if isinstance(module.weight, nn.parameter.UninitializedParameter):
            return "uninitialised lazy layer"
        if module.groups != 1:
            return (
                f"grouped convolution (groups={module.groups}) is not supported; "
                "each group would be its own layer"
            )
        return None
    return _skip_reason(module)


def _skip_reason(module: nn.Module) -> str:
    """The reason recorded for a parameterised module that is not a plain linear map."""
    kind = type(module).__name__
    if isinstance(module, nn.MultiheadAttention):
        return (
            "fused Q/K/V in_proj_weight and out_proj are applied functionally inside "
            "nn.MultiheadAttention, so no hook sees them"
        )
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return f"{kind} is a lookup table, not a linear map of a dense input"
    norms = (
        nn.LayerNorm,
        nn.GroupNorm,
        nn.LocalResponseNorm,
        nn.modules.batchnorm._NormBase,
    )
    if isinstance(module, norms) or "Norm" in kind:
        return f"{kind} is a normalisation (elementwise affine), not a dense linear map"
    if isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
        return f"{kind} applies its weights inside the recurrent cell (see the ODE analysis)"
    if isinstance(module, nn.Bilinear):
        return "nn.Bilinear maps two inputs; not a single linear map"
    if isinstance(module, nn.PReLU):
        return "nn.PReLU is a parametric activation, not a linear map"
    direct = [n for n, _ in module.named_parameters(recurse=False)]
    if not direct:
        return ""
    return (
        f"{kind} owns parameters ({', '.join(direct)}) used outside nn.Linear/nn.Conv1d/2d/3d; "
        "not captured"
    )


def graph_pairs(model: nn.Module) -> list[tuple[str, str, str]]:
    """Unit pairs ``(incoming, outgoing, activation)`` read from the model's module graph.

    Consecutive Linear/Conv modules in definition order whose widths chain are paired; the
    activation is the first activation module between them (``unknown`` if none, so no
    symmetry-specific transform is assumed). For the symmetry analysis with ``--model``.
    """
    out: list[tuple[str, str, str]] = []
    prev: tuple[str, int] | None = None
    act = "unknown"
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
            width_in = module.in_features if isinstance(module, nn.Linear) else module.in_channels
            if (
                prev is not None
                and width_in > 0
                and (prev[1] == width_in or width_in % prev[1] == 0)
            ):
                out.append((prev[0], name, act))
            linear = isinstance(module, nn.Linear)
            width_out = module.out_features if linear else module.out_channels
            prev, act = (name, width_out), "unknown"
        else:
            for cls, label in MODULES.items():
                if type(module) is cls and act == "unknown":
                    act = label
    return out
