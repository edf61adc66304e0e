"""`CachingEnv`: the caching decision as a Gymnasium environment, one sample per episode, one env
step per denoising step (see `envs.episodes` for the step, the masks and the reward)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from cachepilot.seeds import POLICY_TRAINING
from cachepilot.conditions import ConditionSet, class_conditions
from cachepilot.driver import SamplingDriver
from cachepilot.envs.episodes import CachingEpisodes
from cachepilot.envs.references import ReferenceStore
from cachepilot.errors import InvalidInputError
from cachepilot.policies.features import CLIP, NUM_FEATURES
from cachepilot.policies.prior import SchedulePrior
from cachepilot.core.actions import NUM_ACTIONS


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


def step_counts(num_steps: int | Sequence[int], name: str = "num_steps") -> tuple[int, ...]:
    """The distinct step counts episodes are drawn from, ascending: one int or several (one policy serves them
    all, its observations being normalised by the step count)."""
    values = [num_steps] if isinstance(num_steps, int) and not isinstance(num_steps, bool) else num_steps
    if (not isinstance(values, (list, tuple)) or not values
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in values)):
        raise InvalidInputError(f"{name} must be a step count >= 1 or a list of them, got {num_steps!r}")
    return tuple(sorted(set(values)))


def steps_rng(seed: int | None) -> np.random.Generator:
    """The stream step counts are drawn from: apart from the episodes' own, so an env over several counts draws
    the same (seed, condition, target) episodes as a single-count env with the same seed."""
    return np.random.default_rng(None if seed is None else [int(seed), 0x57E95])


def draw_steps(rng: np.random.Generator, counts: tuple[int, ...], options: dict | None = None) -> int:
    """The step count of a new episode (a single count draws nothing); `options["num_steps"]` may fix it."""
    if options and "num_steps" in options:
        chosen = options["num_steps"]
        if chosen not in counts:
            raise InvalidInputError(f"num_steps {chosen!r} is not one of the env's step counts {list(counts)}")
        return int(chosen)
    return counts[0] if len(counts) == 1 else int(counts[rng.integers(len(counts))])


def check_targets(targets: tuple[float, float]) -> None:
    if not 0 < targets[0] <= targets[1] <= 1:
        raise InvalidInputError(f"targets must satisfy 0 < low <= high <= 1, got {targets}")


def make_episodes(pipe, num_steps: int, predictor: str, guidance: float | None, references: ReferenceStore | None,
                  prior: SchedulePrior | None, conditions: ConditionSet | None,
                  call_kwargs: dict | None) -> tuple[CachingEpisodes, ConditionSet]:
    """The episodes of an env on `pipe` (default: `load_pipeline()`'s, the embedded digits pipeline) and the conditions they draw
    from (default for class-conditional digits: every class)."""
    if pipe is None:
        from cachepilot.loading import load_pipeline

        pipe = load_pipeline()  # the default embedded pipeline
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
    drawn from; num_steps: the step count of every episode, or several drawn per reset (seeded by `reset(seed=)`,
    `options["num_steps"]` fixes it); guidance / call_kwargs: kwargs of every pipeline call."""

    metadata = {"render_modes": []}

    def __init__(self, pipe=None, num_steps: int | Sequence[int] = 50, predictor: str = "taylor:1",
                 targets: tuple[float, float] = (0.2, 0.5), seeds: tuple[int, int] = POLICY_TRAINING,
                 guidance: float | None = None, references: ReferenceStore | None = None,
                 prior: SchedulePrior | None = None, conditions: ConditionSet | None = None,
                 call_kwargs: dict | None = None):
        super().__init__()
        check_targets(targets)
        self.step_counts = step_counts(num_steps)
        self.episodes, self.conditions = make_episodes(pipe, self.step_counts[0], predictor, guidance, references,
                                                       prior, conditions, call_kwargs)
        self.targets, self.seeds = targets, seeds
        self._steps_rng = steps_rng(None)
        self.observation_space = gym.spaces.Box(0.0, CLIP, (NUM_FEATURES,), np.float32)
        self.action_space = gym.spaces.Discrete(NUM_ACTIONS)

    @property
    def references(self) -> ReferenceStore:
        return self.episodes.references

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self._steps_rng = steps_rng(seed)
        self.episodes.use_steps(draw_steps(self._steps_rng, self.step_counts, options))
        noise_seed, index, target = draw_episode(self.np_random, self.seeds, self.targets, len(self.conditions),
                                                 options)
        obs = self.episodes.start([noise_seed], [self.conditions.conditions[index]], [target])
        return obs[0], {"noise_seed": noise_seed, "condition": index, "target": target,
                        "computes_allowed": int(self.episodes.allowed[0]), "num_steps": self.episodes.num_steps}

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
