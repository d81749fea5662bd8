"""Shared pieces of the benchmarks: models, checkpoints, probe data, timing.

Everything a benchmark needs is made here from random numbers (no download): a small
MLP or CNN, a few SGD steps between saved checkpoints (``step_*.safetensors``), and a
probe file (``x``, ``y``) or a probe *source* module that generates batches on the fly.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _pin_blas_threads(argv: list[str]) -> None:
    """Give SciPy's LAPACK (OpenBLAS, which symtool's CPU decompositions use) the thread
    count of ``--threads N``. OpenBLAS reads ``OPENBLAS_NUM_THREADS`` once, when SciPy's
    linear algebra is first imported, so this runs when this module is imported, before
    symtool is; ``torch.set_num_threads`` pins torch's own threads (:func:`set_threads`).
    Without ``--threads`` the scripts' default, one thread, is pinned too (unless the
    environment already sets ``OPENBLAS_NUM_THREADS``), so torch and SciPy agree.
    """
    if "scipy.linalg" in sys.modules:
        return
    if "--threads" not in argv[:-1]:  # every script here defaults to one thread
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        return
    i = argv.index("--threads") + 1
    values = [a for a in argv[i : i + 2] if a.isdigit()]
    if len(values) == 1:  # several counts in one run (``--threads 1 2``): cannot pin
        os.environ["OPENBLAS_NUM_THREADS"] = values[0]


_pin_blas_threads(sys.argv)

import torch  # noqa: E402  (after the BLAS thread pin)
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402

HERE = Path(__file__).resolve().parent
FACTORY_FILE = HERE / "common.py"


# --------------------------------------------------------------------------- models
def mlp(d_in: int = 512, width: int = 512, depth: int = 4, classes: int = 10) -> nn.Module:
    """``depth`` linear layers (``d_in → width → … → width → classes``) with ReLU between."""
    dims = [d_in] + [width] * (depth - 1) + [classes]
    mods: list[nn.Module] = []
    for i in range(depth):
        mods.append(nn.Linear(dims[i], dims[i + 1]))
        if i < depth - 1:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def small_cnn(channels: int = 3, size: int = 16, classes: int = 10) -> nn.Module:
    """Conv(3→16)–ReLU–pool–Conv(16→32)–ReLU–pool–Linear: two convs and a classifier."""
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (size // 4) ** 2, classes),
    )


@dataclass
class Case:
    """One benchmark model: its factory (as ``symtool --model`` takes it) and input shape."""

    name: str
    factory: str
    args: dict[str, Any]
    input_shape: tuple[int, ...]
    classes: int = 10
    build: Callable[..., nn.Module] = field(repr=False, default=mlp)

    def model(self) -> nn.Module:
        """A fresh model (random init under the current torch seed)."""
        return self.build(**self.args)


def mlp_case(width: int, d_in: int | None = None) -> Case:
    """The 4-layer MLP of the given width (input dimension = width unless given)."""
    d = width if d_in is None else d_in
    return Case(
        f"mlp-{width}",
        f"{FACTORY_FILE}:mlp",
        {"d_in": d, "width": width, "depth": 4, "classes": 10},
        (d,),
        build=mlp,
    )


def cnn_case(size: int = 16) -> Case:
    """The small CNN on ``3 × size × size`` inputs."""
    return Case(
        f"cnn-{size}px",
        f"{FACTORY_FILE}:small_cnn",
        {"channels": 3, "size": size, "classes": 10},
        (3, size, size),
        build=small_cnn,
    )


# --------------------------------------------------------------------------- data
def teacher_data(
    n: int, input_shape: tuple[int, ...], classes: int = 10, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian inputs and labels from a fixed random linear teacher (learnable structure)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *input_shape), generator=g)
    d = x[0].numel()
    teacher = torch.randn((d, classes), generator=torch.Generator().manual_seed(12345))
    y = (x.reshape(n, d) @ teacher).argmax(dim=1)
    return x, y


def save_probe(path: Path, x: torch.Tensor, y: torch.Tensor) -> Path:
    """Write a probe file ``{x, y}`` (safetensors)."""
    save_file({"x": x.contiguous(), "y": y.contiguous()}, str(path))
    return path


def make_checkpoints(
    case: Case, folder: Path, count: int, *, steps_between: int = 5, lr: float = 0.05, seed: int = 0
) -> list[Path]:
    """Random init plus ``steps_between`` SGD steps between ``count`` saved checkpoints."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = case.model()
    x, y = teacher_data(2048, case.input_shape, case.classes, seed=seed + 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    paths = []
    step = 0
    for i in range(count):
        if i:
            for _ in range(steps_between):
                idx = torch.randint(0, x.shape[0], (256,))
                opt.zero_grad()
                F.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
                step += 1
        p = folder / f"step_{step:06d}.safetensors"
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(p))
        paths.append(p)
    return paths


SOURCE_TEMPLATE = '''"""Probe batches generated on the fly (made by symtool's benchmarks)."""

import torch

INPUT_SHAPE = {shape!r}
CLASSES = {classes!r}


def batches(batch_size=512):
    """An endless stream of seeded Gaussian batches with teacher labels."""
    g = torch.Generator().manual_seed(0)
    d = 1
    for s in INPUT_SHAPE:
        d *= s
    teacher = torch.randn((d, CLASSES), generator=torch.Generator().manual_seed(12345))
    while True:
        x = torch.randn((batch_size, *INPUT_SHAPE), generator=g)
        yield x, (x.reshape(batch_size, d) @ teacher).argmax(dim=1)
'''


def write_source(path: Path, case: Case) -> str:
    """Write a probe-source module for ``--data file.py:batches``; returns that spec."""
    path.write_text(SOURCE_TEMPLATE.format(shape=case.input_shape, classes=case.classes))
    return f"{path}:batches"


# --------------------------------------------------------------------------- timing
def set_threads(n: int | None) -> int:
    """Pin torch's intra-op threads (``None``: leave as is); returns the count in use."""
    if n is not None:
        torch.set_num_threads(int(n))
    return torch.get_num_threads()


def sync(device: str | torch.device) -> None:
    """Wait for queued GPU work, so a timer measures it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str | torch.device = "cpu") -> tuple[float, Any]:
    """``(seconds, result)`` of one call, synchronised on CUDA."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def median(xs: list[float]) -> float:
    """Median of a non-empty list."""
    return statistics.median(xs)


def machine() -> str:
    """One line describing the CPU/GPU and the thread setting."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [
        f"cpu: {cpu} ({os.cpu_count()} logical cores)",
        f"torch {torch.__version__}",
    ]
    if os.environ.get("OPENBLAS_CORETYPE"):
        parts.append(f"OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']}")
    parts.append(f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    if torch.cuda.is_available():
        parts.append(f"gpu: {torch.cuda.get_device_name()}")
    return "; ".join(parts)


def batches_of(x: torch.Tensor, y: torch.Tensor, size: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """Consecutive ``(x, y)`` slices of ``size`` rows."""
    for i in range(0, x.shape[0], size):
        yield x[i : i + size], y[i : i + size]
