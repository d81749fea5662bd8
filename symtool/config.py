"""Run configuration: ``symtool.toml`` beside the checkpoints, overridden by CLI flags.

Every key is listed in :data:`KEYS` with its type; unknown keys and wrong types are
errors naming the file, so a typo never silently falls back to a default.
The keys are documented in docs/config.md.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from symtool.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

CONFIG_NAME = "symtool.toml"

_Num = (int, float)
#: section -> key -> accepted Python types (TOML values after parsing).
KEYS: dict[str, dict[str, tuple[type, ...]]] = {
    "checkpoints": {"steps": (str,), "every": (int,), "last": (int,), "trust_pickle": (bool,)},
    "model": {
        "factory": (str,),
        "args": (dict,),
        "activation": (str,),
        "strip_prefix": (str,),
    },
    "data": {
        "path": (str,),
        "source": (str,),
        "inputs": (str,),
        "targets": (str,),
        "mask": (str,),
        "samples": (int,),
        "batch_size": (int,),
        "batch_first": (bool,),
        "tokenizer": (str,),
        "seq_len": (int,),
    },
    "align": {
        "loss": (str,),
        "moments": (str,),
        "metric": (str,),
        "null_samples": (int,),
        "seed": (int,),
        "layers": (list, str),
        "verify": (bool,),
        "pah": (bool,),
        "pah_floor": _Num,
        "bootstrap": (int,),
        "device": (str,),
        "max_layer_dim": (int,),
        "max_memory": _Num,
        "alpha_threshold": _Num,
        "z_threshold": _Num,
        "gemm_dtype": (str,),
        "collapse": (bool,),
        "collapse_lm": (bool,),
        "nfa": (bool,),
        "nfa_exact_max": (int,),
        "nfa_projections": (int,),
    },
    "symmetry": {
        "activation": (str,),
        "tau_dead": _Num,
        "tau_dup": _Num,
        "tau_rank": _Num,
        "heads": (int,),
        "pairs": (list,),
        "classifier": (str,),
    },
    "ode": {
        "nonlinearity": (str,),
        "lyapunov_k": (int,),
        "warmup": (int,),
        "dt": _Num,
        "seed": (int,),
    },
    "check": {"require": (list, str), "layer": (str,), "step": (str, int)},
}

#: (section, key) -> the values a string key accepts, checked when the file is read so the
#: error names the file (the same value from a flag is checked with the flag's name).
CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("align", "moments"): ("paper", "raw"),
    ("align", "metric"): ("pearson", "cosine"),
    ("align", "gemm_dtype"): ("float32", "float64"),
}


@dataclass(frozen=True)
class RunConfig:
    """A parsed ``symtool.toml`` (or an empty one).

    Attributes:
        path: the file, or None when no config was found.
        values: section -> key -> value, validated against :data:`KEYS`.
    """

    path: Path | None = None
    values: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        """Relative paths in the config are resolved against this folder."""
        return self.path.parent if self.path else Path.cwd()

    def get(self, section: str, key: str, default: Any = None) -> Any:
        """A value from the file, or ``default`` when the file does not set it."""
        return self.values.get(section, {}).get(key, default)

    def path_value(self, section: str, key: str) -> Path | None:
        """A path-valued key resolved against the config's folder."""
        v = self.get(section, key)
        if v is None:
            return None
        p = Path(v).expanduser()
        return p if p.is_absolute() else self.base_dir / p


def pick(cli_value: Any, config: RunConfig, section: str, key: str, default: Any) -> Any:
    """CLI flag if given, else the config's value, else the default."""
    if cli_value is not None:
        return cli_value
    return config.get(section, key, default)


T = TypeVar("T")

_UNSET = object()


