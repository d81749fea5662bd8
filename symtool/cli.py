"""The ``symtool`` command line: thin Typer commands over the library.

No math here and no analysis logic: each command parses options into settings, calls
a runner, and hands the report to the one output sink. Errors become one line on
stderr and an exit code (0 ok, 1 a check or an input failed while others were
analysed, 2 bad usage or input, 3 internal error, 130 interrupted).
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

import symtool
from symtool import checkpoints as ck
from symtool.config import RunConfig, find_config, pick
from symtool.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, SymtoolError, UsageError
from symtool.render import Sink

EXIT_INTERNAL = 3

app = typer.Typer(
    name="symtool",
    help=(
        "What happened inside your network during training, read from its checkpoints: "
        "CRH alignment and PAH exponents (align), broken and restored parameter symmetries "
        "(symmetry), recurrent cells as ODE integrators (ode)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

F = TypeVar("F", bound=Callable[..., Any])


_DEBUG = [False]
"""Set by the top-level ``--debug`` on every invocation (see :func:`_main`)."""

_CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
"""Click's base exception, found through typer: recent typer vendors its own click, and
symtool does not depend on the ``click`` package."""


def _debug() -> bool:
    return _DEBUG[0] or os.environ.get("SYMTOOL_DEBUG", "") not in ("", "0")


def _say(message: str) -> None:
    sys.stderr.write(f"symtool: {message}\n")
    sys.stderr.flush()


def command(fn: F) -> F:
    """Turn SymtoolError into one line + exit code; other errors into a short line."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = fn(*args, **kwargs)
        except (typer.Exit, _CLICK_EXCEPTION):
            raise
        except SymtoolError as exc:
            if _debug():
                traceback.print_exc()
            _say(f"error: {exc}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _say("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:  # `symtool ... | head`: the reader left, nothing is wrong
            _quiet_stdout()
            raise typer.Exit(0) from None
        except Exception as exc:
            if _debug():
                traceback.print_exc()
            first = str(exc).splitlines()[0] if str(exc) else ""
            _say(f"internal error: {type(exc).__name__}: {first} (rerun with --debug)")
            raise typer.Exit(EXIT_INTERNAL) from None
        raise typer.Exit(code or 0)

    return wrapper  # type: ignore[return-value]


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _version(value: bool) -> None:
    if value:
        typer.echo(f"symtool {symtool.__version__}")
        raise typer.Exit(0)


def _showwarning(
    message: Any, category: Any, filename: str, lineno: int, *a: Any, **k: Any
) -> None:
    _say(f"warning: {message}")


@app.callback()
def _main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """symtool: CRH/PAH alignment, parameter symmetries and ODE stability from checkpoints."""
    ctx.obj = {"debug": debug}
    _DEBUG[0] = debug
    warnings.showwarning = _showwarning


# ------------------------------------------------------------------ shared options

Paths = Annotated[
    list[str],
    typer.Argument(
        help="Checkpoint files, directories or globs (several allowed).", show_default=False
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="symtool.toml to use (default: the one beside the checkpoints)."),
]
StepsOpt = Annotated[
    str | None, typer.Option("--steps", help="Only these steps, e.g. 0,100,500-1000.")
]
EveryOpt = Annotated[
    int | None, typer.Option("--every", help="Every K-th checkpoint (first and last kept).")
]
LastOpt = Annotated[int | None, typer.Option("--last", help="Only the last N checkpoints.")]
TrustOpt = Annotated[
    bool | None,
    typer.Option(
        "--trust-pickle",
        help="Allow full unpickling of .pt files (CAN RUN CODE; only for files you trust).",
    ),
]
FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format",
        "-f",
        help="table | json | csv. Default: table on a terminal, json when piped or with --out.",
    ),
]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue an interrupted run from its --out report.")
]
ModelArgOpt = Annotated[
    list[str] | None, typer.Option("--model-arg", help="Factory keyword argument key=value.")
]
OutOpt = Annotated[
    Path | None, typer.Option("--out", "-o", help="Write the report here (atomically).")
]


