"""Run every benchmark of bench/ in turn and print all ratios at the end.

    python bench/run_all.py              # full sizes (about 25 minutes on 2 cores, 1 thread)
    python bench/run_all.py --quick      # smoke run of every script, small sizes (CI runs it)
    python bench/run_all.py --threads 2  # torch threads for every script

Each script runs in its own process; its output is shown as it comes, and its
``RESULT`` lines are repeated in the summary. Targets are reported (``ok``/``MISSED``),
never asserted: the exit status is non-zero only when a script itself failed.
WeightWatcher (for the symmetry comparison) is installed on first use into a folder of
its own (``--ww-path``), never into symtool's environment; ``--no-ww`` skips it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(script: str, args: list[str], env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    """Run one benchmark script, echoing its output; returns (exit code, RESULT lines)."""
    cmd = [sys.executable, str(HERE / script), *args]
    print(f"\n$ {' '.join(cmd[1:])}", flush=True)
    results = []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            if line.startswith("RESULT "):
                results.append(line.rstrip())
    return proc.returncode, results


def main(argv: list[str] | None = None) -> int:
    """Run all benchmarks; print the summary of ratios."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes everywhere")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--device", default="cpu", help="device of the floor benchmark")
    ap.add_argument("--no-ww", action="store_true", help="skip WeightWatcher")
    ap.add_argument("--ww-path", type=Path, help="folder holding (or to hold) WeightWatcher")
    args = ap.parse_args(argv)
    q = ["--quick"] if args.quick else []
    t = ["--threads", str(args.threads)]
    ww = ["--no-ww"] if args.no_ww else ["--install-ww"]
    if args.ww_path is not None:
        ww += ["--ww-path", str(args.ww_path)]
    # numpy/scipy (WeightWatcher's BLAS) at their native kernel: see docs/performance.md
    native = {
        k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    }
    plan = [
        ("align_floor.py", [*q, *t, "--device", args.device], None),
        # whole processes; the smoke run times the (tiny) ResNet case only
        ("align_process.py", [*q, *t, "--device", args.device]
         + (["--cases", "resnet18"] if args.quick else []), None),
        ("analysis_costs.py", [*q, *t], None),
        ("align_bruteforce.py", [*q, *t], None),
        ("align_memory.py", [*q, *t], None),
        ("symmetry_gpt2.py", [*q, *t, *ww], native),
        ("callback_overhead.py", [*q, *t], None),
    ]
    t0 = time.perf_counter()
    summary: list[str] = []
    failed = []
    for script, sargs, env in plan:
        code, results = run(script, sargs, env)
        summary += results
        if code:
            failed.append(f"{script} exited {code}")
    print(f"\n== summary ({time.perf_counter() - t0:.0f} s) ==")
    for line in summary:
        print(line)
    for f in failed:
        print(f"FAILED {f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
