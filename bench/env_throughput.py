"""Env-steps/s of CachingVecEnv(N) vs N CachingEnvs in SB3's DummyVecEnv (same seeds, same actions).

    python -m cachepilot.bench.env_throughput --envs 16 --steps 50 --episodes 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

from cachepilot.driver import unhooked_twin
from cachepilot.envs.caching_env import CachingEnv
from cachepilot.envs.vec_env import CachingVecEnv
from cachepilot.embedded.digits.loading import load_pipeline


def measure(env, masks_of, num_envs: int, steps: int, episodes: int, seed: int = 0) -> float:
    """Env-steps per second over `episodes` full episodes, after a first reset (references warm)."""
    rng = np.random.default_rng(seed)
    env.reset()
    tic = time.perf_counter()
    for _ in range(episodes * steps):
        masks = masks_of(env)
        env.step(np.array([rng.choice(np.flatnonzero(m)) for m in masks]))
    return episodes * steps * num_envs / (time.perf_counter() - tic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--episodes", type=int, default=2)
    args = parser.parse_args()
    base = load_pipeline()

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
