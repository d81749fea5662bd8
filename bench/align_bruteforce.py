"""``align`` against brute force (issue 8): speed-up and agreement of the numbers.

Brute force stores every sample's ``h_a`` for every layer, gets every sample's ``g_b``
from ``torch.func`` and forms the paper-recipe matrices densely in float64, then the α of
the six CRH relations. Two brute-force variants are timed:

* ``perturb`` (the issue's recipe): ``vmap(grad(ℓ_i))`` with respect to an additive zero
  perturbation ``δ`` of each layer output, so ``∂ℓ_i/∂δ = g_b`` directly;
* ``param-grads`` (the ``torch.func`` per-sample-gradient tutorial recipe):
  ``vmap(grad(ℓ_i))`` with respect to the parameters, in chunks; ``g_b`` is the per-sample
  bias gradient, and the per-sample weight gradients (``N × d_out × d_in``) are what makes
  it costly (they are computed chunk by chunk, never all stored).

Symtool is timed two ways on the same checkpoint: its capture plus the six α (the same
outputs as brute force), and the whole default ``run_align`` (nulls and PAH too).

    python bench/align_bruteforce.py            # N = 8192, width 512
    python bench/align_bruteforce.py --quick
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    machine,
    make_checkpoints,
    median,
    mlp_case,
    save_probe,
    set_threads,
    teacher_data,
    timed,
)

from symtool.align import capture as cap
from symtool.align import crh
from symtool.align.run import AlignSettings, run_align
from symtool.align.score import alignment
from symtool.inputs import checkpoints as ck
from symtool.inputs import models, probes

Tensor = torch.Tensor
MATS = ("H_a", "G_a", "H_b", "G_b", "C_a", "C_b")


# --------------------------------------------------------------------------- brute force
def store_inputs(model: nn.Sequential, x: Tensor, batch: int) -> list[Tensor]:
    """Every sample's input to every linear layer, all stored (N × d_in each)."""
    linears = [m for m in model if isinstance(m, nn.Linear)]
    kept: list[list[Tensor]] = [[] for _ in linears]
    handles = [
        m.register_forward_hook(lambda mod, a, o, i=i: kept[i].append(a[0].detach()))
        for i, m in enumerate(linears)
    ]
    try:
        with torch.no_grad():
            for i in range(0, x.shape[0], batch):
                model(x[i : i + batch])
    finally:
        for h in handles:
            h.remove()
    return [torch.cat(k) for k in kept]


def grads_perturb(model: nn.Sequential, x: Tensor, y: Tensor, chunk: int | None) -> list[Tensor]:
    """Per-sample ``g_b`` of every linear layer: ``vmap(grad)`` w.r.t. zero output shifts."""
    weights = [(m.weight.detach(), m.bias.detach()) for m in model if isinstance(m, nn.Linear)]

    def loss(deltas: tuple[Tensor, ...], xi: Tensor, yi: Tensor) -> Tensor:
        h, k = xi, 0
        for m in model:
            if isinstance(m, nn.Linear):
                h = F.linear(h, *weights[k]) + deltas[k]
                k += 1
            else:
                h = m(h)
        return F.cross_entropy(h.unsqueeze(0), yi.unsqueeze(0), reduction="sum")

    zeros = tuple(torch.zeros(x.shape[0], w.shape[0], dtype=x.dtype) for w, _ in weights)
    g = torch.func.vmap(torch.func.grad(loss), in_dims=(0, 0, 0), chunk_size=chunk)(zeros, x, y)
    return list(g)


