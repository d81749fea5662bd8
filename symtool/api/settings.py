"""Keyword settings of the Python API → the analyses' settings dataclasses.

The API takes the CLI's settings by name (``batch_size=64``, ``null_samples=0``,
``tau_dead=1e-3``, ...) and merges them exactly as the CLI does:
keyword > ``symtool.toml`` beside the checkpoints > the dataclass's own default
(:func:`symtool.config.resolve`). No default is written here. An unknown name raises
:class:`SettingsError` listing every valid one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from symtool.config import RunConfig, find_config, pick, resolve
from symtool.errors import UsageError
from symtool.inputs import checkpoints as ck

ALIGN_KEYS: dict[str, str | tuple[str, ...] | None] = {
    "factory": "model.factory",
    "strip_prefix": "model.strip_prefix",
    "activation": "model.activation",
    "dtype": None,
    "trust_pickle": "checkpoints.trust_pickle",
    "inputs": "data.inputs",
    "targets": "data.targets",
    "mask": "data.mask",
    "samples": "data.samples",
    "batch_size": "data.batch_size",
    "seq_len": "data.seq_len",
}
"""Settings of ``align`` whose ``symtool.toml`` key is not ``[align] <name>``."""

RUN_KEYS: dict[str, str | tuple[str, ...] | None] = {
    "factory": "model.factory",
    "strip_prefix": "model.strip_prefix",
    "trust_pickle": "checkpoints.trust_pickle",
    "inputs": "data.inputs",
    "samples": "data.samples",
}
"""The same for the run settings of ``ode`` and ``symmetry``."""

SYMMETRY_KEYS: dict[str, str | tuple[str, ...] | None] = {
    "activation": ("symmetry.activation", "model.activation"),
    "dead_tau": "symmetry.tau_dead",
    "dup_tau": "symmetry.tau_dup",
    "rank_tau": "symmetry.tau_rank",
    "keep_vectors": None,
}
"""The same for :class:`SymmetrySettings`."""

SELECTION = ("steps", "every", "last")
"""Checkpoint selection (``--steps``, ``--every``, ``--last``), for checkpoint paths."""

ALIASES = {
    "tau_dead": "dead_tau",
    "tau_dup": "dup_tau",
    "tau_rank": "rank_tau",
    "all_values": "keep_vectors",
    "model_arg": "model_args",
    "pair": "pairs",
}
"""CLI / ``symtool.toml`` spellings → settings field names."""


class SettingsError(UsageError, TypeError):
    """An unknown or misplaced setting name (a ``TypeError``, as for any bad keyword)."""


def _fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def split(
    settings: Mapping[str, Any], valid: Iterable[str], what: str
) -> dict[str, Any]:
    """``settings`` with CLI spellings renamed; raise :class:`SettingsError` on unknown ones."""
    valid = set(valid)
    out: dict[str, Any] = {}
    unknown = []
    for name, value in settings.items():
        key = ALIASES.get(name, name)
        if key not in valid:
            unknown.append(name)
        out[key] = value
    if unknown:
        spelled = sorted(valid | {a for a, k in ALIASES.items() if k in valid})
        raise SettingsError(
            f"unknown {what} setting{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, sorted(unknown)))}; valid: {', '.join(spelled)}"
        )
    return out


def config_for(paths: Sequence[str | Path], config: str | Path | bool | None) -> RunConfig:
    """``symtool.toml`` as the CLI finds it (beside the first path); ``config=False``: none."""
    if config is False:
        return RunConfig()
    if config is None or config is True:
        return find_config([str(p) for p in paths]) if paths else RunConfig()
    return find_config([], Path(config))


def checkpoints(
    paths: Sequence[str | Path], config: RunConfig, flags: Mapping[str, Any]
) -> list[ck.Checkpoint]:
    """Discover and select checkpoints as the CLI does (never taking the probe for one)."""
    exclude = [p for p in (config.path_value("data", "path"), config.path) if p is not None]
    found = ck.discover([str(p) for p in paths], exclude=exclude)
    chosen = ck.select(
        found, **{k: pick(flags.get(k), config, "checkpoints", k, None) for k in SELECTION}
    )
    if not chosen:
        raise UsageError("no checkpoint left after --steps/--every/--last")
    return chosen


def data_option(data: Any, config: RunConfig) -> tuple[Path | None, str | None]:
    """A probe given by name: a file, or ``module:function``; else the config's."""
    if data is None:
        return config.path_value("data", "path"), config.get("data", "source")
    text = str(data)
    if isinstance(data, Path) or Path(text).suffix.lower() in (
        ".safetensors", ".pt", ".pth", ".npz"
    ) or Path(text).exists() or ":" not in text:
        return Path(text).expanduser(), None
    return None, text


