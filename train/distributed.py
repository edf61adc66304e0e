"""Running a fit stage over several processes (`torchrun`): the one home for who this process is, its share of
a stage's work, the gathering of the results back in order, and "rank 0 writes, the others wait".

One process is the default and needs nothing: without torchrun's environment (WORLD_SIZE unset or 1) every
helper here is a plain loop and no collective is ever called. Under torchrun the first helper that needs the
others joins the process group from torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).

Backend: gloo for what is exchanged here, also on GPU machines. The stages sharded here (schedule search,
forecaster gate calibration) exchange a handful of host floats per round, scores that already live on the host
(one sync per candidate); gloo carries CPU tensors on any machine, where nccl would need each of them copied
to a bound GPU and back, for no gain. With CUDA (and nccl) present the group is "cpu:gloo,cuda:nccl": CPU
tensors still go through gloo, and whatever else reuses the group for CUDA tensors in the same process (a
Lightning DDP stage) gets nccl, not gloo. Each rank's GPU is its own: joining sets the current device to
LOCAL_RANK, so a pipeline loaded with `--device cuda` afterwards lands on that rank's GPU. A group someone
else initialised (e.g. Lightning's nccl one) is used as it is; a pure nccl group gathers on the current GPU.

Work items are split round-robin (rank r takes items r, r + W, ...) and every rank must be given the same
items in the same order: the gathered list is then identical on every rank and equal to the one-process list,
so an argmax over it (ties to the lowest index) is the same everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from cachepilot.errors import CachepilotError

T = TypeVar("T")
R = TypeVar("R")

# How long a rank waits in a collective: rank 0 may work alone for long while the others wait at its barrier
# (a file written after a long stage). torchrun stops every rank once one fails, so waiting long hides no crash.
WAIT = timedelta(hours=6)


def launched() -> tuple[int, int]:
    """(rank, world size) without joining anything: from an initialised group, else torchrun's environment.
    For a stage that needs no communication (collection: each rank writes its own shards)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def setup() -> tuple[int, int]:
    """(rank, world size), joining torchrun's process group first when launched with WORLD_SIZE > 1 and no
    group is initialised yet (gloo; see the module docstring). Call it before loading a pipeline on `cuda`."""
    rank, world = launched()
    if world > 1 and not dist.is_available():
        raise CachepilotError(f"launched as rank {rank} of {world}, but this torch build has no torch.distributed")
    if world > 1 and not dist.is_initialized():
        bind_device()
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=WAIT)
    return rank, world


def bind_device() -> None:
    """Under torchrun with CUDA present, make this rank's GPU (LOCAL_RANK) the current one, so `cuda` means it:
    without this every rank of a node would load its pipeline on GPU 0. Needs no process group."""
    if torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))


def rank() -> int:
    """This process's rank (0 alone): who prints and writes."""
    return setup()[0]


def world_size() -> int:
    """How many processes share the work (1 alone)."""
    return setup()[1]


def is_distributed() -> bool:
    """Whether work is split: more than one process."""
    return world_size() > 1


def share(count: int, rank: int, world: int) -> range:
    """The indices of `count` items that `rank` of `world` handles: rank, rank + world, ... (round-robin)."""
    return range(rank, count, world)


def merge(parts: Sequence[Sequence[float]], count: int) -> list[float]:
    """Every rank's results (parts[r] in the order of `share(count, r, len(parts))`) back in item order."""
    world = len(parts)
    merged = [0.0] * count
    for r, part in enumerate(parts):
        for index, value in zip(share(count, r, world), part):
            merged[index] = value
    return merged


def gather(values: Sequence, count: int, columns: int | None = None) -> list:
    """All ranks' results for `count` items, in item order, the same list on every rank: `values` are this
    rank's, in the order of its share; with `columns`, each a row of that many numbers. float64 on the wire, so
    Python floats come back bit for bit."""
    rank, world = setup()
    if world == 1:
        return list(values)
    width = len(share(count, 0, world))  # rank 0's share is the longest
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    shape = (width,) if columns is None else (width, columns)
    local = torch.zeros(shape, dtype=torch.float64, device=device)
    if len(values):
        local[:len(values)] = torch.tensor([list(v) for v in values] if columns else list(values), dtype=torch.float64)
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local)
    return merge([part[:len(share(count, r, world))].tolist() for r, part in enumerate(parts)], count)


def map_shared(fn: Callable[[T], float], items: Sequence[T], done: Callable[[], Any] | None = None) -> list[float]:
    """[fn(item) for item in items], each rank computing its share and all ranks receiving the whole list;
    `done` is called after each item this rank computed (a progress bar)."""
    rank, world = setup()
    mine = []
    for index in share(len(items), rank, world):
        mine.append(float(fn(items[index])))
        if done is not None:
            done()
    return gather(mine, len(items))


def map_shared_rows(fn: Callable[[T], Sequence[float]], items: Sequence[T], width: int) -> list[list[float]]:
    """map_shared for an `fn` that returns `width` numbers per item (a score per sample), gathered as rows."""
    rank, world = setup()
    mine = [[float(v) for v in fn(items[index])] for index in share(len(items), rank, world)]
    if any(len(row) != width for row in mine):
        raise ValueError(f"map_shared_rows: every item must give {width} numbers")
    return [list(row) for row in gather(mine, len(items), columns=width)]


def total(value: float) -> float:
    """The sum of `value` over the ranks (the value itself alone): what a stage spent on every device."""
    rank, world = setup()
    if world == 1:
        return value
    return float(sum(gather([float(value)], world)))  # rank r's share of `world` items is item r


def barrier() -> None:
    """Every rank waits for the others here (nothing alone)."""
    if setup()[1] > 1:
        dist.barrier()


def on_rank_zero(fn: Callable[..., R], *args: Any, **kwargs: Any) -> R | None:
    """fn(*args, **kwargs) on rank 0 only (a file written once), every rank leaving once it is done."""
    rank = setup()[0]
    try:
        return fn(*args, **kwargs) if rank == 0 else None
    finally:
        barrier()

