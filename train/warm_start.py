"""Behaviour-cloning warm start: teach the PPO actor the searched fixed schedules before RL.

The offline-searched schedule is the baseline a per-sample policy must beat; starting PPO from it
means RL only has to find where per-sample deviations pay, instead of rediscovering the schedule.
Rollouts follow each searched schedule in the env (its exact budget), and the actor is fitted by
cross-entropy to the schedule's action at every step.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from cachepilot.envs.vec_env import CachingVecEnv
from cachepilot.runtime.actions import Action


def schedule_rollouts(env: CachingVecEnv, schedules: dict[float, str], episodes: int, seed: int = 0):
    """(observations, actions) of `episodes` batched episodes following the schedules, targets cycling."""
    rng = np.random.default_rng(seed)
    targets = sorted(schedules)
    observations, actions = [], []
    for episode in range(episodes):
        chosen = [targets[(episode * env.num_envs + i) % len(targets)] for i in range(env.num_envs)]
        seeds = rng.integers(*env.seeds, size=env.num_envs).tolist()
        labels = rng.integers(0, 10, size=env.num_envs).tolist()
        obs = env.episodes.start(seeds, labels, chosen)
        masks = torch.tensor([[c == "1" for c in schedules[t]] for t in chosen])
        while not env.episodes.done:
            step = env.episodes.run.step
            act = torch.where(masks[:, step], int(Action.COMPUTE), int(Action.FORECAST))
            observations.append(obs)
            actions.append(act.numpy())
            env.episodes.step(act)
            if not env.episodes.done:
                obs = env.episodes.observe()
    return np.concatenate(observations), np.concatenate(actions)


def behaviour_clone(model, observations: np.ndarray, actions: np.ndarray, epochs: int = 30, lr: float = 3e-3,
                    batch_size: int = 512, progress: bool = True) -> float:
    """Fit the actor by cross-entropy; returns the final accuracy on the rollouts."""
    policy = model.policy
    obs = torch.as_tensor(observations, dtype=torch.float32)
    act = torch.as_tensor(actions, dtype=torch.long)
    params = list(policy.mlp_extractor.policy_net.parameters()) + list(policy.action_net.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    for _ in tqdm(range(epochs), desc="behaviour cloning", disable=not progress):
        for idx in torch.randperm(len(obs)).split(batch_size):
            logits = policy.action_net(policy.mlp_extractor.forward_actor(policy.extract_features(obs[idx])))
            loss = torch.nn.functional.cross_entropy(logits, act[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        logits = policy.action_net(policy.mlp_extractor.forward_actor(policy.extract_features(obs)))
        return (logits.argmax(1) == act).float().mean().item()
