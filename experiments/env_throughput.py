"""Env-steps/s of the caching env.

Default: CachingVecEnv(N) vs N CachingEnvs in SB3's DummyVecEnv (same seeds, same actions) on the embedded
digits model. `--seed-pool K`: one CachingVecEnv on any pipeline, its episodes drawing fresh noise seeds
(a full-compute reference and a uniform-schedule run per sample and episode) or seeds from a pool of K (each
pair's reference and uniform errors kept after its first episode), in alternating phases on the one env.

    python -m experiments.env_throughput --envs 16 --steps 50 --episodes 2
    python -m experiments.env_throughput --pipeline checkpoints/scenes-flux --prompts P.jsonl \\
        --call-kwargs '{"height": 32, "width": 32}' --envs 16 --steps 50 --episodes 3 --seed-pool 1 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

from cachepilot.driver import unhooked_twin
from cachepilot.envs.caching_env import CachingEnv
from cachepilot.envs.vec_env import CachingVecEnv
from cachepilot.seeds import POLICY_TRAINING

FRESH_SEEDS = POLICY_TRAINING  # the training range PPO draws from


def measure(env, masks_of, num_envs: int, steps: int, episodes: int, seed: int = 0, reset: bool = True) -> float:
    """Env-steps per second over `episodes` full episodes (after a first reset, references warm, unless
    `reset=False`: the env goes on from where it is, its next reset counted)."""
    rng = np.random.default_rng(seed)
    if reset:
        env.reset()
    tic = time.perf_counter()
    for _ in range(episodes * steps):
        masks = masks_of(env)
        env.step(np.array([rng.choice(np.flatnonzero(m)) for m in masks]))
    return episodes * steps * num_envs / (time.perf_counter() - tic)


def pooled_vs_fresh(env: CachingVecEnv, pool: int, steps: int, episodes: int, rounds: int) -> dict[str, list[float]]:
    """Env-steps/s of `rounds` alternating phases of `episodes` episodes: fresh seeds, then the pool of `pool`
    seeds. A phase's first reset (drawn from the previous phase's seeds) is the last step of the phase before."""
    rates: dict[str, list[float]] = {"fresh": [], "pooled": []}
    env.reset()
    for r in range(rounds):
        for name, seeds in (("fresh", FRESH_SEEDS), ("pooled", (FRESH_SEEDS[0], FRESH_SEEDS[0] + pool))):
            env.seeds = seeds
            rates[name].append(measure(env, lambda e: e.action_masks(), env.num_envs, steps, episodes, seed=r,
                                       reset=False))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--seed-pool", type=int, default=None, metavar="K",
                        help="compare fresh training seeds with a pool of K (alternating phases on one env)")
    parser.add_argument("--rounds", type=int, default=3, help="--seed-pool: fresh/pooled phase pairs")
    parser.add_argument("--pipeline", default=None, help="--seed-pool: any pipeline (default: the digits one)")
    parser.add_argument("--prompts", default=None, help="--seed-pool: the conditions, as `cachepilot fit` takes them")
    parser.add_argument("--call-kwargs", type=json.loads, default=None)
    parser.add_argument("--predictor", default="taylor:1")
    args = parser.parse_args()
    if args.seed_pool is not None:
        from cachepilot.conditions import pipeline_conditions
        from cachepilot.loading import load_pipeline

        if args.seed_pool < 1 or args.rounds < 1 or args.episodes < 1:
            parser.error("--seed-pool, --rounds and --episodes must be >= 1")
        pipe = load_pipeline(args.pipeline)
        env = CachingVecEnv(args.envs, pipe, num_steps=args.steps, predictor=args.predictor, seed=0,
                            conditions=pipeline_conditions(pipe, args.prompts), call_kwargs=args.call_kwargs)
        rates = pooled_vs_fresh(env, args.seed_pool, args.steps, args.episodes, args.rounds)
        fresh, pooled = statistics.median(rates["fresh"]), statistics.median(rates["pooled"])
        store = env.episodes.references
        print(f"CachingVecEnv({args.envs}), {args.steps} steps, {args.rounds} x {args.episodes} episodes per phase: "
              f"fresh seeds {fresh:.0f} env-steps/s (phases {[round(r) for r in rates['fresh']]}), pool of "
              f"{args.seed_pool} seed(s) {pooled:.0f} ({[round(r) for r in rates['pooled']]}); x{pooled / fresh:.2f}; "
              f"references kept {len(store.trajectories)} ({store.bytes / 2**20:.1f} MiB), sampled {store.computed} "
              f"(torch threads {torch.get_num_threads()})")
        return
    from cachepilot.loading import load_pipeline

    base = load_pipeline()  # the embedded digits pipeline
    vec = CachingVecEnv(args.envs, unhooked_twin(base), num_steps=args.steps, seed=0)
    dummy = DummyVecEnv([lambda: CachingEnv(unhooked_twin(base), num_steps=args.steps) for _ in range(args.envs)])
    dummy.seed(0)
    batched = measure(vec, lambda env: env.action_masks(), args.envs, args.steps, args.episodes)
    single = measure(dummy, lambda env: np.stack(env.env_method("action_masks")), args.envs, args.steps,
                     args.episodes)
    print(f"CachingVecEnv({args.envs}): {batched:.0f} env-steps/s; DummyVecEnv of {args.envs} CachingEnv: "
          f"{single:.0f} env-steps/s; x{batched / single:.1f} (torch threads {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
