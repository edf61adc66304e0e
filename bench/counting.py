"""Count real block evaluations, whatever cache is installed (ours, diffusers', cache-dit's).

A pre-hook on each block's first sub-module (its first norm in every diffusers family: DiT and
PixArt `norm1`, Flux's single blocks `norm`, ...) fires only when the block really computes (a hook
on the block itself would also fire for skipped, passed-through blocks), and counts the batch rows
it processes. compute fraction = rows x blocks evaluated / (rows x blocks at full compute).
"""

from __future__ import annotations

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