def _checkpoints(
    paths: list[str],
    config: RunConfig,
    *,
    steps: str | None,
    every: int | None,
    last: int | None,
) -> list[ck.Checkpoint]:
    """Discover and select checkpoints, never mistaking the probe file for one."""
    exclude = [p for p in (config.path_value("data", "path"), config.path) if p is not None]
    found = ck.discover(paths, exclude=exclude)
    chosen = ck.select(
        found,
        steps=pick(steps, config, "checkpoints", "steps", None),
        every=pick(every, config, "checkpoints", "every", None),
        last=pick(last, config, "checkpoints", "last", None),
    )
    if not chosen:
        raise UsageError("no checkpoint left after --steps/--every/--last")
    return chosen


def _sink(fmt: str | None, out: Path | None) -> Sink:
    if fmt is not None and fmt not in ("table", "json", "csv"):
        raise UsageError(f"--format must be table, json or csv (got {fmt!r})")
    return Sink.choose(fmt, out)


# ------------------------------------------------------------------------ commands


@app.command()
@command
def inspect(
    paths: Paths,
    tensors: Annotated[
        bool | None,
        typer.Option(
            "--tensors/--no-tensors",
            help="List every tensor of one checkpoint (default: when only one is found).",
        ),
    ] = None,
    config_path: ConfigOpt = None,
    steps: StepsOpt = None,
    every: EveryOpt = None,
    last: LastOpt = None,
    trust_pickle: TrustOpt = None,
    fmt: FormatOpt = None,
    out: OutOpt = None,
) -> int:
    """List checkpoints in step order and, for one, every tensor and the analyses it gets."""
    from symtool.inspection import inspect_checkpoints

    config = find_config(paths, config_path)
    ckpts = _checkpoints(paths, config, steps=steps, every=every, last=last)
    report = inspect_checkpoints(
        ckpts,
        tensors=len(ckpts) == 1 if tensors is None else tensors,
        trust_pickle=bool(pick(trust_pickle, config, "checkpoints", "trust_pickle", False)),
    )
    _sink(fmt, out).emit(report)
    return report_exit_code(report)


def report_exit_code(report: dict[str, Any]) -> int:
    """2 when every checkpoint failed, 1 when some did, else 0; each failure on stderr."""
    entries = report.get("checkpoints", [])
    for c in entries:
        if c.get("error"):
            _say(f"error: {c['error']}")
    failed = sum(1 for c in entries if c.get("error"))
    if entries and failed == len(entries):
        return EXIT_BAD_INPUT
    return 1 if failed else 0


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # raised outside a command (e.g. during import)
        _say("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        _quiet_stdout()
        sys.exit(0)


# -------------------------------------------------------------------------- align


def _opt_float(value: float | int | None) -> float | None:
    """A number from the command line or symtool.toml as float, ``None`` kept."""
    return None if value is None else float(value)


def _model_args(pairs: list[str] | None, config: RunConfig) -> dict[str, Any]:
    """``--model-arg key=value`` (values parsed as TOML scalars) over ``[model.args]``."""
    from symtool.config import tomllib

    args = dict(config.get("model", "args", {}) or {})
    for item in pairs or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--model-arg expects key=value (got {item!r})")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        args[key.strip()] = value
    return args


def _here(spec: str | None) -> str | None:
    """A ``file.py:function`` given on the command line, made absolute when the file is in
    the working directory (as a ``--data FILE`` path is); otherwise left to be resolved
    against the config file's folder, as values from the file are."""
    if spec is None or ":" not in spec:
        return spec
    file, _, fn = spec.rpartition(":")
    path = Path(file).expanduser()
    if file.endswith(".py") and not path.is_absolute() and path.is_file():
        return f"{path.resolve()}:{fn}"
    return spec


def _data_option(data: str | None, config: RunConfig) -> tuple[Path | None, str | None]:
    """``--data`` is a file, or ``module:function``; else the config's path/source."""
    if data is not None:
        if (
            Path(data).suffix.lower() in (".safetensors", ".pt", ".pth", ".npz")
            or Path(data).exists()
        ):
            return Path(data), None
        if ":" in data:
            return None, _here(data)
        return Path(data), None
    return config.path_value("data", "path"), config.get("data", "source")


def _progress(enabled: bool):
    """A rich progress bar on stderr when it is a terminal; otherwise nothing."""
    import contextlib

    if not enabled:
        return contextlib.nullcontext(), None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from symtool.render import console

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[name]}"),
        console=console(stderr=True),
        transient=True,
    )
    task = bar.add_task("checkpoints", total=None, name="")

    def update(i: int, total: int, name: str) -> None:
        bar.update(task, completed=i, total=total, name=name)

    return bar, update


