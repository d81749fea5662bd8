"""Peak memory of ``symtool align`` against the number of probe samples (issue 8).

Each measurement is a fresh child process that runs ``symtool align`` in-process (the
real CLI) and reports its own peak resident set size (``VmHWM`` from
``/proc/self/status``) when the command is done. The sums are streamed, so the peak should
not grow with N: target < 5% growth from N = 2048 to N = 65536.

Two probe kinds, same model:

* ``source``: ``--data source.py:batches``, a generator that makes each batch on the fly,
  so nothing of size N is ever held (this is the streaming number);
* ``file``: one 65536-sample ``.safetensors`` probe read with ``--samples N``; the probe
  tensors are loaded into memory, so this peak grows by ``N × d_in × 4`` bytes by design.

A second part runs a wide MLP (width 2048, N = 2048) once in one pass and once with
``--max-memory`` (layer partitioning: one pass over the data per group of layers whose sums
fit), and prints both peaks: the sums of all layers against those of one group.

    python bench/align_memory.py                 # N = 2048, 8192, 65536; MLP width 512
    python bench/align_memory.py --quick
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    machine,
    make_checkpoints,
    mlp_case,
    save_probe,
    teacher_data,
    write_source,
)


def peak_kib() -> int:
    """This process's peak resident set size (``VmHWM``), KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def child(cli_args: list[str]) -> int:
    """Run ``symtool <cli_args>`` here and print ``{"peak_kib": …, "exit": …}`` last."""
    from symtool.cli.app import app

    try:
        code = int(app(cli_args, standalone_mode=False) or 0)  # click returns Exit's code
    except SystemExit as exc:
        code = int(exc.code or 0)
    print(json.dumps({"peak_kib": peak_kib(), "exit": code}))
    return 0


def measure(cli_args: list[str], threads: int) -> dict[str, Any]:
    """Peak RSS of one fresh ``symtool`` child process."""
    cmd = [sys.executable, __file__, "--child", "--threads", str(threads), "--", *cli_args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    out = json.loads(lines[-1])
    if out["exit"] not in (0, 1):
        raise RuntimeError(f"symtool align exited {out['exit']}: {proc.stderr[-2000:]}")
    return out


def main(argv: list[str] | None = None) -> int:
    """Measure and print peak RSS per N and probe kind, and the growth."""
    argv = sys.argv[1:] if argv is None else argv
    if "--child" in argv:
        i = argv.index("--")
        pre = argv[:i]
        import torch

        torch.set_num_threads(int(pre[pre.index("--threads") + 1]))
        return child(argv[i + 1 :])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--samples", type=int, nargs="+", default=[2048, 8192, 65536])
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--wide", type=int, default=2048, help="width of the partitioning case")
    ap.add_argument("--budget", type=float, default=0.5, help="--max-memory GiB of that case")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.quick:
        args.width, args.samples, args.batch = 128, [1024, 4096], 256
        args.wide, args.budget = 256, 0.008
    case = mlp_case(args.width)
    print(f"# align peak memory; {machine()}")
    print(
        f"# MLP width {args.width} (4 layers), one checkpoint, batch {args.batch}, default "
        f"align settings; each number is one fresh process (VmHWM)"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="symtool-bench-") as tmp:
        root = Path(tmp)
        ckpt = make_checkpoints(case, root / "ckpts", 1)[0]
        spec = write_source(root / "source.py", case)
        x, y = teacher_data(max(args.samples), case.input_shape, case.classes, seed=7)
        probe = save_probe(root / "probe.safetensors", x, y)
        del x, y
        common = [
            "align",
            str(ckpt),
            "--model",
            case.factory,
            *[a for k, v in case.args.items() for a in ("--model-arg", f"{k}={v}")],
            "--batch-size",
            str(args.batch),
            "--format",
            "json",
        ]
        print(f"{'probe':<8} {'N':>7} {'peak MiB':>9} {'vs first':>9}")
        for kind, data in (("source", spec), ("file", str(probe))):
            first = None
            for n in args.samples:
                out = root / f"report-{kind}-{n}.json"
                r = measure(
                    [*common, "--data", data, "--samples", str(n), "--out", str(out)], args.threads
                )
                report = json.loads(out.read_text())
                seen = report["checkpoints"][0].get("samples")
                mib = r["peak_kib"] / 1024
                first = first or mib
                growth = 100 * (mib / first - 1)
                rows.append(
                    {
                        "probe": kind,
                        "N": n,
                        "peak_mib": mib,
                        "growth_pct": growth,
                        "samples_seen": seen,
                    }
                )
                print(f"{kind:<8} {n:>7} {mib:9.1f} {growth:+8.1f}%   (samples seen: {seen})")
                sys.stdout.flush()
            g = rows[-1]["growth_pct"]
            tag = (
                "ok" if g < 5 else ("expected: the file is loaded" if kind == "file" else "MISSED")
            )
            print(
                f"RESULT memory probe={kind} N={args.samples[0]}→{args.samples[-1]} "
                f"growth={g:+.1f}% [target < 5%: {tag}]"
            )
        rows += partition_case(root, args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def partition_case(root: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Peak RSS of a wide MLP in one pass and with ``--max-memory`` (layer groups)."""
    from symtool.align.moments import layer_bytes

    case = mlp_case(args.wide)
    ckpt = make_checkpoints(case, root / "wide", 1)[0]
    spec = write_source(root / "wide_source.py", case)
    dims = [(args.wide, args.wide)] * 3 + [(args.wide, case.classes)]
    sums = sum(layer_bytes(a, b) for a, b in dims) / 2**20
    print(
        f"# MLP width {args.wide}: sums and finished matrices {sums:.0f} MiB for all layers "
        f"(symtool.align.moments.layer_bytes), N = 2048, --null-samples 16 (Haar bank "
        f"{16 * args.wide**2 * 8 / 2**20:.0f} MiB, held for the run)"
    )
    common = [
        "align",
        str(ckpt),
        "--model",
        case.factory,
        *[a for k, v in case.args.items() for a in ("--model-arg", f"{k}={v}")],
        "--data",
        spec,
        "--samples",
        "2048",
        "--batch-size",
        str(args.batch),
        "--format",
        "json",
    ]
    rows = []
    for label, extra in (
        ("one pass", []),
        (f"--max-memory {args.budget:g}", ["--max-memory", str(args.budget)]),
    ):
        out = root / f"wide-{len(rows)}.json"
        r = measure([*common, *extra, "--out", str(out)], args.threads)
        entry = json.loads(out.read_text())["checkpoints"][0]
        mib = r["peak_kib"] / 1024
        rows.append(
            {"probe": "partition", "run": label, "peak_mib": mib, "passes": entry["passes"]}
        )
        print(f"{label:<20} passes {entry['passes']}  peak {mib:9.1f} MiB")
        sys.stdout.flush()
    one, split = rows[0]["peak_mib"], rows[1]["peak_mib"]
    print(
        f"RESULT memory partition width={args.wide} one-pass={one:.0f}MiB "
        f"max-memory={args.budget:g}GiB:{split:.0f}MiB ({split / one:.2f}x, "
        f"{rows[1]['passes']} passes)"
    )
    return rows


if __name__ == "__main__":
    sys.exit(main())
