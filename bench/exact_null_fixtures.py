"""The exact null of every relation of real layers against a brute-force Haar null.

``symtool align RUN --save-matrices`` keeps each layer's float64 ``H``, ``G``, ``C`` and
``W``; for every layer and relation of the chosen checkpoint this draws ``--draws`` Haar
rotations (QR of a Gaussian matrix with the sign fix), scores ``α(A, Q B Qᵀ)`` and prints
the report's exact ``null_mean``/``null_std`` beside the sample's, with the differences in
Monte Carlo standard errors (mean: s/√n; std: sd((x − x̄)²)/(2 s √n)). Issue 16's bar:
within 3 standard errors for every layer and relation, including d = 4.

    python bench/exact_null_fixtures.py fixtures/mlp_wd [--draws 5000] [--step last]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from symtool.align.crh import CROSS_TERMS, RELATIONS
from symtool.align.score import alignment

F64 = torch.float64


def haar(d: int, g: torch.Generator) -> torch.Tensor:
    """One Haar orthogonal ``d × d`` matrix."""
    Q, R = torch.linalg.qr(torch.randn((d, d), generator=g, dtype=F64))
    s = torch.sign(torch.diagonal(R))
    return Q * torch.where(s == 0, torch.ones_like(s), s)


def brute(A: torch.Tensor, B: torch.Tensor, metric: str, draws: int, seed: int) -> list[float]:
    """``α(A, Q B Qᵀ)`` for ``draws`` Haar ``Q``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(draws):
        Q = haar(A.shape[0], g)
        a = alignment(A, Q @ B @ Q.T, metric)
        if a is not None:
            out.append(a)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--draws", type=int, default=5000)
    ap.add_argument("--step", default="last", help="checkpoint step to analyse (default last)")
    ap.add_argument("--metric", default="pearson")
    ap.add_argument("--max-dim", type=int, default=128, help="skip relations of larger d")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rep, mats = Path(tmp) / "r.json", Path(tmp) / "m.safetensors"
        sel = ["--last", "1"] if args.step == "last" else ["--steps", args.step]
        cmd = [sys.executable, "-m", "symtool", "align", str(args.run), *sel, "--no-pah",
               "--metric", args.metric, "--format", "json", "-o", str(rep),
               "--save-matrices", str(mats)]
        subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
        report = json.loads(rep.read_text())
        saved = load_file(str(mats))
    entry = report["checkpoints"][-1]
    tag = f"step_{entry['step']}"
    worst_m = worst_s = 0.0
    rows = 0
    print(f"{args.run} {tag}: {args.draws} Haar draws per relation, metric {args.metric}")
    print(f"{'layer':<12} {'rel':<8} {'d':>4} {'method':<10} {'exact mean':>11} {'MC mean':>11}"
          f" {'Δ/SE':>6} {'exact std':>10} {'MC std':>10} {'Δ/SE':>6}")
    for layer in entry["layers"]:
        name = layer["name"]
        m = {k.split("/")[-1]: v for k, v in saved.items() if k.startswith(f"{tag}/{name}/")}
        dense = {
            "H_a": m["H_a"], "G_a": m["G_a"], "H_b": m["H_b"], "G_b": m["G_b"],
            "Z_a": m["Z_a"], "Z_b": m["Z_b"], "X_a": -m["C_a"], "X_b": -m["C_b"],
        }
        dense = {k: (v + v.T) / 2 for k, v in dense.items()}
        for group, specs in (("relations", RELATIONS), ("cross_terms", CROSS_TERMS)):
            for rid, first, second, _ in specs:
                rec = layer[group][rid]
                A, B = dense[first], dense[second]
                d = A.shape[0]
                if rec["null_std"] is None or d > args.max_dim:
                    continue
                xs = torch.tensor(brute(A, B, args.metric, args.draws, seed=rows), dtype=F64)
                n = xs.numel()
                mu, sd = float(xs.mean()), float(xs.std())
                se_m = sd / math.sqrt(n)
                se_s = float(((xs - mu) ** 2).std()) / (2 * sd * math.sqrt(n))
                dm = (rec["null_mean"] - mu) / se_m
                ds = (rec["null_std"] - sd) / se_s
                worst_m, worst_s = max(worst_m, abs(dm)), max(worst_s, abs(ds))
                rows += 1
                print(f"{name:<12} {rid:<8} {d:>4} {rec['null_method']:<10} "
                      f"{rec['null_mean']:>11.6f} {mu:>11.6f} {dm:>6.2f} "
                      f"{rec['null_std']:>10.6f} {sd:>10.6f} {ds:>6.2f}")
    print(f"{rows} relations: max |Δmean|/SE = {worst_m:.2f}, max |Δstd|/SE = {worst_s:.2f}")


if __name__ == "__main__":
    main()