@app.command()
@command
def align(
    paths: Paths,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="Model factory pkg.module:fn or file.py:fn (default: auto-MLP)."
        ),
    ] = None,
    model_arg: ModelArgOpt = None,
    activation: Annotated[
        str | None,
        typer.Option("--activation", help="Auto-MLP activation (relu, tanh, gelu, ...)."),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", help="Probe data (.safetensors/.pt/.npz) or module:function."),
    ] = None,
    inputs: Annotated[
        str | None, typer.Option("--inputs", help="Input key in the probe file.")
    ] = None,
    targets: Annotated[str | None, typer.Option("--targets", help="Target key.")] = None,
    mask: Annotated[str | None, typer.Option("--mask", help="Row-mask key (padding).")] = None,
    samples: Annotated[
        int | None, typer.Option("--samples", help="Use the first N samples.")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Samples per batch.")
    ] = None,
    loss: Annotated[
        str | None,
        typer.Option("--loss", help="cross_entropy | mse | bce | nll | l1 | huber | module:fn."),
    ] = None,
    moments: Annotated[
        str | None, typer.Option("--moments", help="paper (normalised, centred) | raw.")
    ] = None,
    metric: Annotated[str | None, typer.Option("--metric", help="pearson | cosine.")] = None,
    null_samples: Annotated[
        int | None, typer.Option("--null-samples", help="Haar rotations per null (0: off).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of the null and bootstrap.")
    ] = None,
    layers: Annotated[
        list[str] | None, typer.Option("--layers", help="Glob on layer names (repeatable).")
    ] = None,
    verify: Annotated[
        bool | None,
        typer.Option("--verify/--no-verify", help="Report errors of H_b=W H_a Wᵀ, G_a=Wᵀ G_b W."),
    ] = None,
    pah_on: Annotated[
        bool | None, typer.Option("--pah/--no-pah", help="Fit PAH exponents (default on).")
    ] = None,
    pah_floor: Annotated[
        float | None, typer.Option("--pah-floor", help="Eigenvalue floor ε of the PAH fit.")
    ] = None,
    bootstrap: Annotated[
        int | None, typer.Option("--bootstrap", help="Bootstrap resamples of the PAH fit.")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu | cuda.")] = None,
    dtype: Annotated[
        str | None, typer.Option("--dtype", help="Run the model in float32 | float64.")
    ] = None,
    max_layer_dim: Annotated[
        int | None, typer.Option("--max-layer-dim", help="Skip layers wider than this.")
    ] = None,
    max_memory: Annotated[
        float | None,
        typer.Option(
            "--max-memory",
            help="GiB of layer sums held at once: layers are split into groups, one pass "
            "over the probe data each (same results).",
        ),
    ] = None,
    save_matrices: Annotated[
        Path | None,
        typer.Option(
            "--save-matrices", help="Also save H, G, Z, C, W of every layer (.safetensors)."
        ),
    ] = None,
    resume: ResumeOpt = False,
    parallel: Annotated[
        str,
        typer.Option(
            "--parallel",
            help="Under torchrun: split the probe data (data) or the checkpoints (checkpoints).",
        ),
    ] = "data",
    config_path: ConfigOpt = None,
    steps: StepsOpt = None,
    every: EveryOpt = None,
    last: LastOpt = None,
    trust_pickle: TrustOpt = None,
    fmt: FormatOpt = None,
    out: OutOpt = None,
) -> int:
    """Six CRH relations and PAH exponents per layer, from hooks on probe data."""
    from symtool import distributed
    from symtool.align import AlignSettings, run_align

    config = find_config(paths, config_path)
    sink = _sink(fmt, out)
    data_path, source = _data_option(data, config)
    layer_globs = pick(layers, config, "align", "layers", [])
    # checkpoints first, so an empty folder says "no checkpoints", not "no probe data"
    ckpts = _checkpoints(paths, config, steps=steps, every=every, last=last)
    settings = AlignSettings(
        factory=pick(_here(model), config, "model", "factory", None),
        model_args=_model_args(model_arg, config),
        activation=pick(activation, config, "model", "activation", "relu"),
        dtype=dtype,
        trust_pickle=bool(pick(trust_pickle, config, "checkpoints", "trust_pickle", False)),
        data=data_path,
        source=source,
        inputs=pick(inputs, config, "data", "inputs", "x"),
        targets=pick(targets, config, "data", "targets", "y"),
        mask=pick(mask, config, "data", "mask", None),
        samples=pick(samples, config, "data", "samples", None),
        batch_size=pick(batch_size, config, "data", "batch_size", 256),
        loss=pick(_here(loss), config, "align", "loss", "cross_entropy"),
        moments=pick(moments, config, "align", "moments", "paper"),
        metric=pick(metric, config, "align", "metric", "pearson"),
        null_samples=pick(null_samples, config, "align", "null_samples", 16),
        seed=pick(seed, config, "align", "seed", 0),
        layers=tuple([layer_globs] if isinstance(layer_globs, str) else layer_globs),
        verify=bool(pick(verify, config, "align", "verify", False)),
        pah=bool(pick(pah_on, config, "align", "pah", True)),
        pah_floor=float(pick(pah_floor, config, "align", "pah_floor", 1e-8)),
        bootstrap=pick(bootstrap, config, "align", "bootstrap", 200),
        device=pick(device, config, "align", "device", "cpu"),
        max_layer_dim=pick(max_layer_dim, config, "align", "max_layer_dim", 8192),
        max_memory=_opt_float(pick(max_memory, config, "align", "max_memory", None)),
        alpha_threshold=float(pick(None, config, "align", "alpha_threshold", 0.8)),
        z_threshold=float(pick(None, config, "align", "z_threshold", 3.0)),
        gemm_dtype=pick(None, config, "align", "gemm_dtype", "float64"),
        base_dir=config.base_dir,
    )
    world = distributed.from_env(parallel, settings.device)
    try:
        report = _run_with_resume(
            lambda previous, on_partial, progress: run_align(
                ckpts,
                settings,
                previous=previous,
                on_partial=on_partial,
                progress=progress,
                save_matrices=save_matrices,
                world=world,
            ),
            sink,
            resume=resume,
        )
    finally:
        if world.active:
            distributed.finalize()
    if not world.is_main:
        return 0
    matrices = report.pop("matrices", None)
    if save_matrices is not None and matrices:
        from symtool.report import save_tensors_atomic

        save_tensors_atomic(save_matrices, matrices)
    sink.emit(report)
    return report_exit_code(report) or (1 if _failed_layers(report) else 0)


