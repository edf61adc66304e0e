"""N caching episodes in lockstep on one pipeline: the shared core of `CachingEnv` (N = 1) and
`CachingVecEnv` (N samples, one batched pipeline call per step).

An episode *is* a call of the pipeline's own `__call__`, run by the sampling driver one step at a
time: the engine inside the call hands its observation out through a `SteppedActions` policy and
takes the agent's actions back, and the latents come out through `callback_on_step_end`. Budgets
are exact (action masks, `policies.budget`); the observation includes the prior schedule's
suggestion (`policies.prior`). Reward: potential-based shaping on the relative distance of the
latents to the full-compute reference trajectory of the same seed and condition
(r_t = D_t - D_{t+1}, which telescopes to -D_T), plus a terminal -D_T, both divided by D_T of a
uniform schedule at the same budget, so that per-sample difficulty drops out of the advantage.

`use_steps` switches the step count of the next episodes: each count has its own driver and reference
store (a reference trajectory has one entry per step), all on the one hooked pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

import cachepilot
from cachepilot.conditions import condition_key
from cachepilot.driver import SamplingDriver, SteppedCall, caching
from cachepilot.envs.references import ReferenceStore, relative_distance, uniform_mask
from cachepilot.policies.baselines import Schedule
from cachepilot.policies.budget import apply_masks, budget_computes, budget_masks
from cachepilot.policies.external import SteppedActions
from cachepilot.policies.features import FeatureBuilder
from cachepilot.policies.prior import SchedulePrior
from cachepilot.core.actions import Action
from cachepilot.core.observation import Observation


class CachingEpisodes:
    def __init__(self, driver: SamplingDriver, predictor: str, references: ReferenceStore | None = None,
                 prior: SchedulePrior | None = None):
        self.driver, self.pipe, self.num_steps = driver, driver.pipe, driver.num_steps
        self.prior = prior if prior is not None else SchedulePrior()
        self.agent = SteppedActions()
        self.engine = cachepilot.enable(self.pipe, self.agent, predictor)
        self.references = references if references is not None else ReferenceStore(driver)
        self._drivers = {driver.num_steps: driver}
        self._stores = {self.references.num_steps: self.references}
        self._uniform: dict[tuple[int, int, str, int], float] = {}
        self.call: SteppedCall | None = None
        self.obs: Observation | None = None
        self.latents: torch.Tensor | None = None

    def use_steps(self, num_steps: int) -> None:
        """Episodes of `num_steps` steps from the next `start` on (aborts an episode still running)."""
        if num_steps == self.num_steps:
            return
        self.close()
        if num_steps not in self._drivers:
            base = self.driver
            self._drivers[num_steps] = SamplingDriver(self.pipe, num_steps, base.call_kwargs, base.batch_size)
        self.driver, self.num_steps = self._drivers[num_steps], num_steps
        if num_steps not in self._stores:
            self._stores[num_steps] = ReferenceStore(self.driver)
        self.references = self._stores[num_steps]

    def start(self, seeds: Sequence[int], conditions: Sequence[dict], targets: Sequence[float]) -> np.ndarray:
        self.close()
        self.seeds, self.conditions, self.targets = list(seeds), list(conditions), torch.tensor(targets)
        self.allowed = torch.tensor([budget_computes(float(t), self.num_steps) for t in targets])
        self.prior_masks = self.prior.masks(self.targets, self.num_steps)
        self.compute_last = self.prior.computes_last(self.num_steps)
        self.features = FeatureBuilder(self.targets, self.allowed, self.prior_masks)  # the episode's constants, once
        self.references.compute(self.seeds, self.conditions)
        self.reference = torch.stack([self.references.trajectory(s, c) for s, c in zip(self.seeds, self.conditions)])
        self.scale = self.uniform_errors(self.seeds, self.conditions, self.allowed.tolist())
        self.call = self.driver.stepped(self.conditions, self.seeds)
        self.obs = self.call.start()
        self.step_index = 0
        self.distance = torch.zeros(len(self.seeds))
        self.computes = torch.zeros(len(self.seeds), dtype=torch.long)
        return self.observe()

    @property
    def done(self) -> bool:
        return self.call is None or self.obs is None

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
        """Apply one action per sample; returns (chosen actions, rewards, infos at the end or [])."""
        if self.done:
            raise RuntimeError("step called before start() or after the episodes ended")
        chosen = apply_masks(actions.long().view(-1), self.masks)
        self.latents, self.obs = self.call.step(chosen)
        self.computes += (chosen == Action.COMPUTE).long()
        distance = relative_distance(self.latents, self.reference[:, self.step_index])
        self.step_index += 1
        rewards = (self.distance - distance) / self.scale
        self.distance = distance
        infos: list[dict] = []
        if self.done:
            rewards = rewards - distance / self.scale
            infos = [{"final_distance": float(distance[i]), "uniform_distance": float(self.scale[i]),
                      "compute_fraction": float(self.computes[i]) / self.num_steps,
                      "target": float(self.targets[i]), "computes_allowed": int(self.allowed[i]),
                      "num_steps": self.num_steps}
                     for i in range(len(distance))]
        return chosen, rewards, infos

    def observe(self) -> np.ndarray:
        """Observation features (N, F) of the current step; sets `masks`."""
        self.masks = budget_masks(self.obs, self.allowed.to(self.obs.computes.device), self.compute_last).cpu()
        features = self.features(self.obs)
        return features.cpu().numpy().astype(np.float32)

    def close(self) -> None:
        """Abort an episode still running (a reset before its end)."""
        if self.call is not None:
            self.call.close()
        self.call, self.obs = None, None

    @torch.no_grad()
    def uniform_errors(self, seeds: Sequence[int], conditions: Sequence[dict], computes: Sequence[int]) -> torch.Tensor:
        """Final relative distance of a uniform schedule at each sample's budget and the current step count (cached)."""
        keys = [(self.num_steps, int(s), condition_key(c), int(n)) for s, c, n in zip(seeds, conditions, computes)]
        todo = {k: c for k, c in zip(keys, conditions) if k not in self._uniform}
        items = list(todo.items())
        size = self.driver.batch_size  # the driver splits larger calls: one Schedule per call, rows in call order
        for start in range(0, len(items), size):
            chunk = items[start:start + size]
            masks = torch.tensor([uniform_mask(self.num_steps, n) for (_, _, _, n), _ in chunk])
            with caching(self.pipe, Schedule(masks)):
                final = self.driver.sample([c for _, c in chunk], [s for (_, s, _, _), _ in chunk]).latents
            references = torch.stack([self.references.trajectory(s, c)[-1] for (_, s, _, _), c in chunk])
            for (key, _), d in zip(chunk, relative_distance(final, references).tolist()):
                self._uniform[key] = max(d, 1e-4)
        return torch.tensor([self._uniform[k] for k in keys])
