"""Prove that a change leaves every user-visible output byte-identical.

Runs a fixed list of ``symtool`` invocations (align, symmetry, ode, inspect, check, diff,
schema, plot) on the bundled fixtures, in one source tree, and stores what each printed
(stdout, stderr, exit code, files written). Volatile fields (``created``, ``duration_s``)
are blanked first. Two such runs, e.g. of the commit before a refactor and of the working
tree, are then compared file by file::

    git worktree add /tmp/before HEAD~1
    python bench/identity.py record /tmp/before /tmp/out-before
    python bench/identity.py record .           /tmp/out-after
    python bench/identity.py compare /tmp/out-before /tmp/out-after

Every command runs from the tree's root with ``python -m symtool`` and that tree first on
``PYTHONPATH``, so relative paths in reports are the same in both runs.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

WORK = "_identity"
"""Folder, relative to the tree's root, for the reports the cases write and read."""

CASES: list[tuple[str, list[str]]] = [
    # align
    ("align_mlp_wd_json", ["align", "fixtures/mlp_wd", "-f", "json", "-o", f"{WORK}/wd.json"]),
    ("align_mlp_nowd_json", ["align", "fixtures/mlp_nowd", "-o", f"{WORK}/nowd.json"]),
    ("align_mlp_wd_csv", ["align", "fixtures/mlp_wd", "--last", "2", "-f", "csv"]),
    ("align_mlp_wd_table", ["align", "fixtures/mlp_wd", "--last", "2", "-f", "table"]),
    ("align_cnn_json", ["align", "fixtures/cnn", "-f", "json", "-o", f"{WORK}/cnn.json"]),
    ("align_cnn_table", ["align", "fixtures/cnn", "--last", "1", "-f", "table"]),
    ("align_verify", ["align", "fixtures/mlp_wd", "--last", "1", "--verify", "-f", "json"]),
    (
        "align_raw_cosine",
        ["align", "fixtures/mlp_nowd", "--every", "4", "--moments", "raw", "--metric", "cosine",
         "--null-samples", "32", "--seed", "3", "-f", "json"],
    ),
    ("align_max_memory", ["align", "fixtures/mlp_wd", "--last", "1", "--max-memory", "6e-5",
                          "-f", "json"]),
    ("align_bad_usage", ["align", "fixtures/mlp_wd", "--max-memory", "0"]),
    ("align_missing", ["align", "fixtures/does_not_exist"]),
    # symmetry
    ("symmetry_mlp_wd_json", ["symmetry", "fixtures/mlp_wd", "-o", f"{WORK}/sym_wd.json"]),
    ("symmetry_mlp_nowd_json", ["symmetry", "fixtures/mlp_nowd", "-f", "json"]),
    ("symmetry_mlp_wd_csv", ["symmetry", "fixtures/mlp_wd", "-f", "csv"]),
    ("symmetry_mlp_wd_table", ["symmetry", "fixtures/mlp_wd", "-f", "table"]),
    ("symmetry_cnn_json", ["symmetry", "fixtures/cnn", "-f", "json"]),
    ("symmetry_subspaces", ["symmetry", "fixtures/mlp_wd", "--last", "2", "-f", "json",
                            "--save-subspaces", f"{WORK}/sub.safetensors"]),
    # ode
    ("ode_rnn_json", ["ode", "fixtures/rnn", "-o", f"{WORK}/ode_rnn.json"]),
    ("ode_gru_json", ["ode", "fixtures/gru", "-f", "json"]),
    ("ode_lstm_json", ["ode", "fixtures/lstm", "-f", "json"]),
    ("ode_lstm2_json", ["ode", "fixtures/lstm2", "-f", "json"]),
    ("ode_rnn_table", ["ode", "fixtures/rnn", "-f", "table"]),
    ("ode_lstm2_csv", ["ode", "fixtures/lstm2", "-f", "csv"]),
    # inspect
    ("inspect_mlp_wd", ["inspect", "fixtures/mlp_wd"]),
    ("inspect_mlp_wd_json", ["inspect", "fixtures/mlp_wd", "-f", "json"]),
    ("inspect_cnn_one", ["inspect", "fixtures/cnn/step_003200.safetensors", "-f", "json"]),
    ("inspect_lstm2_one", ["inspect", "fixtures/lstm2/step_000200.safetensors"]),
    # check (reads the reports written above)
    ("check_align", ["check", f"{WORK}/wd.json", "-r", "b-GWA>=0.8", "-r", "f-GWA>=0.9"]),
    ("check_align_json", ["check", f"{WORK}/wd.json", "-r", "b-GWA.z > 3", "--step", "all",
                          "-f", "json"]),
    ("check_align_typo", ["check", f"{WORK}/wd.json", "-r", "b-GWX>=0.8"]),
    ("check_symmetry", ["check", f"{WORK}/sym_wd.json", "-r", "rank<=20", "-f", "json"]),
    ("check_ode", ["check", f"{WORK}/ode_rnn.json", "-r", "rest.spectral_radius<1.5", "-f", "csv"]),
    # diff
    ("diff_table", ["diff", f"{WORK}/nowd.json", f"{WORK}/wd.json", "-m", "relations.*.alpha"]),
    ("diff_json", ["diff", f"{WORK}/wd.json", f"{WORK}/nowd.json", "-f", "json"]),
    ("diff_csv", ["diff", f"{WORK}/wd.json", f"{WORK}/wd.json", "--step-a", "200",
                  "--step-b", "12800", "--changed", "-f", "csv"]),
    # schema
    ("schema_align", ["schema", "align"]),
    ("schema_symmetry", ["schema", "symmetry"]),
    ("schema_ode", ["schema", "ode"]),
    ("schema_check", ["schema", "check"]),
    ("schema_diff", ["schema", "diff"]),
    ("schema_inspect", ["schema", "inspect"]),
    # plot (SVG: text, so a difference can be read)
    ("plot_align", ["plot", f"{WORK}/wd.json", "-o", f"{WORK}/wd.svg"]),
    ("plot_symmetry", ["plot", f"{WORK}/sym_wd.json", "-o", f"{WORK}/sym.svg"]),
    ("plot_ode", ["plot", f"{WORK}/ode_rnn.json", "-o", f"{WORK}/ode.svg"]),
]

