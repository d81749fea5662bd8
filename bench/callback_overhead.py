"""What the training monitor costs, as a fraction of training time.

Trains the fixture MLP (``fixtures/mlp_wd``: 16 → 32 → 32 → 32 → 4, its 512-sample probe)
with SGD, batch 64, for ``--steps`` steps, without a monitor and with
``symtool.Monitor(..., every_n_steps=k)`` (align + symmetry at the CLI's default settings:
the exact null, 200 bootstrap resamples), for each ``k`` of ``--every``; and a 2-layer
GPT-2 (width 64, 16-token sequences, AdamW, batch 16) with a symmetry monitor. Prints
``overhead = (t_monitor − t_plain) / t_plain`` per case: medians of interleaved repeats.

    python bench/callback_overhead.py                # about 5 minutes on 1 thread
    python bench/callback_overhead.py --quick        # smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(ROOT))

import torch  # noqa: E402
from common import machine, median, set_threads, timed  # noqa: E402  (pins BLAS threads)
from safetensors.torch import load_file  # noqa: E402
from torch import nn  # noqa: E402

import symtool  # noqa: E402


def fixture_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
        nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4),
    )


def train_mlp(steps: int, every: int | None, out: Path) -> None:
    probe = load_file(ROOT / "fixtures" / "mlp_wd" / "probe.safetensors")
    torch.manual_seed(0)
    model = fixture_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    monitor = None if every is None else symtool.Monitor(
        model, probe, out=out, every_n_steps=every
    )
    x, y = probe["x"], probe["y"]
    for step in range(1, steps + 1):
        idx = torch.randint(0, x.shape[0], (64,))
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if monitor is not None:
            monitor.step(step)
    if monitor is not None:
        monitor.close()


def train_gpt2(steps: int, every: int | None, out: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=128, n_positions=16, n_embd=64, n_layer=2, n_head=4)
    model = GPT2LMHeadModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    monitor = None if every is None else symtool.Monitor(
        model, analyses=("symmetry",), out=out, every_n_steps=every, heads=4
    )
    for step in range(1, steps + 1):
        ids = torch.randint(0, 128, (16, 16))
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if monitor is not None:
            monitor.step(step)
    if monitor is not None:
        monitor.close()


def measure(
    train: Callable[[int, int | None, Path], None], steps: int, everies: list[int], repeats: int
) -> dict[str, dict[str, float]]:
    """Median seconds without a monitor and with one per ``every``; the overhead of each."""
    times: dict[str, list[float]] = {"plain": [], **{f"every {k}": [] for k in everies}}
    with tempfile.TemporaryDirectory() as tmp:
        train(min(everies), min(everies), Path(tmp))  # warm-up: first calls, imports
        for _ in range(repeats):  # interleaved, so drift hits every case alike
            times["plain"].append(timed(lambda: train(steps, None, Path(tmp)))[0])
            for k in everies:
                times[f"every {k}"].append(timed(lambda k=k: train(steps, k, Path(tmp)))[0])
    plain = median(times["plain"])
    out = {"plain": {"seconds": plain}}
    for k in everies:
        t = median(times[f"every {k}"])
        out[f"every {k}"] = {"seconds": t, "overhead": (t - plain) / plain}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--every", type=int, nargs="+", default=[10, 50, 100, 500])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-gpt2", action="store_true", help="Skip the GPT-2 case.")
    ap.add_argument("--quick", action="store_true", help="A smoke run.")
    ap.add_argument("--json", type=Path, help="Also write the numbers here.")
    a = ap.parse_args()
    if a.quick:
        a.steps, a.every, a.repeats = 20, [10], 1
    set_threads(a.threads)
    print(machine())
    results = {"mlp_wd": measure(train_mlp, a.steps, a.every, a.repeats)}
    if not a.no_gpt2:
        try:
            import transformers  # noqa: F401
        except ImportError:
            print("transformers is not installed: GPT-2 case skipped")
        else:
            results["gpt2_tiny"] = measure(train_gpt2, a.steps, a.every, a.repeats)
    for case, rows in results.items():
        print(f"\n{case}: {a.steps} training steps")
        print(f"  {'':10s} {'seconds':>8s} {'overhead':>9s}")
        for name, r in rows.items():
            over = f"{100 * r['overhead']:8.1f}%" if "overhead" in r else ""
            print(f"  {name:10s} {r['seconds']:8.2f} {over:>9s}")
        for name, r in rows.items():
            if "overhead" in r:
                print(f"RESULT callback overhead {case} {name}: {100 * r['overhead']:.0f}% "
                      f"of training time")
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