# ---------------------------------------------------------------------------- ode


@app.command()
@command
def ode(
    paths: Paths,
    data: Annotated[
        str | None, typer.Option("--data", help="Probe sequences (.safetensors/.pt/.npz).")
    ] = None,
    inputs: Annotated[str | None, typer.Option("--inputs", help="Sequence key in --data.")] = None,
    samples: Annotated[
        int | None, typer.Option("--samples", help="Use the first N sequences.")
    ] = None,
    batch_first: Annotated[
        bool | None,
        typer.Option("--batch-first/--time-first", help="Sequences are (B, T, d) / (T, B, d)."),
    ] = None,
    nonlinearity: Annotated[
        str | None, typer.Option("--nonlinearity", help="Of nn.RNN cells: tanh | relu | linear.")
    ] = None,
    lyapunov_k: Annotated[
        int | None, typer.Option("--lyapunov-k", help="Leading Lyapunov exponents to compute.")
    ] = None,
    warmup: Annotated[
        int | None, typer.Option("--warmup", help="Steps left out of Lyapunov averages.")
    ] = None,
    dt: Annotated[
        float | None, typer.Option("--dt", help="Step size override for the ODE reading.")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of drive and Lyapunov frame.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="Custom cell factory with step(state, x), state_size, input_size."
        ),
    ] = None,
    model_arg: ModelArgOpt = None,
    resume: ResumeOpt = False,
    config_path: ConfigOpt = None,
    steps: StepsOpt = None,
    every: EveryOpt = None,
    last: LastOpt = None,
    trust_pickle: TrustOpt = None,
    fmt: FormatOpt = None,
    out: OutOpt = None,
) -> int:
    """Recurrent cells read as ODE integrators: stability, timescales, Lyapunov exponents."""
    from symtool.ode import OdeSettings
    from symtool.runners import OdeRun, run_ode

    config = find_config(paths, config_path)
    sink = _sink(fmt, out)
    data_path = Path(data) if data is not None else config.path_value("data", "path")
    run = OdeRun(
        settings=OdeSettings(
            nonlinearity=pick(nonlinearity, config, "ode", "nonlinearity", "tanh"),
            batch_first=bool(pick(batch_first, config, "data", "batch_first", False)),
            lyapunov_k=pick(lyapunov_k, config, "ode", "lyapunov_k", None),
            warmup=pick(warmup, config, "ode", "warmup", None),
            dt=pick(dt, config, "ode", "dt", None),
            seed=pick(seed, config, "ode", "seed", 0),
        ),
        data=data_path,
        inputs=pick(inputs, config, "data", "inputs", "x"),
        samples=pick(samples, config, "data", "samples", None),
        factory=pick(_here(model), config, "model", "factory", None),
        model_args=_model_args(model_arg, config),
        base_dir=config.base_dir,
        trust_pickle=bool(pick(trust_pickle, config, "checkpoints", "trust_pickle", False)),
    )
    ckpts = _checkpoints(paths, config, steps=steps, every=every, last=last)
    report = _run_with_resume(
        lambda previous, on_partial, progress: run_ode(
            ckpts, run, previous=previous, on_partial=on_partial, progress=progress
        ),
        sink,
        resume=resume,
    )
    sink.emit(report)
    return report_exit_code(report) or (1 if _failed_layers(report) else 0)


