"""`CachingVecEnv`: N samples in lockstep through one batched pipeline call per step (an SB3 `VecEnv`).

SB3's DummyVecEnv would call the model once per sample and SubprocVecEnv would load a model copy per
process; here all samples share one pipeline call. Episodes have the same length, so they all end and
reset together. Env i draws its episodes from the same RNG stream as a `CachingEnv` seeded with
seed + i, so both give the same transitions (up to batched-vs-single float rounding).

Given several step counts, each reset draws one for the whole batch (the envs run in lockstep) from a
stream of its own, so the k-th episodes are those of a single-count env with the same seed at the
drawn count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import seeding
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from cachepilot.seeds import POLICY_TRAINING
from cachepilot.conditions import ConditionSet
from cachepilot.envs.caching_env import (check_targets, draw_episode, draw_steps, make_episodes, step_counts,
                                         steps_rng)
from cachepilot.envs.references import ReferenceStore
from cachepilot.policies.features import CLIP, NUM_FEATURES
from cachepilot.policies.prior import SchedulePrior
from cachepilot.core.actions import NUM_ACTIONS


class CachingVecEnv(VecEnv):
    def __init__(self, num_envs: int, pipe=None, num_steps: int | Sequence[int] = 50,
                 predictor: str = "taylor:1", targets: tuple[float, float] = (0.2, 0.5),
                 seeds: tuple[int, int] = POLICY_TRAINING, guidance: float | None = None,
                 references: ReferenceStore | None = None,
                 prior: SchedulePrior | None = None, seed: int | None = None,
                 conditions: ConditionSet | None = None, call_kwargs: dict | None = None):
        check_targets(targets)
        super().__init__(num_envs, gym.spaces.Box(0.0, CLIP, (NUM_FEATURES,), np.float32),
                         gym.spaces.Discrete(NUM_ACTIONS))
        self.step_counts = step_counts(num_steps)
        self.episodes, self.conditions = make_episodes(pipe, self.step_counts[0], predictor, guidance, references,
                                                       prior, conditions, call_kwargs)
        self.targets, self.seeds = targets, seeds
        self._rngs = [seeding.np_random(None if seed is None else seed + i)[0] for i in range(num_envs)]
        self._steps_rng = steps_rng(seed)
        self._actions: np.ndarray | None = None
        self._episode_returns = np.zeros(num_envs)

    def seed(self, seed: int | None = None) -> list[int | None]:
        self._rngs = [seeding.np_random(None if seed is None else seed + i)[0] for i in range(self.num_envs)]
        self._steps_rng = steps_rng(seed)
        return [None if seed is None else seed + i for i in range(self.num_envs)]

    def reset(self) -> np.ndarray:
        self.episodes.use_steps(draw_steps(self._steps_rng, self.step_counts))
        draws = [draw_episode(rng, self.seeds, self.targets, len(self.conditions)) for rng in self._rngs]
        self.reset_infos = [{"noise_seed": s, "condition": c, "target": t, "num_steps": self.episodes.num_steps}
                            for s, c, t in draws]
        self._episode_returns[:] = 0
        return self.episodes.start([s for s, _, _ in draws], [self.conditions.conditions[c] for _, c, _ in draws],
                                   [t for _, _, t in draws])

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs)

    def step_wait(self):
        chosen, rewards, end_infos = self.episodes.step(torch.as_tensor(self._actions))
        rewards = rewards.numpy().astype(np.float32)
        self._episode_returns += rewards
        done = self.episodes.done
        infos: list[dict[str, Any]] = [{"action": int(a)} for a in chosen]
        if done:
            terminal = np.zeros((self.num_envs, NUM_FEATURES), dtype=np.float32)
            for i, info in enumerate(infos):
                info.update(end_infos[i], terminal_observation=terminal[i], TimeLimit_truncated=False,
                            episode={"r": float(self._episode_returns[i]), "l": self.episodes.num_steps})
            obs = self.reset()
        else:
            obs = self.episodes.observe()
        return obs, rewards, np.full(self.num_envs, done), infos

    def action_masks(self) -> np.ndarray:
        return self.episodes.masks.cpu().numpy()

    def close(self) -> None:
        self.episodes.close()

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *args, indices=None, **kwargs) -> list[Any]:
        if method_name == "action_masks":  # sb3-contrib asks each sub-env for its mask
            masks = self.action_masks()
            return [masks[i] for i in self._indices(indices)]
        return [getattr(self, method_name)(*args, **kwargs) for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False for _ in self._indices(indices)]

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)