def resolve(
    cls: type[T],
    flags: Mapping[str, Any],
    config: RunConfig,
    section: str,
    *,
    keys: Mapping[str, str | tuple[str, ...] | None] | None = None,
    **fixed: Any,
) -> T:
    """Settings of type ``cls`` (a dataclass): each field from its flag, else from
    ``symtool.toml``, else the dataclass's own default — the one place defaults live.

    Args:
        cls: the settings dataclass.
        flags: field name -> the command-line value, ``None`` when the flag was not given.
        config: the run's ``symtool.toml``.
        section: where a field's key is looked up by default (``[section] field``).
        keys: fields whose key lives elsewhere: ``"data.inputs"``, several places tried in
            order (``("symmetry.activation", "model.activation")``), or ``None`` for a field
            no file sets.
        **fixed: fields given outright (computed by the caller, e.g. parsed paths).

    Numbers and lists from TOML are coerced to the field's declared type (an integer for a
    ``float`` field becomes a float; a list or a single string for a tuple field a tuple).
    """
    keys = keys or {}
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in fixed:
            values[f.name] = fixed[f.name]
            continue
        value = flags.get(f.name)
        if value is None:
            where = keys.get(f.name, f"{section}.{f.name}")
            places = () if where is None else (where,) if isinstance(where, str) else where
            value = _UNSET
            for place in places:
                sec, _, key = place.partition(".")
                value = config.get(sec, key, _UNSET)
                if value is not _UNSET:
                    break
            if value is _UNSET:
                continue  # the dataclass default
        values[f.name] = _coerce(str(f.type), value)
    return cls(**values)


def _coerce(declared: str, value: Any) -> Any:
    """A TOML or flag value in the form the field declares (see :func:`resolve`)."""
    if value is None or isinstance(value, bool):
        return value
    if declared.startswith("float") and isinstance(value, int):
        return float(value)
    if declared.startswith("tuple"):
        return (value,) if isinstance(value, str) else tuple(value)
    return value


def load_config(path: Path) -> RunConfig:
    """Parse and validate one ``symtool.toml``.

    Raises:
        ConfigError: unreadable TOML, unknown section or key, or a value of the wrong type.
    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("no such config file", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config ({exc})", path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML ({exc})", path) from None
    values: dict[str, dict[str, Any]] = {}
    for section, body in raw.items():
        if section not in KEYS:
            raise ConfigError(
                f"unknown section [{section}] (known: {', '.join(sorted(KEYS))})", path
            )
        if not isinstance(body, dict):
            raise ConfigError(f"[{section}] must be a table", path)
        for key, value in body.items():
            allowed = KEYS[section].get(key)
            if allowed is None:
                raise ConfigError(
                    f"unknown key {section}.{key} (known: {', '.join(sorted(KEYS[section]))})",
                    path,
                )
            if isinstance(value, bool) and bool not in allowed:
                raise ConfigError(f"{section}.{key} must be {_type_names(allowed)}", path)
            if not isinstance(value, allowed):
                raise ConfigError(f"{section}.{key} must be {_type_names(allowed)}", path)
            choices = CHOICES.get((section, key))
            if choices is not None and value not in choices:
                raise ConfigError(
                    f"{section}.{key} must be {' or '.join(choices)}, got {value!r}", path
                )
        values[section] = dict(body)
    return RunConfig(path=path, values=values)


def _type_names(types: tuple[type, ...]) -> str:
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true/false",
        list: "a list",
        dict: "a table",
    }
    return " or ".join(names.get(t, t.__name__) for t in types)


def find_config(paths: Iterable[str | Path], explicit: Path | None = None) -> RunConfig:
    """The config given with ``--config``, else ``symtool.toml`` beside the first path.

    "Beside" means inside a directory argument, or in the folder of a file argument
    (and, for a Hugging Face style ``checkpoint-N/`` folder, its parent).
    """
    if explicit is not None:
        return load_config(explicit)
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            candidates = (
                [p, p.parent]
                if any(
                    (p / n).is_file()
                    for n in (
                        "model.safetensors",
                        "model.safetensors.index.json",
                        "pytorch_model.bin",
                        "pytorch_model.bin.index.json",
                    )
                )
                else [p]
            )
        else:
            candidates = [p.parent]
        for folder in candidates:
            f = folder / CONFIG_NAME
            if f.is_file():
                return load_config(f)
        break
    return RunConfig()
