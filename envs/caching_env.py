"""`CachingEnv`: the caching decision as a Gymnasium environment, one sample per episode, one env
step per denoising step (see `envs.episodes` for the step, the masks and the reward)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from cachepilot.conditions import ConditionSet, class_conditions
from cachepilot.driver import SamplingDriver
from cachepilot.envs.episodes import CachingEpisodes
from cachepilot.envs.references import ReferenceStore
from cachepilot.errors import InvalidInputError
from cachepilot.policies.features import CLIP, NUM_FEATURES
from cachepilot.policies.prior import SchedulePrior
from cachepilot.runtime.actions import NUM_ACTIONS


def draw_episode(rng: np.random.Generator, seeds: tuple[int, int], targets: tuple[float, float],
                 num_conditions: int, options: dict | None = None) -> tuple[int, int, float]:
    """(noise seed, condition index, target compute fraction) of a new episode; `options` may fix any of them."""
    options = options or {}
    seed = int(options.get("noise_seed", rng.integers(*seeds)))
    condition = int(options.get("condition", rng.integers(0, num_conditions)))
    if not 0 <= condition < num_conditions:
        raise InvalidInputError(f"condition index {condition} is outside 0..{num_conditions - 1}")
    target = float(options.get("target", rng.uniform(*targets)))
    return seed, condition, target


def check_targets(targets: tuple[float, float]) -> None:
    if not 0 < targets[0] <= targets[1] <= 1:
        raise InvalidInputError(f"targets must satisfy 0 < low <= high <= 1, got {targets}")


def make_episodes(pipe, num_steps: int, predictor: str, guidance: float | None, references: ReferenceStore | None,
                  prior: SchedulePrior | None, conditions: ConditionSet | None,
                  call_kwargs: dict | None) -> tuple[CachingEpisodes, ConditionSet]:
    """The episodes of an env on `pipe` (default: the embedded digits pipeline) and the conditions they draw
    from (default for class-conditional digits: every class)."""
    if pipe is None:
        from cachepilot.embedded.digits.loading import load_pipeline

        pipe = load_pipeline()
    if conditions is None:
        num_classes = getattr(pipe, "num_classes", None)
        if num_classes is None:
            raise InvalidInputError(f"{type(pipe).__name__}: pass the conditions (prompts, class ids) episodes draw from")
        conditions = class_conditions(int(num_classes))
    kwargs = dict(call_kwargs or {})
    if guidance is not None:
        kwargs["guidance_scale"] = guidance
    driver = SamplingDriver(pipe, num_steps, kwargs)
    return CachingEpisodes(driver, predictor, references, prior), conditions


class CachingEnv(gym.Env):
    """pipe: any supported diffusers pipeline (default: the embedded digits one); conditions: the per-sample
    call kwargs episodes draw from (prompts, class ids); seeds: the range noise seeds are drawn from (keep
    training and evaluation seeds apart); targets: the range the per-episode target compute fraction is
    drawn from; guidance / call_kwargs: kwargs of every pipeline call."""

    metadata = {"render_modes": []}

    def __init__(self, pipe=None, num_steps: int = 50, predictor: str = "taylor:1",
                 targets: tuple[float, float] = (0.2, 0.5), seeds: tuple[int, int] = (200_000, 300_000),
                 guidance: float | None = None, references: ReferenceStore | None = None,
                 prior: SchedulePrior | None = None, conditions: ConditionSet | None = None,
                 call_kwargs: dict | None = None):
        super().__init__()
        check_targets(targets)
        self.episodes, self.conditions = make_episodes(pipe, num_steps, predictor, guidance, references, prior,
                                                       conditions, call_kwargs)
        self.targets, self.seeds = targets, seeds
        self.observation_space = gym.spaces.Box(0.0, CLIP, (NUM_FEATURES,), np.float32)
        self.action_space = gym.spaces.Discrete(NUM_ACTIONS)

    @property
    def references(self) -> ReferenceStore:
        return self.episodes.references

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        noise_seed, index, target = draw_episode(self.np_random, self.seeds, self.targets, len(self.conditions),
                                                 options)
        obs = self.episodes.start([noise_seed], [self.conditions.conditions[index]], [target])
        return obs[0], {"noise_seed": noise_seed, "condition": index, "target": target,
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

    def close(self) -> None:
        self.episodes.close()

    def action_masks(self) -> np.ndarray:
        """Valid actions now (sb3-contrib MaskablePPO reads this)."""
        return self.episodes.masks[0].cpu().numpy()
