"""``symtool symmetry`` on a GPT-2-small-shaped checkpoint, beside WeightWatcher (issue 8).

Makes a GPT-2-small-shaped state dict (Hugging Face layout: ``wte``, ``wpe``, 12 blocks
with Conv1D-layout ``c_attn``/``c_proj``/``c_fc``, layer norms, biases; ~124M random
parameters, GPT-2's init scale) as one ``.safetensors`` file, then times in one process:

* ``symtool symmetry FILE`` through the real CLI, in-process, default settings;
* WeightWatcher's ``WeightWatcher(model=state_dict).analyze()`` at its defaults, on the
  same weights read from the same file (load time included, as symtool's is).

WeightWatcher is not a symtool dependency: install it into a separate folder with
``--install-ww`` (``pip install --no-deps --target DIR``: torch and numpy stay as they
are) or point ``--ww-path`` at such a folder. Without it the script says so and still
times symtool. Target: symtool ≥ 5× faster.

    python bench/symmetry_gpt2.py --install-ww
    python bench/symmetry_gpt2.py --quick        # 2 blocks, smaller vocabulary
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, median, set_threads, timed

DEFAULT_WW_PATH = Path(tempfile.gettempdir()) / "symtool-bench-ww"
WW_PACKAGES = [
    "weightwatcher==0.7.7",
    "pandas==3.1.1",
    "powerlaw==2.0.0",
    "scikit-learn==1.9.1",
    "narwhals==2.29.0",
    "joblib==1.6.0",
    "threadpoolctl==3.8.0",
    "tqdm==4.70.1",
    "tzdata",
    "pytz",
]
"""WeightWatcher and the dependencies it needs beyond what symtool's environment has."""


def gpt2_state_dict(
    layers: int = 12, d: int = 768, vocab: int = 50257, ctx: int = 1024, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random weights in GPT-2's (Hugging Face) layout and init scale."""
    g = torch.Generator().manual_seed(seed)

    def normal(*shape: int, std: float = 0.02) -> torch.Tensor:
        return torch.randn(shape, generator=g) * std

    sd = {"wte.weight": normal(vocab, d), "wpe.weight": normal(ctx, d, std=0.01)}
    proj_std = 0.02 / (2 * layers) ** 0.5
    for i in range(layers):
        p = f"h.{i}."
        sd |= {
            p + "ln_1.weight": torch.ones(d),
            p + "ln_1.bias": torch.zeros(d),
            p + "attn.c_attn.weight": normal(d, 3 * d),
            p + "attn.c_attn.bias": torch.zeros(3 * d),
            p + "attn.c_proj.weight": normal(d, d, std=proj_std),
            p + "attn.c_proj.bias": torch.zeros(d),
            p + "ln_2.weight": torch.ones(d),
            p + "ln_2.bias": torch.zeros(d),
            p + "mlp.c_fc.weight": normal(d, 4 * d),
            p + "mlp.c_fc.bias": torch.zeros(4 * d),
            p + "mlp.c_proj.weight": normal(4 * d, d, std=proj_std),
            p + "mlp.c_proj.bias": torch.zeros(d),
        }
    sd |= {"ln_f.weight": torch.ones(d), "ln_f.bias": torch.zeros(d)}
    return sd


def run_symtool(path: Path, out: Path, extra: list[str]) -> dict[str, Any]:
    """``symtool symmetry PATH`` through the CLI, in this process; returns the report."""
    from symtool.cli.app import app

    code = app(
        ["symmetry", str(path), "--format", "json", "--out", str(out), *extra],
        standalone_mode=False,
    )
    if code not in (0, None, 1):
        raise RuntimeError(f"symtool symmetry exited {code}")
    return json.loads(out.read_text())


def install_ww(target: Path) -> None:
    """``pip install --no-deps --target`` WeightWatcher and its few missing dependencies."""
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target)]
    print(f"# installing WeightWatcher into {target} (not into symtool's environment)")
    done = subprocess.run([*cmd, *WW_PACKAGES], capture_output=True, text=True, check=False)
    if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)
        raise subprocess.CalledProcessError(done.returncode, done.args)


def import_ww(path: Path) -> tuple[Any, str | None]:
    """The ``weightwatcher`` module from ``path`` (appended to ``sys.path``), or why not."""
    if path.is_dir() and str(path) not in sys.path:
        sys.path.append(str(path))
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            import weightwatcher
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    return weightwatcher, None


