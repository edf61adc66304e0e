"""Full-compute reference trajectories, computed once and stored (HF datasets), never per episode.

For a (noise seed, class) pair: the latents after every denoising step of the uncached pipeline.
The env's reward measures the cached trajectory against it; the error of a uniform schedule at the
same budget (also cached here) normalises the reward so sample difficulty drops out of the advantage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from datasets import Array2D, Dataset, Features, Value, load_from_disk

from cachepilot.pipeline import DigitsDiTPipeline


def relative_distance(latents: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-sample |x - x_ref| / |x_ref| (L2 over all but the batch dimension)."""
    dims = tuple(range(1, latents.ndim))
    return (latents - reference).pow(2).sum(dims).sqrt() / reference.pow(2).sum(dims).sqrt().clamp(min=1e-8)


def uniform_mask(num_steps: int, computes: int) -> list[bool]:
    """`computes` evenly spaced computes, first and last step included."""
    chosen = set(np.linspace(0, num_steps - 1, computes).round().astype(int).tolist())
    return [s in chosen for s in range(num_steps)]


class ReferenceStore:
    """Reference latents per (seed, label); `save`/`load` persist them as an HF dataset.

    `pipe` must be unhooked (full compute): the env keeps a twin of its pipeline for this.
    """

    def __init__(self, pipe: DigitsDiTPipeline, num_steps: int, guidance: float = 1.0):
        self.pipe, self.num_steps, self.guidance = pipe, num_steps, guidance
        self.trajectories: dict[tuple[int, int], torch.Tensor] = {}

    @torch.no_grad()
    def trajectory(self, seed: int, label: int) -> torch.Tensor:
        """(num_steps + 1, C, H, W): the initial noise, then the latents after each step."""
        key = (int(seed), int(label))
        if key not in self.trajectories:
            self.compute([key])
        return self.trajectories[key]

    @torch.no_grad()
    def compute(self, keys: list[tuple[int, int]]) -> None:
        """Batch-compute the missing references (one pipeline run for all of them)."""
        keys = [k for k in dict.fromkeys(keys) if k not in self.trajectories]
        if not keys:
            return
        run = self.pipe.start([label for _, label in keys], self.num_steps, self.guidance,
                              generator=[torch.Generator().manual_seed(seed) for seed, _ in keys])
        states = [run.latents.clone()]
        for _ in range(self.num_steps):
            self.pipe.step(run)
            states.append(run.latents.clone())
        self.pipe.finish(run)
        stacked = torch.stack(states, 1).cpu()
        for i, key in enumerate(keys):
            self.trajectories[key] = stacked[i]

    def save(self, path: str | Path) -> None:
        keys = sorted(self.trajectories)
        flat = [self.trajectories[k].flatten(1).numpy() for k in keys]
        shape = flat[0].shape if flat else (self.num_steps + 1, 1)
        Dataset.from_dict(
            {"seed": [k[0] for k in keys], "label": [k[1] for k in keys], "latents": flat},
            features=Features({"seed": Value("int64"), "label": Value("int64"),
                               "latents": Array2D(shape, "float32")}),
        ).save_to_disk(str(path))

    def load(self, path: str | Path, sample_shape: tuple[int, ...]) -> None:
        data = load_from_disk(str(path)).with_format("numpy")
        for seed, label, latents in zip(data["seed"], data["label"], data["latents"]):
            self.trajectories[(int(seed), int(label))] = torch.from_numpy(np.asarray(latents)).view(
                self.num_steps + 1, *sample_shape)
