"""Count real block evaluations, whatever cache is installed (ours, diffusers', cache-dit's).

A pre-hook on each block's first sub-module (its first norm in every diffusers family: DiT and
PixArt `norm1`, Flux's single blocks `norm`, ...) fires only when the block really computes (a hook
on the block itself would also fire for skipped, passed-through blocks), and counts the batch rows
it processes. compute fraction = rows x blocks evaluated / (rows x blocks at full compute).
"""

from __future__ import annotations

import weakref

import torch


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
    return None


class BlockCounter:
    def __init__(self, blocks: list[torch.nn.Module]):
        self.blocks = blocks
        self.rows = 0
        self._handles: list = []

    def __enter__(self) -> "BlockCounter":
        def count(module, args, kwargs):
            first = _first_tensor(args, kwargs)
            self.rows += int(first.shape[0]) if first is not None and first.ndim else 0

        self._handles = [next(block.children()).register_forward_pre_hook(count, with_kwargs=True)
                         for block in self.blocks]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class StackCounter:
    """Block-stack evaluations of one sample (CFG copies count as samples) by every transformer of a class, the
    twins built while counting included (`unhooked_twin` references, held-out evaluations): a global forward
    pre-hook on modules hooks each such transformer's blocks at its first call. A partial stack counts by its
    blocks: evaluations = block rows / blocks."""

    def __init__(self, transformer: torch.nn.Module):
        from cachepilot.runtime.adapters import get_adapter

        self.kind = type(transformer)
        self.adapter = get_adapter(transformer)
        self.num_blocks = len(self.adapter.blocks(transformer))
        self._closed_rows = 0
        self._hooked: weakref.WeakSet = weakref.WeakSet()
        self._counters: list[BlockCounter] = []
        self._global = None

    @property
    def rows(self) -> int:
        """Block rows so far (live inside the context)."""
        return self._closed_rows + sum(counter.rows for counter in self._counters)

    @property
    def evaluations(self) -> float:
        return self.rows / self.num_blocks

    def __enter__(self) -> "StackCounter":
        def attach(module, args):
            if type(module) is self.kind and module not in self._hooked:
                self._hooked.add(module)
                self._counters.append(BlockCounter(self.adapter.blocks(module)).__enter__())

        self._closed_rows = 0
        self._global = torch.nn.modules.module.register_module_forward_pre_hook(attach)
        return self

    def __exit__(self, *exc) -> None:
        self._global.remove()
        self._closed_rows = self.rows
        for counter in self._counters:
            counter.__exit__()
        self._counters, self._hooked = [], weakref.WeakSet()
