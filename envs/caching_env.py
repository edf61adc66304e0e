"""`CachingEnv`: the caching decision as a Gymnasium environment, one sample per episode, one env
step per denoising step (see `envs.episodes` for the step, the masks and the reward)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from cachepilot.envs.episodes import CachingEpisodes
from cachepilot.envs.references import ReferenceStore
from cachepilot.errors import InvalidInputError
from cachepilot.loading import load_pipeline
from cachepilot.pipeline import DigitsDiTPipeline
from cachepilot.policies.features import CLIP, NUM_FEATURES
from cachepilot.policies.prior import SchedulePrior
from cachepilot.runtime.actions import NUM_ACTIONS


def draw_episode(rng: np.random.Generator, seeds: tuple[int, int], targets: tuple[float, float],
                 options: dict | None = None) -> tuple[int, int, float]:
    """(noise seed, class, target compute fraction) of a new episode; `options` may fix any of them."""
    options = options or {}
    seed = int(options.get("noise_seed", rng.integers(*seeds)))
    label = int(options.get("label", rng.integers(0, 10)))
    target = float(options.get("target", rng.uniform(*targets)))
    return seed, label, target


def check_targets(targets: tuple[float, float]) -> None:
    if not 0 < targets[0] <= targets[1] <= 1:
        raise InvalidInputError(f"targets must satisfy 0 < low <= high <= 1, got {targets}")


class CachingEnv(gym.Env):
    """seeds: the range noise seeds are drawn from (keep training and evaluation seeds apart);
    targets: the range the per-episode target compute fraction is drawn from."""

    metadata = {"render_modes": []}

    def __init__(self, pipe: DigitsDiTPipeline | None = None, num_steps: int = 50, predictor: str = "taylor:1",
                 targets: tuple[float, float] = (0.2, 0.5), seeds: tuple[int, int] = (200_000, 300_000),
                 guidance: float = 1.0, references: ReferenceStore | None = None,
                 prior: SchedulePrior | None = None):
        super().__init__()
        check_targets(targets)
        self.episodes = CachingEpisodes(pipe if pipe is not None else load_pipeline(), num_steps, predictor,
                                        guidance, references, prior)
        self.targets, self.seeds = targets, seeds
        self.observation_space = gym.spaces.Box(0.0, CLIP, (NUM_FEATURES,), np.float32)
        self.action_space = gym.spaces.Discrete(NUM_ACTIONS)

    @property
    def references(self) -> ReferenceStore:
        return self.episodes.references

    @property
    def run(self):
        return self.episodes.run

    @run.setter
    def run(self, value) -> None:
        self.episodes.run = value

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        noise_seed, label, target = draw_episode(self.np_random, self.seeds, self.targets, options)
        obs = self.episodes.start([noise_seed], [label], [target])
        return obs[0], {"noise_seed": noise_seed, "label": label, "target": target,
                        "computes_allowed": int(self.episodes.allowed[0])}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        chosen, rewards, infos = self.episodes.step(torch.tensor([int(action)]))
        info: dict[str, Any] = {"action": int(chosen[0]), "action_replaced": int(chosen[0]) != int(action)}
        terminated = self.episodes.done
        if terminated:
            info.update(infos[0])
            obs = np.zeros(NUM_FEATURES, dtype=np.float32)
        else:
            obs = self.episodes.observe()[0]
        return obs, float(rewards[0]), terminated, False, info

    def action_masks(self) -> np.ndarray:
        """Valid actions now (sb3-contrib MaskablePPO reads this)."""
        return self.episodes.masks[0].cpu().numpy()
