"""Find checkpoints, order them by training step, and load them safely.

Discovery accepts files, directories and globs; a directory yields every checkpoint
file in it and every Hugging Face style sub-directory (``checkpoint-1200/``) that
holds a model file. Ordering rule (docs/checkpoints.md): by the training step parsed
from the name, then names without a step in natural order.

Loading never runs code unless asked: safetensors are read tensor by tensor;
``.pt/.pth/.bin/.ckpt`` go through ``torch.load(weights_only=True)``, and a file that
needs full unpickling is refused unless ``trust_pickle`` is set.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import pickle
import re
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from symtool.errors import CheckpointError, PickleRefused, UsageError

SAFETENSORS_EXT = (".safetensors",)
PICKLE_EXT = (".pt", ".pth", ".bin", ".ckpt")
CHECKPOINT_EXT = SAFETENSORS_EXT + PICKLE_EXT

# Files that sit beside checkpoints but are not model weights.
_NOT_WEIGHTS = re.compile(
    r"^(probe|probes|data|dataset|inputs|batch|optimizer|optim|scheduler|scaler|"
    r"rng_state|training_args|trainer_state|subspaces|matrices)([_.-].*)?$",
    re.IGNORECASE,
)
# Model files inside a Hugging Face style checkpoint directory, in order of preference.
_HF_MODEL_FILES = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)
_STEP_PATTERNS = (
    re.compile(r"(?:^|[^a-z])(?:global_)?steps?[_=-]?(\d+)", re.IGNORECASE),
    re.compile(r"checkpoint[_=-](\d+)", re.IGNORECASE),
    re.compile(r"(?:^|[^a-z])(?:iter|iteration|it)[_=-]?(\d+)", re.IGNORECASE),
    re.compile(r"(\d+)$"),
)
_UNSAFE_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)")
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint found on disk.

    Attributes:
        path: the checkpoint file, or the Hugging Face style directory.
        step: training step parsed from the name; None if the name has none.
        format: ``safetensors``, ``safetensors-sharded``, ``pickle`` or ``pickle-sharded``.
        files: the files that hold its tensors (one, or the shards).
    """

    path: Path
    step: int | None
    format: str
    files: tuple[Path, ...]

    @property
    def name(self) -> str:
        """The checkpoint's file or directory name."""
        return self.path.name

    @property
    def size(self) -> int:
        """Total bytes of its tensor files."""
        return sum(f.stat().st_size for f in self.files)


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape and dtype of one tensor, read without loading its data."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A state dict and what unwrapping it took."""

    tensors: dict[str, torch.Tensor]
    container: str | None
    stripped_prefix: str | None
    dropped: tuple[str, ...]
    meta_step: int | None


def parse_step(name: str) -> int | None:
    """Training step from a checkpoint name (``step_000100``, ``epoch=3-step=800``, ...).

    The extension is ignored; the first matching pattern wins: ``step``/``global_step``,
    ``checkpoint-N``, ``iter``/``it``, then a trailing number.
    """
    stem = name
    for ext in (*CHECKPOINT_EXT, ".index.json", ".json"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    for pattern in _STEP_PATTERNS:
        found = pattern.findall(stem)
        if found:
            return int(found[-1])
    return None


def _natural_key(name: str) -> tuple[object, ...]:
    parts = re.split(r"(\d+)", name.lower())
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p != "")


def sort_key(ckpt: Checkpoint) -> tuple[object, ...]:
    """Step order first, then names without a step in natural order."""
    if ckpt.step is not None:
        return (0, ckpt.step, _natural_key(str(ckpt.path)))
    return (1, 0, _natural_key(str(ckpt.path)))


def _is_weights_file(path: Path, exclude: set[Path]) -> bool:
    if path.resolve() in exclude or not path.is_file():
        return False
    name = path.name
    if not name.lower().endswith(CHECKPOINT_EXT) or name.endswith(".index.json"):
        return False
    stem = name.rsplit(".", 1)[0]
    return not _NOT_WEIGHTS.match(stem)


def _hf_dir(path: Path) -> Checkpoint | None:
    """A Hugging Face style directory holding a model file, as one checkpoint."""
    for fname in _HF_MODEL_FILES:
        f = path / fname
        if not f.is_file():
            continue
        if fname.endswith(".index.json"):
            shards = _index_shards(f)
            fmt = "safetensors-sharded" if "safetensors" in fname else "pickle-sharded"
            return Checkpoint(path, parse_step(path.name), fmt, shards)
        fmt = "safetensors" if fname.endswith(".safetensors") else "pickle"
        return Checkpoint(path, parse_step(path.name), fmt, (f,))
    return None


