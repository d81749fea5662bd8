"""Whole processes: ``symtool align`` against a hand-written floor process (issue 16).

Each case makes its checkpoints and probe file in a temporary folder, then times, as
separate fresh processes in one run (interleaved repeats, medians):

* the **floor**: ``python bench/align_process.py floor …``: load each checkpoint into the
  model, one forward and one backward per batch (gradients w.r.t. the captured layers'
  outputs only), and per layer and batch the four normalised second-moment sums
  ``Σ x̂x̂ᵀ`` of ``h_a, g_a, h_b, g_b`` (conv: on im2col rows) and the cross sum
  ``D = Σ g_b h_aᵀ``, float64 (``align_floor.FloorSums``), finished into matrices;
* **align**: ``python -m symtool align CKPTS --model … --data probe -o report.json`` at
  its default settings (every layer, PAH with 200 bootstrap resamples),

and reports wall seconds, the ratio align/floor, the same for CPU seconds (user + system
from ``wait4``: at one thread the steadier figure on a shared machine) and each process's
peak resident set size (``ru_maxrss``). Cases:

* ``resnet18``: torchvision's ResNet-18 layout (``bench/resnet.py``, 21 conv/linear layers),
  CIFAR-sized 3×32×32 inputs, 297 probe images, batch 256, one checkpoint (random init
  plus 10 SGD steps); targets align ≤ 2× the floor and peak RSS ≤ 4 GB;
* ``mlp-512``: 4-layer MLP of width 512, 2 checkpoints, 16384 probe rows; target ≤ 1.5×;
* ``mlp-1024``: ``align_floor.py``'s width-1024 case, 4 checkpoints, N = 8192; ≤ 1.5×.

    python bench/align_process.py                      # all three cases
    python bench/align_process.py --cases resnet18 --repeats 1
    python bench/align_process.py --quick              # smoke run (tiny models)
    python bench/align_process.py --device cuda        # both processes on the GPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Case,
    machine,
    make_checkpoints,
    mlp_case,
    save_probe,
    teacher_data,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESNET_FILE = HERE / "resnet.py"

TARGETS = {"resnet18": 2.0, "mlp-512": 1.5, "mlp-1024": 1.5}
RSS_TARGET_GB = {"resnet18": 4.0}


# --------------------------------------------------------------------------- cases
def resnet_case(width: int = 64) -> Case:
    """ResNet-18 (torchvision names) on 3×32×32 inputs, 10 classes."""
    from resnet import resnet18

    return Case(
        "resnet18",
        f"{RESNET_FILE}:resnet18",
        {"classes": 10, "width": width},
        (3, 32, 32),
        build=resnet18,
    )


def plan(quick: bool) -> dict[str, dict[str, Any]]:
    """Per case: the model, probe rows, checkpoints and batch size."""
    if quick:
        return {
            "resnet18": dict(case=resnet_case(8), samples=48, checkpoints=1, batch=32),
            "mlp-512": dict(case=mlp_case(64), samples=1024, checkpoints=2, batch=256),
            "mlp-1024": dict(case=mlp_case(96), samples=1024, checkpoints=2, batch=256),
        }
    return {
        "resnet18": dict(case=resnet_case(64), samples=297, checkpoints=1, batch=256),
        "mlp-512": dict(case=mlp_case(512), samples=16384, checkpoints=2, batch=512),
        "mlp-1024": dict(case=mlp_case(1024), samples=8192, checkpoints=4, batch=512),
    }


def make_resnet_checkpoint(case: Case, folder: Path, steps: int = 10, seed: int = 0) -> None:
    """One checkpoint: random init plus ``steps`` SGD steps (train mode: BN statistics move)."""
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = case.model()
    x, y = teacher_data(512, case.input_shape, case.classes, seed=seed + 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (64,))
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(folder / f"step_{steps:06d}.safetensors"))


# --------------------------------------------------------------------------- the floor
def floor_main(argv: list[str]) -> int:
    """The floor process: load, forward+backward, the five float64 sums per layer."""
    ap = argparse.ArgumentParser(prog="align_process.py floor")
    ap.add_argument("--factory", required=True)
    ap.add_argument("--args", required=True, help="factory keyword arguments as JSON")
    ap.add_argument("--ckpts", type=Path, required=True)
    ap.add_argument("--probe", type=Path, required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    import importlib.util

    import torch
    import torch.nn.functional as F
    from align_floor import FloorSums
    from safetensors.torch import load_file
    from torch import nn

    file, _, fn = a.factory.rpartition(":")
    spec = importlib.util.spec_from_file_location("floor_factory", file)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["floor_factory"] = mod  # dataclasses in the factory's file look it up
    spec.loader.exec_module(mod)
    model = getattr(mod, fn)(**json.loads(a.args))
    device = torch.device(a.device)
    probe = load_file(str(a.probe))
    x_all, y_all = probe["x"], probe["y"]
    mods = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    def hook(name: str, module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        seen[name] = (args[0], out)

    for name, m in mods:
        m.register_forward_hook(partial(hook, name))
    total = 0.0
    for path in sorted(a.ckpts.glob("step_*.safetensors")):
        model.load_state_dict(load_file(str(path)))
        model.to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        sums = {n: FloorSums(m, torch.float64, device) for n, m in mods}
        for i in range(0, x_all.shape[0], a.batch):
            x = x_all[i : i + a.batch].to(device).requires_grad_()
            loss = F.cross_entropy(model(x), y_all[i : i + a.batch].to(device), reduction="sum")
            outs = [seen[n][1] for n, _ in mods]
            grads = torch.autograd.grad(loss, outs)
            for (n, _), g in zip(mods, grads, strict=True):
                sums[n].add(seen[n][0].detach(), seen[n][1].detach(), g)
            seen.clear()
        for s in sums.values():
            mats = s.finish()
            total += float(sum(float(v.trace()) for v in mats.values()))
            del mats
        del sums
    if device.type == "cuda":
        torch.cuda.synchronize()
    print(f"floor checksum {total:.6e}")
    return 0


# --------------------------------------------------------------------------- timing
def run_timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, float, int]:
    """Run one process; (wall seconds, CPU seconds, peak RSS in GiB, exit code).

    CPU seconds (user + system, ``wait4``) are the steadier figure on a shared machine:
    at one thread they are the wall time the process would take alone."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )  # cwd: not a source tree, so ``python -m symtool`` imports the one on PYTHONPATH
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        print(out[-4000:], file=sys.stderr)
    cpu = usage.ru_utime + usage.ru_stime
    return wall, cpu, usage.ru_maxrss / 2**20, proc.returncode