_VOLATILE = ("created", "duration_s")


def _blank(obj: object) -> object:
    """A JSON document with the volatile fields set to null."""
    if isinstance(obj, dict):
        return {k: (None if k in _VOLATILE else _blank(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_blank(v) for v in obj]
    return obj


def _normalise(text: str) -> str:
    """JSON without volatile fields; other text with timing columns and SVG ids blanked."""
    try:
        return _timing(json.dumps(_blank(json.loads(text)), indent=1, sort_keys=False) + "\n")
    except ValueError:
        pass
    lines = []
    for line in text.splitlines():
        if "created" in line or "duration" in line:
            line = re.sub(r"\d{4}-\d\d-\d\dT[\d:.+]+(Z|[+-]\d\d:\d\d)?", "<time>", line)
        lines.append(line)
    out = "\n".join(lines) + ("\n" if text.endswith("\n") else "")
    # CSV duration column and SVG generator noise
    out = re.sub(r'(<dc:date>)[^<]*(</dc:date>)', r"\1<date>\2", out)
    out = re.sub(r'id="[a-z]+[0-9a-f]{10}"', 'id="<id>"', out)
    out = re.sub(r'#[a-z]+[0-9a-f]{10}\b', "#<id>", out)
    return _timing(out)


def _timing(text: str) -> str:
    """``inspect``'s estimate, timed on this machine: its GEMM rate and the seconds from it."""
    text = re.sub(r"≈ [0-9.e+-]+ s of decompositions", "≈ <s> s of decompositions", text)
    return re.sub(r"at [0-9.]+ GFLOP/s", "at <rate> GFLOP/s", text)


def _csv_blank(text: str) -> str:
    """CSV with the values of a ``duration_s`` or ``created`` column blanked."""
    rows = text.splitlines()
    if not rows or "," not in rows[0]:
        return text
    head = rows[0].split(",")
    cols = [i for i, h in enumerate(head) if h in _VOLATILE]
    if not cols:
        return text
    out = [rows[0]]
    for r in rows[1:]:
        cells = r.split(",")
        for i in cols:
            if i < len(cells):
                cells[i] = ""
        out.append(",".join(cells))
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def _tensors_digest(path: Path) -> str:
    """sha256 over a safetensors file's names, dtypes, shapes, bytes and metadata, in sorted
    order: the file's own header order is not stable (its metadata is a hash map)."""
    import torch
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(path), framework="pt") as fh:
        h.update(repr(sorted((fh.metadata() or {}).items())).encode())
        for name in sorted(fh.keys()):
            t = fh.get_tensor(name).contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()


def record(tree: Path, out: Path) -> None:
    """Run every case in ``tree`` and store its normalised outputs in ``out``."""
    tree = tree.resolve()
    work = tree / WORK
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "120", "NO_COLOR": "1",
           "TERM": "dumb", "SYMTOOL_DEBUG": ""}
    for name, args in CASES:
        proc = subprocess.run(
            [sys.executable, "-m", "symtool", *args], cwd=tree, env=env,
            capture_output=True, text=True, check=False,
        )
        (out / f"{name}.stdout").write_text(_normalise(_csv_blank(proc.stdout)))
        (out / f"{name}.stderr").write_text(_normalise(proc.stderr))
        (out / f"{name}.rc").write_text(f"{proc.returncode}\n")
        print(f"{name:28s} exit {proc.returncode}", file=sys.stderr)
    for f in sorted(work.iterdir()):
        data = f.read_bytes()
        if f.suffix in (".json", ".svg", ".csv"):
            (out / f"file_{f.name}").write_text(_normalise(_csv_blank(data.decode())))
        elif f.suffix == ".safetensors":
            (out / f"file_{f.name}.sha256").write_text(_tensors_digest(f) + "\n")
        else:
            (out / f"file_{f.name}.sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")
    shutil.rmtree(work, ignore_errors=True)


def compare(a: Path, b: Path) -> int:
    """Print every file that differs between two recordings; 0 when none does."""
    cmp = filecmp.dircmp(a, b)
    bad = sorted(cmp.left_only) + sorted(cmp.right_only)
    for name in sorted(cmp.common_files):
        if (a / name).read_bytes() != (b / name).read_bytes():
            bad.append(name)
    for name in bad:
        print(f"differs: {name}")
    total = len(set(cmp.common_files) | set(cmp.left_only) | set(cmp.right_only))
    print(f"{total - len(bad)} of {total} outputs identical")
    return 1 if bad else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="run every case in TREE, store outputs in OUT")
    r.add_argument("tree", type=Path)
    r.add_argument("out", type=Path)
    c = sub.add_parser("compare", help="compare two recordings")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = p.parse_args()
    if args.cmd == "record":
        record(args.tree, args.out)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    raise SystemExit(main())