def grads_params(model: nn.Sequential, x: Tensor, y: Tensor, chunk: int) -> list[Tensor]:
    """Per-sample parameter gradients (``torch.func`` recipe), chunked; ``g_b`` = bias grads."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]

    def loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        out = torch.func.functional_call(model, p, (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0), reduction="sum")

    per = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))
    parts: list[list[Tensor]] = [[] for _ in names]
    for i in range(0, x.shape[0], chunk):
        g = per(params, x[i : i + chunk], y[i : i + chunk])  # weights: chunk × d_out × d_in
        for j, n in enumerate(names):
            parts[j].append(g[f"{n}.bias"])
        del g
    return [torch.cat(p) for p in parts]


def paper(X: Tensor) -> Tensor:
    """Centred covariance of the rows divided by their norms (zero rows dropped), dense."""
    norm = X.norm(dim=1)
    Xn = X[norm > 0] / norm[norm > 0, None]
    mean = Xn.mean(dim=0)
    return Xn.T @ Xn / Xn.shape[0] - torch.outer(mean, mean)


def dense_matrices(W: Tensor, h_a: Tensor, g_b: Tensor) -> dict[str, Tensor]:
    """All of one layer's matrices from stored rows, in float64."""
    W64, h_a, g_b = W.double(), h_a.double(), g_b.double()
    h_b = h_a @ W64.T
    g_a = g_b @ W64
    n = h_a.shape[0]
    return {
        "H_a": paper(h_a),
        "G_a": paper(g_a),
        "H_b": paper(h_b),
        "G_b": paper(g_b),
        "C_a": h_a.T @ g_a / n,
        "C_b": g_b.T @ h_b / n,
        "Z_a": W64.T @ W64,
        "Z_b": W64 @ W64.T,
    }


def six_alphas(m: dict[str, Tensor]) -> dict[str, float | None]:
    """α of the six relations (Pearson over all entries)."""
    return {rid: alignment(m[a], m[b]) for rid, a, b, _ in crh.RELATIONS}


def brute_force(
    model: nn.Sequential, x: Tensor, y: Tensor, batch: int, how: str, chunk: int | None
) -> dict[str, dict[str, Any]]:
    """Matrices and α per layer, the brute-force way."""
    h_as = store_inputs(model, x, batch)
    if how == "perturb":
        g_bs = grads_perturb(model, x, y, chunk)
    else:
        g_bs = grads_params(model, x, y, chunk or batch)
    out = {}
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    for name, h_a, g_b in zip(names, h_as, g_bs, strict=True):
        W = model.get_submodule(name).weight.detach()
        mats = dense_matrices(W, h_a, g_b)
        out[name] = {"mats": mats, "alpha": six_alphas(mats)}
    return out


# --------------------------------------------------------------------------- symtool
def symtool_core(
    model: nn.Module, refs: list[models.LayerRef], probe: probes.ProbeData, batch: int
) -> dict[str, dict[str, Any]]:
    """Symtool's capture plus the six α: the same outputs as brute force."""
    res = cap.capture(
        model, refs, probes.iter_batches(probe, batch), probes.resolve_loss("cross_entropy")
    )
    out = {}
    for r in refs:
        m = res.layers[r.name]
        W = m.W
        mats = {k: getattr(m, k) for k in MATS} | {"Z_a": W.T @ W, "Z_b": W @ W.T}
        out[r.name] = {"mats": mats, "alpha": six_alphas(mats)}
    return out