def _index_shards(index: Path) -> tuple[Path, ...]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"unreadable shard index ({exc})", index) from None
    shards = tuple(dict.fromkeys(index.parent / v for v in weight_map.values()))
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        raise CheckpointError(f"shard index names missing files: {', '.join(missing)}", index)
    return shards


def _file_checkpoint(path: Path) -> Checkpoint:
    name = path.name.lower()
    if name.endswith(".index.json"):
        shards = _index_shards(path)
        fmt = "safetensors-sharded" if "safetensors" in name else "pickle-sharded"
        return Checkpoint(path, parse_step(path.parent.name), fmt, shards)
    if name.endswith(SAFETENSORS_EXT):
        return Checkpoint(path, parse_step(path.name), "safetensors", (path,))
    if name.endswith(PICKLE_EXT):
        return Checkpoint(path, parse_step(path.name), "pickle", (path,))
    raise CheckpointError(
        "not a checkpoint (expected .safetensors, .pt, .pth, .bin, .ckpt or an index .json)",
        path,
    )


def _scan_dir(directory: Path, exclude: set[Path]) -> list[Checkpoint]:
    found: list[Checkpoint] = []
    for child in sorted(directory.iterdir()):
        if child.is_dir():
            hf = _hf_dir(child)
            if hf is not None:
                found.append(hf)
        elif _is_weights_file(child, exclude):
            found.append(_file_checkpoint(child))
    if not found:
        hf = _hf_dir(directory)
        if hf is not None:
            found.append(hf)
    return found


def discover(paths: Iterable[str | Path], exclude: Iterable[Path] = ()) -> list[Checkpoint]:
    """Every checkpoint named by ``paths`` (files, directories, globs), in step order.

    Args:
        paths: what the user gave on the command line.
        exclude: files never to treat as checkpoints (e.g. the configured probe data).

    Raises:
        CheckpointError: a path does not exist, or a directory/glob holds no checkpoint.
    """
    excluded = {Path(p).resolve() for p in exclude}
    found: dict[Path, Checkpoint] = {}
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            hits = _scan_dir(p, excluded)
            if not hits:
                raise CheckpointError(
                    "no checkpoints found in directory (looked for "
                    + ", ".join(CHECKPOINT_EXT)
                    + " files and checkpoint-N/ sub-directories)",
                    p,
                )
        elif p.is_file():
            hits = [_file_checkpoint(p)]
        elif glob.has_magic(str(raw)):
            matches = [Path(m) for m in sorted(glob.glob(str(raw)))]
            hits = []
            for m in matches:
                if m.is_dir():
                    hf = _hf_dir(m)
                    hits += [hf] if hf else _scan_dir(m, excluded)
                elif _is_weights_file(m, excluded):
                    hits.append(_file_checkpoint(m))
            if not hits:
                raise CheckpointError("pattern matches no checkpoint", raw)
        else:
            raise CheckpointError("no such file or directory", p)
        for h in hits:
            found.setdefault(h.path.resolve(), h)
    return sorted(found.values(), key=sort_key)


def parse_steps(spec: str) -> list[tuple[int, int]]:
    """Parse ``--steps`` (``100,200,500-1000``) into inclusive ranges."""
    ranges: list[tuple[int, int]] = []
    for part in spec.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise UsageError(f"--steps: cannot read {part!r} (use e.g. 100,200,500-1000)")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        ranges.append((min(lo, hi), max(lo, hi)))
    return ranges


def select(
    ckpts: list[Checkpoint],
    *,
    steps: str | None = None,
    every: int | None = None,
    last: int | None = None,
) -> list[Checkpoint]:
    """A subset: steps in the ``steps`` ranges, then every ``every``-th, then the last N.

    The first and last checkpoints of the sequence are kept by ``every`` so a run
    always covers initialisation and the end of training.
    """
    out = ckpts
    if steps is not None:
        ranges = parse_steps(steps)
        out = [c for c in out if c.step is not None and any(a <= c.step <= b for a, b in ranges)]
    if every is not None:
        if every < 1:
            raise UsageError("--every must be at least 1")
        keep = {i for i in range(0, len(out), every)} | ({len(out) - 1} if out else set())
        out = [c for i, c in enumerate(out) if i in keep]
    if last is not None:
        if last < 1:
            raise UsageError("--last must be at least 1")
        out = out[-last:]
    return out