def child_env(threads: int, tree: Path = ROOT) -> dict[str, str]:
    """Both processes get the same thread counts and find ``tree``'s symtool first."""
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def bench_case(
    name: str, spec: dict[str, Any], root: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Make the case's files, then time the floor and align processes."""
    case: Case = spec["case"]
    folder = root / name
    ckpts = folder / "ckpts"
    if name == "resnet18":
        make_resnet_checkpoint(case, ckpts)
    else:
        make_checkpoints(case, ckpts, spec["checkpoints"])
    x, y = teacher_data(spec["samples"], case.input_shape, case.classes, seed=7)
    probe = save_probe(folder / "probe.safetensors", x, y)
    env = child_env(args.threads, args.tree)
    floor_cmd = [
        sys.executable, str(HERE / "align_process.py"), "floor",
        "--factory", case.factory, "--args", json.dumps(case.args), "--ckpts", str(ckpts),
        "--probe", str(probe), "--batch", str(spec["batch"]), "--device", args.device,
    ]  # fmt: skip
    align_cmd = [
        sys.executable, "-m", "symtool", "align", str(ckpts), "--model", case.factory,
        *[a for k, v in case.args.items() for a in ("--model-arg", f"{k}={v}")],
        "--data", str(probe), "--batch-size", str(spec["batch"]), "--device", args.device,
        "-f", "json", "-o", str(folder / "report.json"), *args.align_args,
    ]  # fmt: skip
    times: dict[str, list[float]] = {"floor": [], "align": []}
    cpu: dict[str, list[float]] = {"floor": [], "align": []}
    rss: dict[str, float] = {"floor": 0.0, "align": 0.0}
    cmds = {"floor": floor_cmd, "align": align_cmd}
    for rep in range(args.repeats):
        for kind in (["floor", "align"] if rep % 2 == 0 else ["align", "floor"]):
            wall, secs, peak, code = run_timed(cmds[kind], env, folder)
            if code:
                raise SystemExit(f"{name}: the {kind} process exited {code}")
            times[kind].append(wall)
            cpu[kind].append(secs)
            rss[kind] = max(rss[kind], peak)
    report = json.loads((folder / "report.json").read_text())
    layers = [lay for e in report["checkpoints"] for lay in e.get("layers") or []]
    failed = [f"{lay['name']}: {lay.get('reason')}" for lay in layers if lay["status"] != "ok"]
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    return {
        "case": name,
        "model_args": case.args,
        "samples": spec["samples"],
        "checkpoints": spec["checkpoints"],
        "batch": spec["batch"],
        "threads": args.threads,
        "device": args.device,
        "layers": len(layers) // max(spec["checkpoints"], 1),
        "times": times,
        "median": med,
        "ratio": med["align"] / med["floor"],
        "cpu": cpu,
        "median_cpu": med_cpu,
        "ratio_cpu": med_cpu["align"] / med_cpu["floor"],
        "peak_rss_gib": rss,
        "failed_layers": failed,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the cases; print a table and RESULT lines (targets reported, never asserted)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["floor"]:
        return floor_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cases", nargs="+", choices=sorted(TARGETS), default=list(TARGETS))
    ap.add_argument("--threads", type=int, default=1, help="threads of both processes")
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats (median)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--quick", action="store_true", help="tiny models: a smoke run")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--tree", type=Path, default=ROOT,
        help="symtool source tree to time (default: this checkout), e.g. a worktree of an "
        "earlier commit for a before/after comparison",
    )  # fmt: skip
    ap.add_argument(
        "--align-arg", dest="align_args", action="append", default=[],
        help="extra argument for symtool align (repeatable), e.g. --align-arg=--no-pah",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats = 1
    cases = plan(args.quick)
    print(f"# whole-process align vs floor; {machine()}; threads {args.threads}")
    print(
        f"{'case':<10} {'floor s':>8} {'align s':>8} {'ratio':>6} {'cpu ratio':>9} "
        f"{'floor GiB':>9} {'align GiB':>9}"
    )
    out = []
    with tempfile.TemporaryDirectory(prefix="symtool-bench-proc-") as tmp:
        for name in args.cases:
            r = bench_case(name, cases[name], Path(tmp), args)
            out.append(r)
            m, g = r["median"], r["peak_rss_gib"]
            print(
                f"{name:<10} {m['floor']:8.2f} {m['align']:8.2f} {r['ratio']:6.2f} "
                f"{r['ratio_cpu']:9.2f} {g['floor']:9.2f} {g['align']:9.2f}   "
                f"wall {r['times']} cpu {r['cpu']}",
                flush=True,
            )
            if r["failed_layers"]:
                print(f"  align failed layers: {r['failed_layers']}")
    for r in out:
        name, target = r["case"], TARGETS[r["case"]]
        tag = "" if args.quick else f" [{'ok' if r['ratio'] <= target else 'MISSED'}]"
        line = (
            f"RESULT align-process {name} N={r['samples']} threads={r['threads']} "
            f"device={r['device']} align/floor={r['ratio']:.2f}{tag} (target ≤ {target}) "
            f"floor={r['median']['floor']:.2f}s align={r['median']['align']:.2f}s "
            f"(cpu: {r['median_cpu']['floor']:.2f}s, {r['median_cpu']['align']:.2f}s, "
            f"ratio {r['ratio_cpu']:.2f}) "
            f"rss floor={r['peak_rss_gib']['floor']:.2f}GiB "
            f"align={r['peak_rss_gib']['align']:.2f}GiB"
        )
        if name in RSS_TARGET_GB and not args.quick:
            ok = r["peak_rss_gib"]["align"] <= RSS_TARGET_GB[name]
            line += f" [rss ≤ {RSS_TARGET_GB[name]} GB: {'ok' if ok else 'MISSED'}]"
        print(line)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