def compare(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> tuple[float, str, float]:
    """Max relative Frobenius difference of the matrices (and which), max |Δα|."""
    rel, where, dalpha = 0.0, "", 0.0
    for name, la in a.items():
        lb = b[name]
        for k in MATS:
            A, B = la["mats"][k], lb["mats"][k]
            r = float((A - B).norm() / B.norm().clamp_min(1e-300))
            if r > rel:
                rel, where = r, f"{k} of layer {name}"
        for rid, va in la["alpha"].items():
            vb = lb["alpha"][rid]
            if va is not None and vb is not None:
                dalpha = max(dalpha, abs(va - vb))
    return rel, where, dalpha


def float64_agreement(model: nn.Sequential, x: Tensor, y: Tensor, batch: int) -> str:
    """The same comparison with the model in float64: differences left are round-off only."""
    m64 = copy.deepcopy(model).double()
    refs, _ = models.select_layers(m64, None)
    probe = probes.ProbeData(Path("-"), "", x.double(), y, None, ("x", "y"))
    rel, where, dal = compare(
        brute_force(m64, x.double(), y, batch, "perturb", None),
        symtool_core(m64, refs, probe, batch),
    )
    return f"max rel diff of matrices {rel:.1e} ({where}), max |Δα| {dal:.1e}"


def main(argv: list[str] | None = None) -> int:
    """Time brute force and symtool in one process and print speed-ups and agreement."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--samples", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=None, help="vmap chunk size (perturb)")
    ap.add_argument("--param-chunk", type=int, default=256, help="chunk (param-grads)")
    ap.add_argument("--no-param-grads", action="store_true", help="skip the param-grads run")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.quick:
        args.width, args.samples, args.batch, args.repeats = 128, 1024, 256, 1
    case = mlp_case(args.width)
    results = []
    print(f"# align vs brute force; {machine()}")
    print(
        f"# MLP width {args.width} (4 layers), N = {args.samples}, batch {args.batch}, "
        f"one checkpoint, float64 sums; median of {args.repeats}"
    )
    with tempfile.TemporaryDirectory(prefix="symtool-bench-") as tmp:
        root = Path(tmp)
        paths = make_checkpoints(case, root / "ckpts", 2)
        x, y = teacher_data(args.samples, case.input_shape, case.classes, seed=7)
        probe_path = save_probe(root / "probe.safetensors", x, y)
        ckpt = [c for c in ck.discover([root / "ckpts"]) if c.path == paths[-1]]
        sd = ck.load(ckpt[0]).tensors
        model = models.build_model(case.factory, case.args, sd)
        models.load_state(model, sd, source=paths[-1])
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        refs, _ = models.select_layers(model, None)
        probe = probes.load_probe(probe_path)
        settings = AlignSettings(
            factory=case.factory,
            model_args=case.args,
            data=probe_path,
            batch_size=args.batch,
            base_dir=root,
        )
        assert isinstance(model, nn.Sequential)
        runs: dict[str, Callable[[], Any]] = {
            "symtool capture + 6 α": lambda: symtool_core(model, refs, probe, args.batch),
            "symtool align (default)": lambda: run_align(ckpt, settings),
            "brute force perturb": lambda: brute_force(
                model, x, y, args.batch, "perturb", args.chunk
            ),
        }
        if not args.no_param_grads:
            runs["brute force param-grads"] = lambda: brute_force(
                model, x, y, args.batch, "params", args.param_chunk
            )
        for threads in args.threads:
            set_threads(threads)
            times: dict[str, list[float]] = {k: [] for k in runs}
            last: dict[str, Any] = {}
            for rep in range(args.repeats + 1):  # the first repeat is a warm-up
                for k, fn in runs.items():
                    t, last[k] = timed(fn)
                    if rep:
                        times[k].append(t)
            med = {k: median(v) for k, v in times.items()}
            sym = last["symtool capture + 6 α"]
            align_alpha = {
                lay["name"]: {rid: r["alpha"] for rid, r in lay["relations"].items()}
                for lay in last["symtool align (default)"]["checkpoints"][0]["layers"]
            }
            print(f"threads {threads}")
            print(f"  {'run':<26} {'median s':>9}  {'runs (s)'}")
            for k, v in times.items():
                print(f"  {k:<26} {med[k]:9.2f}  " + ",".join(f"{t:.2f}" for t in v))
            row: dict[str, Any] = {"threads": threads, "median": med, "times": times}
            for k in runs:
                if not k.startswith("brute"):
                    continue
                rel, where, dal = compare(last[k], sym)
                da2 = max(
                    abs(last[k][n]["alpha"][rid] - a)
                    for n, rels in align_alpha.items()
                    for rid, a in rels.items()
                    if a is not None and last[k][n]["alpha"][rid] is not None
                )
                s_core = med[k] / med["symtool capture + 6 α"]
                s_full = med[k] / med["symtool align (default)"]
                print(
                    f"  {k}: speed-up of symtool {s_core:.1f}× (capture + 6 α), "
                    f"{s_full:.1f}× (whole align); max rel diff of matrices {rel:.1e} ({where}), "
                    f"max |Δα| {dal:.1e} (vs align report: {da2:.1e})"
                )
                row[k] = {
                    "speedup_core": s_core,
                    "speedup_align": s_full,
                    "max_rel_diff": rel,
                    "max_abs_dalpha": dal,
                }
                print(
                    f"RESULT bruteforce-{k.split()[-1]} threads={threads} "
                    f"speed-up(capture+α, the brute force's outputs)={s_core:.1f}x "
                    f"[≥ 10x: {'ok' if s_core >= 10 else 'MISSED'}] "
                    f"speed-up(align with nulls and PAH)={s_full:.1f}x "
                    f"[≥ 10x: {'ok' if s_full >= 10 else 'MISSED'}] "
                    f"max-rel-diff={rel:.1e} max-dalpha={dal:.1e}"
                )
            f64 = float64_agreement(model, x, y, args.batch)
            print(f"  with the model in float64 (brute force perturb vs symtool): {f64}")
            row["float64_agreement"] = f64
            results.append(row)
            sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
