"""Count real block evaluations, whatever cache is installed (ours, diffusers', cache-dit's).

A pre-hook on each block's feed-forward sub-module fires only when the block really computes
(a hook on the block itself would also fire for skipped, passed-through blocks), and counts the
batch rows it processes. compute fraction = rows x blocks evaluated / (rows x blocks at full compute).
"""

from __future__ import annotations

import torch


class BlockCounter:
    def __init__(self, blocks: list[torch.nn.Module]):
        self.blocks = blocks
        self.rows = 0
        self._handles: list = []

    def __enter__(self) -> "BlockCounter":
        def count(module, args, kwargs=None):
            self.rows += int(args[0].shape[0]) if args else 0

        self._handles = [block.ff.register_forward_pre_hook(count) for block in self.blocks]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