def model_args(flags: Mapping[str, Any], config: RunConfig) -> dict[str, Any]:
    """``model_args=`` over ``[model.args]``."""
    return {**dict(config.get("model", "args", {}) or {}), **dict(flags.get("model_args") or {})}


def align_settings(
    flags: Mapping[str, Any],
    config: RunConfig,
    *,
    data: Path | None,
    source: str | None,
) -> Any:
    """:class:`~symtool.align.run.AlignSettings` from keyword settings and the config."""
    from symtool.align.run import AlignSettings

    return resolve(
        AlignSettings,
        flags,
        config,
        "align",
        keys=ALIGN_KEYS,
        model_args=model_args(flags, config),
        data=data,
        source=source,
        tokenizer=flags.get("tokenizer") or config.path_value("data", "tokenizer"),
        base_dir=config.base_dir,
    )


def align_names() -> tuple[str, ...]:
    """Every ``align`` keyword: the :class:`AlignSettings` fields a flag sets."""
    from symtool.align.run import AlignSettings

    return tuple(n for n in _fields(AlignSettings) if n not in ("data", "source", "base_dir"))


def symmetry_run(flags: Mapping[str, Any], config: RunConfig) -> Any:
    """:class:`~symtool.symmetry.run.SymmetryRun` from keyword settings and the config."""
    from symtool.symmetry.records import SymmetrySettings
    from symtool.symmetry.run import SymmetryRun

    taus = {
        k: pick(flags.get(f"{k}_tau"), config, "symmetry", f"tau_{k}", None)
        for k in ("dead", "dup", "rank")
    }
    lists = {k: flags[k] for k in ("dead_taus", "dup_taus", "rank_taus") if flags.get(k)}
    settings = resolve(
        SymmetrySettings,
        flags,
        config,
        "symmetry",
        keys=SYMMETRY_KEYS,
        **{**SymmetrySettings.threshold_lists(**taus), **lists},
    )
    return resolve(
        SymmetryRun,
        flags,
        config,
        "symmetry",
        keys=RUN_KEYS,
        settings=settings,
        pairs=unit_pairs(flags.get("pairs"), config),
        model_args=model_args(flags, config),
        base_dir=config.base_dir,
        save_subspaces=flags.get("save_subspaces"),
    )


def unit_pairs(
    items: Iterable[Any] | None, config: RunConfig
) -> tuple[tuple[str, ...], ...] | None:
    """Unit pairs ``IN:OUT[:ACTIVATION]`` (strings, or tuples as they are) over
    ``[symmetry] pairs``; None when neither names any."""
    raw = list(items) if items else config.get("symmetry", "pairs", None)
    if not raw:
        return None
    out = []
    for item in raw:
        if not isinstance(item, str):
            out.append(tuple(item))
            continue
        parts = tuple(p.strip() for p in item.split(":"))
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(f"--pair expects IN:OUT or IN:OUT:ACTIVATION (got {item!r})")
        out.append(parts)
    return tuple(out)


def symmetry_names() -> tuple[str, ...]:
    """Every ``symmetry`` keyword."""
    from symtool.symmetry.records import SymmetrySettings
    from symtool.symmetry.run import SymmetryRun

    run = [n for n in _fields(SymmetryRun) if n not in ("settings", "base_dir")]
    return (*_fields(SymmetrySettings), *run)


def ode_run(flags: Mapping[str, Any], config: RunConfig, *, data: Path | None) -> Any:
    """:class:`~symtool.ode.run.OdeRun` from keyword settings and the config."""
    from symtool.ode.analysis import OdeSettings
    from symtool.ode.run import OdeRun

    return resolve(
        OdeRun,
        flags,
        config,
        "ode",
        keys=RUN_KEYS,
        settings=resolve(
            OdeSettings, flags, config, "ode", keys={"batch_first": "data.batch_first"}
        ),
        data=data,
        model_args=model_args(flags, config),
        base_dir=config.base_dir,
    )


def ode_names() -> tuple[str, ...]:
    """Every ``ode`` keyword."""
    from symtool.ode.analysis import OdeSettings
    from symtool.ode.run import OdeRun

    run = [n for n in _fields(OdeRun) if n not in ("settings", "base_dir", "data")]
    return (*_fields(OdeSettings), *run)
