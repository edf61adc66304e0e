"""N caching episodes in lockstep on one pipeline: the shared core of `CachingEnv` (N = 1) and
`CachingVecEnv` (N samples, one batched model call per step).

Each step runs through the same cache engine as inference: the actions reach it through
`ExternalActions`, and the observation is the engine's own `preview` of what its policy would see.
Budgets are exact (action masks, `policies.budget`); the observation includes the prior schedule's
suggestion (`policies.prior`). Reward: potential-based shaping on the relative
distance of the latents to the full-compute reference trajectory of the same seed and class
(r_t = D_t - D_{t+1}, which telescopes to -D_T), plus a terminal -D_T, both divided by D_T of a
uniform schedule at the same budget, so that per-sample difficulty drops out of the advantage.
"""

from __future__ import annotations


import numpy as np
import torch
from diffusers.hooks.hooks import CacheContext, _set_cache_context

import cachepilot
from cachepilot.envs.references import ReferenceStore, relative_distance, uniform_mask
from cachepilot.pipeline import DigitsDiTPipeline
from cachepilot.policies.baselines import Schedule
from cachepilot.policies.budget import apply_masks, budget_computes, budget_masks
from cachepilot.policies.external import ExternalActions
from cachepilot.policies.features import observation_features
from cachepilot.policies.prior import SchedulePrior
from cachepilot.runtime.actions import Action


class CachingEpisodes:
    def __init__(self, pipe: DigitsDiTPipeline, num_steps: int, predictor: str, guidance: float = 1.0,
                 references: ReferenceStore | None = None, prior: SchedulePrior | None = None):
        self.pipe = pipe
        self.prior = prior if prior is not None else SchedulePrior()
        self.pipe.set_progress_bar_config(disable=True)
        if references is None:
            references = ReferenceStore(pipe.unhooked_copy(), num_steps, guidance)
        self.references, self.num_steps, self.guidance = references, num_steps, guidance
        self.agent = ExternalActions()
        self.engine = cachepilot.enable(pipe, self.agent, predictor)
        self._uniform: dict[tuple[int, int, int], float] = {}
        self.run = None

    def start(self, seeds: list[int], labels: list[int], targets: list[float]) -> np.ndarray:
        self.seeds, self.labels, self.targets = list(seeds), list(labels), torch.tensor(targets)
        self.allowed = torch.tensor([budget_computes(float(t), self.num_steps) for t in targets])
        self.prior_masks = self.prior.masks(self.targets, self.num_steps)
        keys = list(zip(self.seeds, self.labels))
        self.references.compute(keys)
        self.reference = torch.stack([self.references.trajectory(s, c) for s, c in keys])  # (N, T+1, ...)
        self.scale = self.uniform_errors(keys, self.allowed.tolist())
        self.run = self.pipe.start(self.labels, self.num_steps, self.guidance,
                                   generator=[torch.Generator().manual_seed(s) for s in self.seeds])
        self.distance = torch.zeros(len(keys))
        self.computes = torch.zeros(len(keys), dtype=torch.long)
        return self.observe()

    @property
    def done(self) -> bool:
        return self.run is None or self.run.step >= self.num_steps

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
        """Apply one action per sample; returns (chosen actions, rewards, infos at the end or [])."""
        if self.done:
            raise RuntimeError("step called before start() or after the episodes ended")
        chosen = apply_masks(actions.long().view(-1), self.masks)
        self.agent.set(chosen)
        self.pipe.step(self.run)
        self.computes += (chosen == Action.COMPUTE).long()
        distance = relative_distance(self.run.latents.float().cpu(), self.reference[:, self.run.step])
        rewards = (self.distance - distance) / self.scale
        self.distance = distance
        infos: list[dict] = []
        if self.done:
            self.pipe.finish(self.run)
            rewards = rewards - distance / self.scale
            infos = [{"final_distance": float(distance[i]), "uniform_distance": float(self.scale[i]),
                      "compute_fraction": float(self.computes[i]) / self.num_steps,
                      "target": float(self.targets[i]), "computes_allowed": int(self.allowed[i])}
                     for i in range(len(distance))]
        return chosen, rewards, infos

    def observe(self) -> np.ndarray:
        """Observation features (N, F) of the current step; sets `masks`."""
        transformer = self.pipe.transformer
        _set_cache_context(transformer, CacheContext("denoise", step_index=self.run.step,
                                                      num_inference_steps=self.num_steps))
        model_input, _ = self.pipe.model_input(self.run)
        with torch.no_grad():
            hidden = transformer.pos_embed(model_input)  # the stack input (DiT), as the hook sees it
        obs = self.engine.preview(self.engine.state_manager.get_state(), hidden, self.num_steps)
        self.masks = budget_masks(obs, self.allowed)
        return observation_features(obs, self.targets, self.allowed, self.prior_masks).cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def uniform_errors(self, keys: list[tuple[int, int]], computes: list[int]) -> torch.Tensor:
        """Final relative distance of a uniform schedule at each sample's budget (cached)."""
        todo = [(s, c, n) for (s, c), n in zip(keys, computes) if (s, c, n) not in self._uniform]
        todo = list(dict.fromkeys(todo))
        if todo:
            masks = torch.tensor([uniform_mask(self.num_steps, n) for _, _, n in todo])
            self.engine.policy = Schedule(masks)
            try:
                run = self.pipe.start([c for _, c, _ in todo], self.num_steps, self.guidance,
                                      generator=[torch.Generator().manual_seed(s) for s, _, _ in todo])
                for _ in range(self.num_steps):
                    self.pipe.step(run)
                self.pipe.finish(run)
            finally:
                self.engine.policy = self.agent
            finals = torch.stack([self.references.trajectory(s, c)[-1] for s, c, _ in todo])
            for key, d in zip(todo, relative_distance(run.latents.float().cpu(), finals).tolist()):
                self._uniform[key] = max(d, 1e-4)
        return torch.tensor([self._uniform[(s, c, n)] for (s, c), n in zip(keys, computes)])
