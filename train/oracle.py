"""Per-sample oracle schedules: the teacher a learned policy imitates before PPO.

The oracle knows each training sample's full-compute reference, so it is not a policy: starting from
the prior schedule, it moves single computes of *each sample's own* mask by a few steps and keeps a
move when that sample's final distance to its reference falls (greedy, one move per sample per
sweep, all samples and candidate moves evaluated in batched episodes). On the digits model this
gains several dB in-sample over the best common mask: the headroom per-sample decisions have. The
policy imitates what of it can be predicted from its observations (`warm_start`), then PPO tunes it.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from cachepilot.envs.episodes import CachingEpisodes
from cachepilot.core.actions import Action


def follow_masks(episodes: CachingEpisodes, seeds: list[int], conditions: list[dict], targets: list[float],
                 masks: torch.Tensor, record: bool = False):
    """Run one batched episode that computes where `masks` (N, T) say and forecasts elsewhere.
    Returns the final relative distances (N,), and with record=True also the per-step
    observations (T, N, F), actions (T, N) and rewards (T, N)."""
    obs = episodes.start(seeds, conditions, targets)
    observations, actions, rewards = [], [], []
    final = None
    while not episodes.done:
        act = torch.where(masks[:, episodes.step_index], int(Action.COMPUTE), int(Action.FORECAST))
        if record:
            observations.append(torch.from_numpy(obs))
        chosen, reward, infos = episodes.step(act)
        if record:
            actions.append(chosen)
            rewards.append(reward)
        if episodes.done:
            final = torch.tensor([info["final_distance"] for info in infos])
        else:
            obs = episodes.observe()
    if record:
        return final, torch.stack(observations), torch.stack(actions), torch.stack(rewards)
    return final


def move_compute(masks: torch.Tensor, k: int, shift: int, compute_last: bool = True) -> torch.Tensor:
    """Each row's k-th compute (the first excluded, and the last step's unless compute_last is False) moved by
    `shift` steps where that lands on a free step after the first (before the last with compute_last); other rows
    unchanged."""
    moved = masks.clone()
    steps = masks.shape[1]
    end = steps - 1 if compute_last else steps
    for row, mask in enumerate(masks):
        computes = mask.nonzero().flatten()
        if not 1 <= k < len(computes) - int(compute_last):
            continue
        old, new = int(computes[k]), int(computes[k]) + shift
        if 0 < new < end and not mask[new]:
            moved[row, old], moved[row, new] = False, True
    return moved


def oracle_masks(episodes: CachingEpisodes, seeds: list[int], conditions: list[dict], targets: list[float],
                 sweeps: int = 2, shifts: tuple[int, ...] = (-2, -1, 1, 2), progress: bool = True,
                 groups: torch.Tensor | None = None) -> torch.Tensor:
    """(N, T) bool: each sample's greedily improved mask, starting from the episodes' prior.

    groups: (N,) ids; rows of one group (same target) share one mask, and a move is kept where it lowers the
    group's mean log distance: e.g. one mask per prompt fitted on several seeds, to ask how much of the per-sample
    headroom the condition alone carries."""
    masks = episodes.prior.masks(targets, episodes.num_steps)
    compute_last = episodes.prior.computes_last(episodes.num_steps)  # the budget rules the policy trains under
    if groups is None:
        groups = torch.arange(len(seeds))
    groups = torch.as_tensor(groups).long()
    if len(groups) != len(seeds) or any((masks[groups == g] != masks[groups == g][0]).any() for g in groups.unique()):
        raise ValueError("groups must give one id per sample, and the samples of a group one target")
    _, groups = groups.unique(return_inverse=True)

    def group_score(distance: torch.Tensor) -> torch.Tensor:  # per row: its group's mean log distance
        total = torch.zeros(int(groups.max()) + 1).index_add_(0, groups, distance.log())
        return (total / torch.bincount(groups).float())[groups]

    best = group_score(follow_masks(episodes, seeds, conditions, targets, masks))
    movable = int(masks.sum(1).max()) - int(compute_last)
    moves = [(k, s) for k in range(1, movable) for s in shifts]
    for _ in tqdm(range(sweeps), desc="oracle sweeps", disable=not progress):
        chosen, chosen_score = masks.clone(), best.clone()
        for k, shift in tqdm(moves, desc="moves", leave=False, disable=not progress):
            candidate = move_compute(masks, k, shift, compute_last)
            score = group_score(follow_masks(episodes, seeds, conditions, targets, candidate))
            better = score < chosen_score
            chosen[better], chosen_score[better] = candidate[better], score[better]
        masks, best = chosen, chosen_score
    return masks
