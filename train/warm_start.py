"""Behaviour-cloning warm start: teach the PPO actor to follow its prior schedule before RL.

The prior (`policies.prior`, the offline-searched fixed schedules) is the baseline a per-sample policy
must beat; the actor observes the prior's suggestion, and starting PPO from "follow it" means RL only
has to find where per-sample deviations pay, instead of rediscovering the schedule. Rollouts follow
the prior in the env (targets drawn from the training range, exact budgets, the env's step counts in
turn), and the actor is fitted by cross-entropy to the prior's action at every step.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from cachepilot.envs.vec_env import CachingVecEnv
from cachepilot.train.oracle import follow_masks


def prior_rollouts(env: CachingVecEnv, episodes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(observations, actions, returns to go) of `episodes` batched episodes that follow the env's prior; episode
    k runs at the env's k-th step count (cyclically), so every count is cloned."""
    rng = np.random.default_rng(seed)
    observations, actions, returns = [], [], []
    for k in range(episodes):
        env.episodes.use_steps(env.step_counts[k % len(env.step_counts)])
        seeds = rng.integers(*env.seeds, size=env.num_envs).tolist()
        conditions = [env.conditions.conditions[i] for i in rng.integers(0, len(env.conditions), size=env.num_envs)]
        targets = rng.uniform(*env.targets, size=env.num_envs).tolist()
        masks = env.episodes.prior.masks(targets, env.episodes.num_steps)
        _, obs, act, rewards = follow_masks(env.episodes, seeds, conditions, targets, masks, record=True)
        observations.append(obs.flatten(0, 1))
        actions.append(act.flatten())
        returns.append(rewards.flip(0).cumsum(0).flip(0).flatten())  # gamma = 1, as PPO is configured
    return torch.cat(observations).numpy(), torch.cat(actions).numpy(), torch.cat(returns).numpy()


def behaviour_clone(model, observations: np.ndarray, actions: np.ndarray, returns: np.ndarray | None = None,
                    epochs: int = 30, lr: float = 3e-3, batch_size: int = 512, label_smoothing: float = 0.05,
                    progress: bool = True) -> float:
    """Fit the actor by cross-entropy (label smoothing leaves PPO some exploration) and, given the
    returns to go, the critic by regression (so PPO's first advantages are not noise that undoes the
    clone). Returns the actor's final accuracy on the rollouts."""
    policy = model.policy
    device = policy.device  # SB3 puts the policy on CUDA where there is one: the rollouts go there too
    obs = torch.as_tensor(observations, dtype=torch.float32, device=device)
    act = torch.as_tensor(actions, dtype=torch.long, device=device)
    ret = None if returns is None else torch.as_tensor(returns, dtype=torch.float32, device=device)
    params = list(policy.mlp_extractor.policy_net.parameters()) + list(policy.action_net.parameters())
    if ret is not None:
        params += list(policy.mlp_extractor.value_net.parameters()) + list(policy.value_net.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    for _ in tqdm(range(epochs), desc="behaviour cloning", disable=not progress):
        for idx in torch.randperm(len(obs), device=device).split(batch_size):
            features = policy.extract_features(obs[idx])
            logits = policy.action_net(policy.mlp_extractor.forward_actor(features))
            loss = torch.nn.functional.cross_entropy(logits, act[idx], label_smoothing=label_smoothing)
            if ret is not None:
                values = policy.value_net(policy.mlp_extractor.forward_critic(features)).squeeze(1)
                loss = loss + torch.nn.functional.mse_loss(values, ret[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        logits = policy.action_net(policy.mlp_extractor.forward_actor(policy.extract_features(obs)))
        return (logits.argmax(1) == act).float().mean().item()
