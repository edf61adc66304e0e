"""Full-compute reference trajectories, computed once and stored (HF datasets), never per episode.

For a (noise seed, condition) pair: the latents after every denoising step of the pipeline at full
compute, sampled through the same driver as the episodes. The env's reward measures the cached
trajectory against it; the error of a uniform schedule at the same budget normalises the reward so
sample difficulty drops out of the advantage.

The store holds at most `max_bytes` of trajectories (least recently used go first): PPO with fresh noise
seeds never meets a pair twice, and an unbounded store grew by one trajectory per sample (50 MB each on a
1024 px FLUX at 50 steps). With a pool of training seeds (`PolicyConfig.seed_pool`) that fits the budget,
every pair's reference is computed once and the episodes after the pool's first visit cost no reference run.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from datasets import Array2D, Dataset, Features, Sequence as ListFeature, Value, load_from_disk

from cachepilot.conditions import condition_key
from cachepilot.driver import SamplingDriver, caching


def relative_distance(latents: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-sample |x - x_ref| / |x_ref| (L2 over all but the batch dimension)."""
    dims = tuple(range(1, latents.ndim))
    return (latents - reference).pow(2).sum(dims).sqrt() / reference.pow(2).sum(dims).sqrt().clamp(min=1e-8)


def uniform_mask(num_steps: int, computes: int) -> list[bool]:
    """`computes` evenly spaced computes, first and last step included."""
    chosen = set(np.linspace(0, num_steps - 1, computes).round().astype(int).tolist())
    return [s in chosen for s in range(num_steps)]


DEFAULT_MAX_BYTES = 2 * 1024**3


class ReferenceStore:
    """Reference latent trajectories per (seed, condition key); `save`/`load` persist them as an HF dataset.

    The driver's pipeline may be hooked by cachepilot (the env's is): references run with full
    compute through the engine's always path, which is bit-exact to the unhooked model.
    max_bytes: the most trajectory memory kept (least recently used evicted; None: no bound)."""

    def __init__(self, driver: SamplingDriver, max_bytes: int | None = DEFAULT_MAX_BYTES):
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0 or None, got {max_bytes}")
        self.driver, self.max_bytes = driver, max_bytes
        self.trajectories: OrderedDict[tuple[int, str], torch.Tensor] = OrderedDict()
        self.bytes = 0
        self.computed = 0  # trajectories sampled so far (a pooled env stops adding to it)
        self._last: dict[tuple[int, str], torch.Tensor] = {}

    @property
    def num_steps(self) -> int:
        return self.driver.num_steps

    def trajectory(self, seed: int, condition: dict) -> torch.Tensor:
        """(num_steps, *latent shape): the latents after each step."""
        key = (int(seed), condition_key(condition))
        if key in self.trajectories:
            self.trajectories.move_to_end(key)
            return self.trajectories[key]
        if key not in self._last:
            self.compute([seed], [condition])
        return self._last[key]  # the last computed batch: handed out even where the budget could not keep it

    @torch.no_grad()
    def compute(self, seeds: Sequence[int], conditions: Sequence[dict]) -> None:
        """Batch-compute the missing references (one driver call for all of them)."""
        todo = {}
        for seed, condition in zip(seeds, conditions):
            key = (int(seed), condition_key(condition))
            if key in self.trajectories:
                self.trajectories.move_to_end(key)  # asked for now: the new ones evict older pairs first
            else:
                todo[key] = condition
        if not todo:
            return
        with caching(self.driver.pipe, None):
            result = self.driver.sample(list(todo.values()), [seed for seed, _ in todo], trajectory=True)
        self._last = {}
        for i, key in enumerate(todo):
            self._add(key, result.trajectory[i].clone())  # a view would keep the whole batch alive
        self.computed += len(todo)

    def _add(self, key: tuple[int, str], trajectory: torch.Tensor) -> None:
        self._last[key] = trajectory
        if self.max_bytes is not None and trajectory.nbytes > self.max_bytes:
            return
        self.trajectories[key] = trajectory
        self.bytes += trajectory.nbytes
        while self.max_bytes is not None and self.bytes > self.max_bytes:
            self.bytes -= self.trajectories.popitem(last=False)[1].nbytes

    def save(self, path: str | Path) -> None:
        keys = sorted(self.trajectories)
        flat = [self.trajectories[k].flatten(1).numpy() for k in keys]
        width = flat[0].shape[1] if flat else 1
        shape = list(self.trajectories[keys[0]].shape[1:]) if keys else []
        Dataset.from_dict(
            {"seed": [k[0] for k in keys], "condition": [k[1] for k in keys], "latents": flat,
             "shape": [shape] * len(keys)},
            features=Features({"seed": Value("int64"), "condition": Value("string"),
                               "latents": Array2D((self.num_steps, width), "float32"),
                               "shape": ListFeature(Value("int64"))}),
        ).save_to_disk(str(path))

    def load(self, path: str | Path) -> None:
        data = load_from_disk(str(path)).with_format("numpy")
        self._last = {}
        for seed, condition, latents, shape in zip(data["seed"], data["condition"], data["latents"], data["shape"]):
            self._add((int(seed), str(condition)), torch.from_numpy(np.asarray(latents)).view(
                self.num_steps, *[int(d) for d in shape]))
        self._last = {}
