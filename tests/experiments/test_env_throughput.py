from experiments.env_throughput import FRESH_SEEDS, pooled_vs_fresh
from cachepilot.driver import unhooked_twin
from cachepilot.envs.vec_env import CachingVecEnv


def test_pooled_phases_reuse_the_references_fresh_phases_do_not(pipe):
    env = CachingVecEnv(3, unhooked_twin(pipe), num_steps=4, seed=0)
    rates = pooled_vs_fresh(env, pool=1, steps=4, episodes=1, rounds=2)
    assert {k: len(v) for k, v in rates.items()} == {"fresh": 2, "pooled": 2}
    assert all(r > 0 for v in rates.values() for r in v)
    assert env.seeds == (FRESH_SEEDS[0], FRESH_SEEDS[0] + 1)
    store = env.episodes.references
    pooled = {key for key in store.trajectories if key[0] == FRESH_SEEDS[0]}
    # 2 episodes of 3 fresh samples, the first reset's 3, and at most the 10 digit classes of the pool
    assert len(pooled) <= 10 and store.computed <= 3 + 2 * 3 + len(pooled)