def sha256(path: Path, *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    except OSError as exc:
        raise CheckpointError(f"cannot read ({exc.strerror or exc})", path) from None
    return h.hexdigest()


def checkpoint_sha256(ckpt: Checkpoint) -> str:
    """sha256 of a checkpoint: of its file, or of its shards' hashes in order."""
    if len(ckpt.files) == 1:
        return sha256(ckpt.files[0])
    h = hashlib.sha256()
    for f in ckpt.files:
        h.update(bytes.fromhex(sha256(f)))
    return h.hexdigest()


# ---------------------------------------------------------------------------- reading


def _safe_open(path: Path):
    from safetensors import safe_open

    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except FileNotFoundError:
        raise CheckpointError("no such file", path) from None
    except Exception as exc:  # safetensors raises its own error type for every defect
        raise CheckpointError(f"not a valid safetensors file ({_first_line(exc)})", path) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def iter_safetensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Tensors of a safetensors file, one at a time (never the whole file at once)."""
    with _safe_open(path) as fh:
        for key in fh.keys():
            try:
                yield key, fh.get_tensor(key)
            except Exception as exc:
                raise CheckpointError(
                    f"tensor {key!r} cannot be read ({_first_line(exc)})", path
                ) from None


def tensor_infos(ckpt: Checkpoint, *, trust_pickle: bool = False) -> list[TensorInfo]:
    """Names, shapes and dtypes, read from safetensors headers without loading data."""
    if ckpt.format.startswith("safetensors"):
        infos: list[TensorInfo] = []
        for f in ckpt.files:
            with _safe_open(f) as fh:
                for key in fh.keys():
                    sl = fh.get_slice(key)
                    infos.append(TensorInfo(key, tuple(sl.get_shape()), _st_dtype(sl.get_dtype())))
        return infos
    loaded = load(ckpt, trust_pickle=trust_pickle)
    return [
        TensorInfo(k, tuple(v.shape), str(v.dtype).removeprefix("torch."))
        for k, v in loaded.tensors.items()
    ]


_ST_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}


def _st_dtype(code: str) -> str:
    return _ST_DTYPES.get(code, code.lower())


def _torch_load(path: Path, *, trust_pickle: bool) -> object:
    if not path.is_file():
        raise CheckpointError("no such file", path)
    if path.stat().st_size == 0:
        raise CheckpointError("file is empty", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own notes on pickle protocols
            return torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except pickle.UnpicklingError as exc:
        found = _UNSAFE_GLOBAL.search(str(exc))
        what = repr(found.group(1)) if found else _plain_pickle_globals(path)
        if what is None:
            raise CheckpointError(
                "cannot read as a PyTorch checkpoint (corrupt or not a pickle)", path
            ) from None
        if not trust_pickle:
            raise PickleRefused(
                f"refused: needs full unpickling of {what}, which can run arbitrary "
                "code; pass --trust-pickle only if you trust this file",
                path,
            ) from None
    except Exception as exc:
        raise CheckpointError(
            f"cannot read as a PyTorch checkpoint ({_first_line(exc)})", path
        ) from None
    warnings.warn(f"{path}: unpickling with --trust-pickle; this can run code", stacklevel=2)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"cannot unpickle ({_first_line(exc)})", path) from None


def _plain_pickle_globals(path: Path) -> str | None:
    """The objects a pickle would import, found by reading its opcodes without executing
    them (for a torch zip file, its ``data.pkl``); None when it is not a complete pickle."""
    import pickletools

    names: list[str] = []
    strings: list[str] = []
    try:
        if _is_zip(path):
            with zipfile.ZipFile(path) as zf:
                member = next(n for n in zf.namelist() if n.endswith("data.pkl"))
                stream: Any = io.BytesIO(zf.read(member))
        else:
            stream = open(path, "rb")
        with stream as fh:
            for op, arg, _pos in pickletools.genops(fh):
                if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                    strings.append(str(arg))
                elif op.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:
        return None
    return ", ".join(repr(n) for n in dict.fromkeys(names)) if names else "a plain pickle"


def _is_zip(path: Path) -> bool:
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _unwrap(obj: object, path: Path) -> tuple[dict[str, object], str | None, int | None]:
    """Find the state dict inside common containers; return it, its key, and a step."""
    step = None
    container = None
    for _ in range(4):
        if isinstance(obj, torch.nn.Module):
            return dict(obj.state_dict()), container or "module object", step
        if not isinstance(obj, dict):
            break
        if "pytorch-lightning_version" in obj or "global_step" in obj:
            gs = obj.get("global_step")
            step = int(gs) if isinstance(gs, int) else step
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj, container, step  # a plain state dict
        for key in _CONTAINER_KEYS:
            if key in obj and isinstance(obj[key], dict | torch.nn.Module):
                container = key if container is None else f"{container}.{key}"
                obj = obj[key]
                break
        else:
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if tensors:
                return obj, container, step
            break
    raise CheckpointError(
        "holds no state dict (looked for tensors at the top level and under "
        + ", ".join(_CONTAINER_KEYS)
        + ")",
        path,
    )


def strip_wrapper_prefixes(keys: list[str]) -> str | None:
    """The ``module.`` / ``_orig_mod.`` prefix chain shared by every key, if any."""
    prefix = ""
    while keys:
        for p in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix + p) for k in keys):
                prefix += p
                break
        else:
            break
    return prefix or None


def load(ckpt: Checkpoint, *, trust_pickle: bool = False) -> LoadedCheckpoint:
    """The checkpoint's tensors as a flat state dict on the CPU.

    Raises:
        CheckpointError: unreadable, truncated, or holding no tensors.
        PickleRefused: needs full unpickling and ``trust_pickle`` is False.
    """
    raw: dict[str, object] = {}
    container: str | None = None
    meta_step: int | None = None
    for f in ckpt.files:
        if ckpt.format.startswith("safetensors"):
            raw.update(iter_safetensors(f))
        else:
            part, container, meta_step = _unwrap(_torch_load(f, trust_pickle=trust_pickle), f)
            raw.update(part)
    tensors = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    dropped = tuple(k for k in raw if k not in tensors)
    if not tensors:
        raise CheckpointError("holds no tensors", ckpt.path)
    prefix = strip_wrapper_prefixes(list(tensors))
    if prefix:
        tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    return LoadedCheckpoint(tensors, container, prefix, dropped, meta_step)


def load_state_dict(ckpt: Checkpoint, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Shortcut for ``load(...).tensors``."""
    return load(ckpt, trust_pickle=trust_pickle).tensors


# ------------------------------------------------------------------- classification

_RECURRENT = re.compile(r"(^|\.)(weight|bias)_(ih|hh|hr)(_l\d+)?(_reverse)?$")
_ATTENTION = re.compile(
    r"(in_proj_weight|in_proj_bias|(^|\.)(q|k|v|o|query|key|value|out|qkv|c_attn|c_proj)"
    r"(_proj)?\.(weight|bias)$|attn\.|attention\.)",
    re.IGNORECASE,
)
_NORM = re.compile(
    r"(norm|(^|\.)ln(_\w+)?\.|(^|\.)bn\d*\.|batchnorm|layernorm|running_mean|running_var|"
    r"num_batches_tracked)",
    re.IGNORECASE,
)
_EMBED = re.compile(r"(embed|(^|\.)wte\.|(^|\.)wpe\.|embedding)", re.IGNORECASE)
_MLP = re.compile(
    r"(^|\.)(mlp|ffn|feed_forward|feedforward|intermediate|(gate|up|down)_proj|c_fc)(\.|$)",
    re.IGNORECASE,
)
"""Parameters of an MLP block: never attention, whatever their leaf is called (GPT-2's
``mlp.c_proj`` shares its name with the attention output ``attn.c_proj``)."""


def block_role(name: str) -> str | None:
    """``MLP`` or ``attention`` for a parameter of such a block, by its module names
    (``mlp.*``, ``gate/up/down_proj``, ``c_fc`` are MLP; ``q/k/v/o``, ``c_attn``,
    ``attn.c_proj``, ``in_proj`` are attention); ``None`` for anything else."""
    if _MLP.search(name):
        return "MLP"
    if _ATTENTION.search(name):
        return "attention"
    return None


def tensor_kind(name: str, shape: tuple[int, ...]) -> str:
    """Which kind of parameter a tensor is: linear, conv, recurrent, attention, norm, ..."""
    if _RECURRENT.search(name):
        return "recurrent"
    if _NORM.search(name):
        return "norm"
    if _EMBED.search(name):
        return "embedding"
    if _ATTENTION.search(name) and not _MLP.search(name) and len(shape) <= 2:
        return "attention"
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "weight" and len(shape) == 2:
        return "linear"
    if leaf == "weight" and len(shape) >= 3:
        return "conv"
    if leaf == "bias" and len(shape) == 1:
        return "bias"
    return "other"
