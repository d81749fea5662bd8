"""torch.distributed for ``align``: split probe data or checkpoints across ranks.

Launched by ``torchrun`` (``WORLD_SIZE``/``RANK`` in the environment), ``align`` runs in
one of two modes (docs/performance.md):

* ``data``: every rank sees every checkpoint but only its share of the probe batches
  (batch ``i`` goes to rank ``i mod world``); the float64 sums are all-reduced before
  the matrices are finished, so the report equals a one-process run to round-off.
* ``checkpoints``: each rank analyses every ``world``-th checkpoint on all the data, and
  rank 0 gathers the entries back into step order.

Only rank 0 writes the report.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from symtool.errors import UsageError

T = TypeVar("T")
MODES = ("data", "checkpoints")


@dataclass(frozen=True)
class World:
    """This process's place in the run.

    Attributes:
        rank: this process's rank (0 when not distributed).
        size: number of processes (1 when not distributed).
        mode: ``data`` or ``checkpoints``.
    """

    rank: int = 0
    size: int = 1
    mode: str = "data"

    @property
    def active(self) -> bool:
        """Whether more than one process takes part."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes the report."""
        return self.rank == 0


def from_env(mode: str = "data", device: str = "cpu") -> World:
    """The world torchrun set up (initialising the process group), or a single process."""
    if mode not in MODES:
        raise UsageError(f"--parallel must be data or checkpoints (got {mode!r})")
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(mode=mode)
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return World(dist.get_rank(), dist.get_world_size(), mode)


def shard(items: Iterable[T], world: World) -> Iterator[T]:
    """This rank's share of a stream: items ``i`` with ``i mod size == rank``."""
    for i, item in enumerate(items):
        if i % world.size == world.rank:
            yield item


def all_reduce_(tensors: list[torch.Tensor]) -> None:
    """Sum tensors across ranks, in place, in a fixed order."""
    import torch.distributed as dist

    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)


def all_gather(obj: Any, world: World) -> list[Any]:
    """Every rank's ``obj``, in rank order."""
    if not world.active:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def interleave(per_rank: list[list[T]], world: World) -> list[T]:
    """Undo ``items[rank::size]``: rank r's j-th item was item ``j·size + r``."""
    total = sum(len(p) for p in per_rank)
    out: list[T] = []
    for i in range(total):
        out.append(per_rank[i % world.size][i // world.size])
    return out


def finalize() -> None:
    """Tear the process group down, if one was made."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
