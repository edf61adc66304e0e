"""Context parallelism: every rank of a diffusers context-parallel group takes the same cache decisions.

Under `transformer.enable_parallelism(config=ContextParallelConfig(...))` (Ulysses or ring attention) each
rank's block stack sees its own part of the sequence, so observations measured on the stack input differ per
rank; ranks deciding differently would give wrong outputs, or hang in the attention's collectives when only
some of them run the stack. The observations that depend on the sequence are per-row relative L1 changes
(mean |a - b| / mean |b|): each rank computes its per-row sums of |a - b| and |b| and its element count, one
all-reduce adds them over the group, and every rank divides the same totals — the value the unsharded model
would compute, up to float rounding. Ranks whose stack input is not sharded add W equal shares and get the
same ratio, so the reduction is right whatever the model's context-parallel plan splits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.distributed as dist
from diffusers.hooks import HookRegistry

from cachepilot.core.layout import memory_order, rows_flat

try:
    from diffusers.hooks.context_parallel import ContextParallelSplitHook
except ImportError:  # a diffusers without context parallelism
    ContextParallelSplitHook = None


def l1_sums(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(2, rows) float32: per-row sum |a - b| and sum |b| over the non-batch dims. Sums add across sequence
    shards, means do not."""
    order = memory_order(a)  # rows read in a's memory order: views, not copies, of a transposed stream
    a, b = rows_flat(a, order), rows_flat(b, order)
    return torch.stack([torch.sub(a, b).abs_().sum(1, dtype=torch.float32), b.abs().sum(1, dtype=torch.float32)])


def context_parallel_group(model: torch.nn.Module | None) -> dist.ProcessGroup | None:
    """The process group over which `model`'s sequence is sharded (diffusers' flattened ring x ulysses mesh),
    or None: no context parallelism, a group of one rank, or torch.distributed not initialised."""
    config = getattr(model, "_parallel_config", None)
    context = getattr(config, "context_parallel_config", None)
    mesh = getattr(context, "_flattened_mesh", None)  # set by `enable_parallelism` / `from_pretrained`
    if mesh is None or not dist.is_available() or not dist.is_initialized():
        return None
    group = mesh.get_group()
    return group if dist.get_world_size(group) > 1 else None


class SequenceReducer:
    """Turns this rank's per-row L1 sums into the group's relative L1 changes, with one all-reduce."""

    def __init__(self, group: dist.ProcessGroup):
        self.group = group

    @classmethod
    def for_model(cls, model: torch.nn.Module | None, current: SequenceReducer | None = None) -> SequenceReducer | None:
        """The reducer for `model`'s context-parallel group now (`current` when the group is unchanged); None
        without context parallelism, so the single-process path costs nothing."""
        group = context_parallel_group(model)
        if group is None:
            return None
        return current if current is not None and current.group is group else cls(group)

    def relative_l1(self, sums: Sequence[torch.Tensor], hidden: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """sums: (2, n) local [sum |a - b|, sum |b|] tensors whose rows hold `hidden[0].numel()` elements on
        this rank. Returns the global mean |a - b| / mean |b| of each (n,) and whether `hidden` is finite on
        every rank ((1,) long). Everything travels in one float64 tensor: one collective, no host sync."""
        nonfinite = (~torch.isfinite(hidden)).sum().double().view(1)
        elements = hidden.new_full((1,), hidden[0].numel(), dtype=torch.float64)
        packed = torch.cat([s.double().flatten() for s in sums] + [nonfinite, elements])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=self.group)
        count = packed[-1]
        out, start = [], 0
        for s in sums:
            part = packed[start:start + s.numel()].view_as(s)
            start += s.numel()
            out.append(((part[0] / count) / (part[1] / count).clamp(min=1e-8)).float())
        return out, (packed[-2] == 0).long().view(1)


@contextmanager
def outside_split_hooks(block: torch.nn.Module) -> Iterator[None]:
    """Hooks registered on `block` inside this context go under its context-parallel split hooks (Wan's plan
    shards the input of `blocks.0`, where the stack hook lives): the stack hook must see the rank's shard, as
    it does when `enable_parallelism` runs after cachepilot and its hook lands on top."""
    registry = HookRegistry.check_if_exists_or_initialize(block)
    moved = []
    while (ContextParallelSplitHook is not None and registry._hook_order
           and isinstance(registry.hooks[registry._hook_order[-1]], ContextParallelSplitHook)):
        name = registry._hook_order[-1]  # only the outermost ones: removing an inner hook rewires the wrong forward
        moved.append((name, registry.hooks[name]))
        registry.remove_hook(name, recurse=False)
    try:
        yield
    finally:
        for name, hook in reversed(moved):
            registry.register_hook(hook, name)
