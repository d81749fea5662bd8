"""The analysis commands: ``inspect``, ``align``, ``symmetry``, ``ode``.

Each parses its options and hands them, by the settings' names, to the job the Python API
runs too (:mod:`symtool.api.jobs`: settings merged with ``symtool.toml`` and the defaults,
checkpoints, probe, resume), then renders the report through the sink and turns it into an
exit code. No math, no defaults and no orchestration here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from symtool.cli.common import (
    ConfigOpt,
    EveryOpt,
    FormatOpt,
    LastOpt,
    ModelArgOpt,
    OutOpt,
    Paths,
    ResumeOpt,
    StepsOpt,
    TrustOpt,
    command,
    failed_layers,
    local_spec,
    model_arg_flags,
    output_sink,
    report_exit_code,
    run_with_resume,
    say,
    undefined_values,
)

if TYPE_CHECKING:
    from symtool.api.jobs import Job


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
    from symtool.api.jobs import inspect_report

    report = inspect_report(
        paths, config=config_path, tensors=tensors, trust_pickle=trust_pickle, steps=steps,
        every=every, last=last,
    )
    output_sink(fmt, out).emit(report)
    return report_exit_code(report)



def _print_estimate(job: Job) -> int:
    """``align --dry-run``: the estimate per layer and per checkpoint, on stdout."""
    from symtool.align.estimate import describe, human_bytes, human_seconds

    cost, seconds = job.estimate()
    typer.echo(f"{len(job.checkpoints)} checkpoint(s); estimate for each (docs/performance.md):")
    for c, secs in zip(cost.layers, seconds, strict=True):
        rows = "?" if c.rows is None else str(c.rows)
        typer.echo(
            f"  {c.name}  {c.d_out}×{c.d_in}  rows {rows}  sums {human_bytes(c.sums_bytes)}"
            f"  ≈ {human_seconds(secs)}"
        )
    for line in describe(cost):
        typer.echo(line)
    return 0


def _data_arg(data: str | None) -> str | None:
    """``--data``: a file as given, or ``file.py:function`` made absolute when the file is
    in the working directory (:func:`local_spec`)."""
    files = (".safetensors", ".pt", ".pth", ".npz")
    if data is None or Path(data).suffix.lower() in files or Path(data).exists():
        return data
    return local_spec(data)


StripPrefixOpt = Annotated[
    str | None,
    typer.Option(
        "--strip-prefix",
        help="Analyse only the keys under this prefix, without it (e.g. model., student.). "
        "With --model, a prefix every key shares is found without it.",
    ),
]


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
    strip_prefix: StripPrefixOpt = None,
    activation: Annotated[
        str | None,
        typer.Option("--activation", help="Auto-MLP activation (relu, tanh, gelu, ...)."),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Probe data (.safetensors/.pt/.npz), text (.txt/.jsonl) or module:function.",
        ),
    ] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option("--tokenizer", help="Tokenizer folder for a text probe (default: beside "
                     "the checkpoints)."),
    ] = None,
    seq_len: Annotated[
        int | None, typer.Option("--seq-len", help="Tokens per window of a text probe.")
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
        typer.Option(
            "--loss",
            help="cross_entropy | causal_lm | masked_lm | mse | bce | nll | l1 | huber | "
            "module:fn (default: by the model; cross_entropy).",
        ),
    ] = None,
    moments: Annotated[
        str | None, typer.Option("--moments", help="paper (normalised, centred) | raw.")
    ] = None,
    metric: Annotated[str | None, typer.Option("--metric", help="pearson | cosine.")] = None,
    null_samples: Annotated[
        int | None, typer.Option(
            "--null-samples",
            help="Also sample a Haar null with K rotations, a check on the exact one (0: off).",
        )
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Seed of the PAH bootstrap and the sampled null (not of z)."),
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
    collapse_on: Annotated[
        bool | None,
        typer.Option(
            "--collapse/--no-collapse",
            help="Neural collapse NC1–NC4 on layers whose rows carry class labels "
            "(one extra forward pass for NC4).",
        ),
    ] = None,
    collapse_lm: Annotated[
        bool | None,
        typer.Option(
            "--collapse-lm/--no-collapse-lm",
            help="With --collapse, also under a language-model loss (classes = the "
            "vocabulary: C·d float64 sums per layer).",
        ),
    ] = None,
    nfa: Annotated[
        bool | None,
        typer.Option(
            "--nfa/--no-nfa",
            help="Neural feature ansatz: α(Z_a, AGOP) and α(Z_a, AGOP^½) (extra backward "
            "passes per batch: one per output coordinate, or --nfa-projections).",
        ),
    ] = None,
    nfa_exact_max: Annotated[
        int | None,
        typer.Option(
            "--nfa-exact-max",
            help="Exact AGOP up to this many output coordinates per sample (default 64).",
        ),
    ] = None,
    nfa_projections: Annotated[
        int | None,
        typer.Option(
            "--nfa-projections",
            help="Gaussian projections per batch for larger outputs (default 8).",
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
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the estimated memory and time per checkpoint (one probe batch is run "
            "through the model to count rows); analyse nothing.",
        ),
    ] = False,
    config_path: ConfigOpt = None,
    steps: StepsOpt = None,
    every: EveryOpt = None,
    last: LastOpt = None,
    trust_pickle: TrustOpt = None,
    fmt: FormatOpt = None,
    out: OutOpt = None,
) -> int:
    """Six CRH relations and PAH exponents per layer, from hooks on probe data."""
    from symtool.api.jobs import align_job

    sink = output_sink(fmt, out)
    job = align_job(
        paths,
        _data_arg(data),
        loss=local_spec(loss),
        config=config_path,
        factory=local_spec(model),
        model_args=model_arg_flags(model_arg),
        strip_prefix=strip_prefix,
        activation=activation,
        dtype=dtype,
        trust_pickle=trust_pickle,
        tokenizer=tokenizer,
        inputs=inputs,
        targets=targets,
        mask=mask,
        samples=samples,
        batch_size=batch_size,
        seq_len=seq_len,
        moments=moments,
        metric=metric,
        null_samples=null_samples,
        seed=seed,
        layers=layers,
        verify=verify,
        pah=pah_on,
        pah_floor=pah_floor,
        bootstrap=bootstrap,
        device=device,
        max_layer_dim=max_layer_dim,
        max_memory=max_memory,
        collapse=collapse_on,
        collapse_lm=collapse_lm,
        nfa=nfa,
        nfa_exact_max=nfa_exact_max,
        nfa_projections=nfa_projections,
        steps=steps,
        every=every,
        last=last,
    )
    if dry_run:
        return _print_estimate(job)
    report = run_with_resume(
        job, sink, resume=resume, save_matrices=save_matrices, parallel=parallel, on_note=say
    )
    if report is None:  # not rank 0 of a torchrun world
        return 0
    sink.emit(report)
    undefined = undefined_values(report)
    return report_exit_code(report) or (1 if failed_layers(report) or undefined else 0)


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
    from symtool.api.jobs import ode_job

    sink = output_sink(fmt, out)
    job = ode_job(
        paths,
        data,
        config=config_path,
        inputs=inputs,
        samples=samples,
        factory=local_spec(model),
        model_args=model_arg_flags(model_arg),
        trust_pickle=trust_pickle,
        nonlinearity=nonlinearity,
        batch_first=batch_first,
        lyapunov_k=lyapunov_k,
        warmup=warmup,
        dt=dt,
        seed=seed,
        steps=steps,
        every=every,
        last=last,
    )
    report = run_with_resume(job, sink, resume=resume)
    assert report is not None
    sink.emit(report)
    return report_exit_code(report) or (1 if failed_layers(report) else 0)


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
    strip_prefix: StripPrefixOpt = None,
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
    from symtool.api.jobs import symmetry_job

    sink = output_sink(fmt, out)
    job = symmetry_job(
        paths,
        config=config_path,
        activation=activation,
        dead_tau=tau_dead,
        dup_tau=tau_dup,
        rank_tau=tau_rank,
        keep_vectors=all_values or None,
        heads=heads,
        classifier=classifier,
        factory=local_spec(model),
        model_args=model_arg_flags(model_arg),
        strip_prefix=strip_prefix,
        trust_pickle=trust_pickle,
        pairs=pair,
        save_subspaces=save_subspaces,
        steps=steps,
        every=every,
        last=last,
    )
    report = run_with_resume(job, sink, resume=resume)
    assert report is not None
    sink.emit(report)
    return report_exit_code(report)