def _failed_layers(report: dict[str, Any]) -> int:
    """(checkpoint, layer) pairs marked failed, announced on stderr."""
    n = sum(
        1
        for e in report.get("checkpoints", [])
        for layer in e.get("layers") or []
        if layer.get("status") == "failed"
    )
    if n:
        _say(f"{n} layer(s) failed; see the report")
    return n


# ------------------------------------------------------------------------ symmetry


def _pairs(items: list[str] | None, config: RunConfig) -> tuple[tuple[str, ...], ...] | None:
    """``--pair IN:OUT[:ACTIVATION]`` (repeatable) over ``[symmetry] pairs``."""
    raw = items if items else config.get("symmetry", "pairs", None)
    if not raw:
        return None
    out = []
    for item in raw:
        parts = tuple(p.strip() for p in str(item).split(":"))
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(f"--pair expects IN:OUT or IN:OUT:ACTIVATION (got {item!r})")
        out.append(parts)
    return tuple(out)


@app.command()
@command
def symmetry(
    paths: Paths,
    activation: Annotated[
        str | None,
        typer.Option("--activation", help="Hidden units' activation: relu, tanh, gelu, ..."),
    ] = None,
    tau_dead: Annotated[
        float | None, typer.Option("--tau-dead", help="Dead-unit threshold on ‖θ_i‖/max‖θ_j‖.")
    ] = None,
    tau_dup: Annotated[
        float | None, typer.Option("--tau-dup", help="Identical-unit threshold on d_ij.")
    ] = None,
    tau_rank: Annotated[
        float | None, typer.Option("--tau-rank", help="Headline rank threshold on σ_k/σ_1.")
    ] = None,
    pair: Annotated[
        list[str] | None,
        typer.Option(
            "--pair", help="Unit pair IN:OUT[:ACTIVATION] (repeatable; replaces inferred)."
        ),
    ] = None,
    heads: Annotated[
        int | None, typer.Option("--heads", help="Attention heads per block (per-head analysis).")
    ] = None,
    all_values: Annotated[
        bool,
        typer.Option(
            "--all-values", help="Also list every singular value and per-unit imbalance."
        ),
    ] = False,
    classifier: Annotated[
        str | None,
        typer.Option("--classifier", help="Classifier layer for the softmax symmetry ('' = none)."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Factory pkg.module:fn: unit pairs from the module graph."),
    ] = None,
    model_arg: ModelArgOpt = None,
    save_subspaces: Annotated[
        Path | None,
        typer.Option(
            "--save-subspaces",
            help="Save broken/restored bases (.safetensors; one file per step for sequences).",
        ),
    ] = None,
    resume: ResumeOpt = False,
    config_path: ConfigOpt = None,
    steps: StepsOpt = None,
    every: EveryOpt = None,
    last: LastOpt = None,
    trust_pickle: TrustOpt = None,
    fmt: FormatOpt = None,
    out: OutOpt = None,
) -> int:
    """Broken and restored parameter symmetries from weights alone, and when they changed."""
    from symtool.runners import SymmetryRun, run_symmetry
    from symtool.symmetry import SymmetrySettings

    config = find_config(paths, config_path)
    sink = _sink(fmt, out)
    defaults = SymmetrySettings()
    act = pick(activation, config, "symmetry", "activation", None)
    settings = SymmetrySettings(
        activation=act or config.get("model", "activation", "relu"),
        dead_tau=float(pick(tau_dead, config, "symmetry", "tau_dead", defaults.dead_tau)),
        dup_tau=float(pick(tau_dup, config, "symmetry", "tau_dup", defaults.dup_tau)),
        rank_tau=float(pick(tau_rank, config, "symmetry", "tau_rank", defaults.rank_tau)),
        dead_taus=_with(defaults.dead_taus, pick(tau_dead, config, "symmetry", "tau_dead", None)),
        dup_taus=_with(defaults.dup_taus, pick(tau_dup, config, "symmetry", "tau_dup", None)),
        rank_taus=_with(defaults.rank_taus, pick(tau_rank, config, "symmetry", "tau_rank", None)),
        keep_vectors=all_values,
    )
    run = SymmetryRun(
        settings=settings,
        pairs=_pairs(pair, config),
        heads=pick(heads, config, "symmetry", "heads", None),
        classifier=pick(classifier, config, "symmetry", "classifier", None),
        factory=pick(_here(model), config, "model", "factory", None),
        model_args=_model_args(model_arg, config),
        base_dir=config.base_dir,
        trust_pickle=bool(pick(trust_pickle, config, "checkpoints", "trust_pickle", False)),
        save_subspaces=save_subspaces,
    )
    ckpts = _checkpoints(paths, config, steps=steps, every=every, last=last)
    report = _run_with_resume(
        lambda previous, on_partial, progress: run_symmetry(
            ckpts, run, previous=previous, on_partial=on_partial, progress=progress
        ),
        sink,
        resume=resume,
    )
    sink.emit(report)
    return report_exit_code(report)


def _with(taus: tuple[float, ...], extra: float | None) -> tuple[float, ...]:
    """A threshold list that also holds a user's headline threshold and 3× it (hysteresis)."""
    if extra is None:
        return taus
    return tuple(sorted({*taus, float(extra), min(3 * float(extra), 1.0)}, reverse=True))


def _run_with_resume(
    run: Callable[..., dict[str, Any]], sink: Sink, *, resume: bool
) -> dict[str, Any]:
    """Run with partial reports written to ``--out`` after each checkpoint; resume from one."""
    from symtool.report import read_report, write_atomic

    previous = None
    if resume:
        if sink.out is None or sink.fmt != "json":
            raise UsageError("--resume needs --out FILE.json (the partial report to continue)")
        if sink.out.exists():
            previous = read_report(str(sink.out))

    def on_partial(partial: dict[str, Any]) -> None:
        if sink.out is not None and sink.fmt == "json":
            write_atomic(
                sink.out, sink.render({k: v for k, v in partial.items() if k != "matrices"})
            )

    bar, update = _progress(sys.stderr.isatty())
    with bar:
        return run(previous, on_partial, update)


from symtool import cli_reports  # noqa: E402,F401  (registers check/schema/plot/diff)