def run_ww(ww: Any, path: Path, threads: int) -> Any:
    """WeightWatcher's ``analyze()`` at its defaults on the file's weights (quietly), with
    numpy/scipy's BLAS limited to ``threads`` like torch's."""
    from threadpoolctl import threadpool_limits  # installed beside WeightWatcher

    sd = load_file(str(path))
    quiet = contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())
    with quiet[0], quiet[1], threadpool_limits(limits=threads, user_api="blas"):
        return ww.WeightWatcher(model=sd).analyze()


def blas_kernels() -> str:
    """Which BLAS libraries are loaded and which kernel each runs (via threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not available"
    return "; ".join(
        f"{i.get('prefix')} {i.get('architecture') or ''}".strip() for i in threadpool_info()
    )


def main(argv: list[str] | None = None) -> int:
    """Time symtool symmetry and WeightWatcher on the same GPT-2-shaped weights."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="symtool repeats (median)")
    ap.add_argument("--ww-repeats", type=int, default=1, help="WeightWatcher repeats")
    ap.add_argument(
        "--ww-path", type=Path, default=Path(os.environ.get("SYMTOOL_BENCH_WW", DEFAULT_WW_PATH))
    )
    ap.add_argument("--install-ww", action="store_true", help="pip install it into --ww-path")
    ap.add_argument("--no-ww", action="store_true", help="time symtool only")
    ap.add_argument("--heads", action="store_true", help="also time symtool with --heads 12")
    ap.add_argument("--quick", action="store_true", help="2 blocks, vocabulary 5000")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    shape = dict(layers=2, vocab=5000) if args.quick else {}
    ww, why = None, "skipped (--no-ww)"
    if not args.no_ww:
        if args.install_ww and not (args.ww_path / "weightwatcher").is_dir():
            try:
                install_ww(args.ww_path)
            except (OSError, subprocess.CalledProcessError) as exc:
                why = f"install failed: {exc}"
        ww, why = (
            import_ww(args.ww_path)
            if args.ww_path.is_dir()
            else (None, f"not installed at {args.ww_path} (use --install-ww)")
        )
    print(f"# symmetry on GPT-2-small-shaped weights; {machine()}")
    result: dict[str, Any] = {"threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="symtool-bench-") as tmp:
        root = Path(tmp)
        sd = gpt2_state_dict(**shape)
        n_params = sum(t.numel() for t in sd.values())
        path = root / "gpt2" / "model.safetensors"
        path.parent.mkdir()
        save_file(sd, str(path))
        del sd
        print(f"# {n_params / 1e6:.1f}M parameters, {path.stat().st_size / 2**20:.0f} MiB file")
        runs: dict[str, list[float]] = {"symtool symmetry": []}
        variants = [("symtool symmetry", [])]
        if args.heads:
            runs["symtool symmetry --heads 12"] = []
            variants.append(("symtool symmetry --heads 12", ["--heads", "12"]))
        report: dict[str, Any] = {}
        run_symtool(path, root / "warm.json", [])  # warm-up (imports, thread pools)
        for rep in range(args.repeats):
            for name, extra in variants:
                t, report[name] = timed(
                    lambda extra=extra: run_symtool(path, root / "r.json", extra)
                )
                runs[name].append(t)
            if ww is not None and rep < args.ww_repeats:
                t, df = timed(lambda: run_ww(ww, path, args.threads))
                runs.setdefault("WeightWatcher analyze()", []).append(t)
                result["ww_layers"] = len(df)
        entry = report["symtool symmetry"]["checkpoints"][0]
        result["symtool_status"] = entry.get("status")
        med = {k: median(v) for k, v in runs.items() if v}
        print(f"{'run':<30} {'median s':>9}  runs (s)")
        for k, v in runs.items():
            print(f"{k:<30} {med[k]:9.2f}  " + ",".join(f"{t:.2f}" for t in v))
        print(f"symtool entry status: {entry.get('status')} {entry.get('error') or ''}".rstrip())
        result["median"], result["times"] = med, runs
        if ww is None:
            print(f"WeightWatcher: not run ({why})")
            print(
                "RESULT symmetry-gpt2 WeightWatcher not available; symtool "
                f"{med['symtool symmetry']:.2f} s"
            )
        else:
            ratio = med["WeightWatcher analyze()"] / med["symtool symmetry"]
            result["speedup"] = ratio
            print(f"WeightWatcher analysed {result['ww_layers']} layers")
            print(f"# BLAS in use: {blas_kernels()}")
            print(
                f"RESULT symmetry-gpt2 threads={args.threads} symtool is {ratio:.1f}x faster than "
                f"WeightWatcher analyze() [target ≥ 5x: {'ok' if ratio >= 5 else 'MISSED'}]"
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
