
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

from cachepilot.envs.caching_env import CachingEnv
from cachepilot.envs.vec_env import CachingVecEnv

STEPS, N = 8, 3


def _twin(pipe):
    from cachepilot.driver import unhooked_twin

    return unhooked_twin(pipe)


def _rollout(env, masks_of, episodes=2):
    obs = [env.reset()]
    rewards, dones, infos = [], [], []
    for k in range(episodes * STEPS):
        masks = masks_of(env)
        actions = np.array([2 if m[2] else 0 for m in masks])  # forecast whenever the budget lets it
        if k % 3 == 1:
            actions[:] = 0  # and sometimes ask to compute
        o, r, d, i = env.step(actions)
        obs.append(o)
        rewards.append(r)
        dones.append(d)
        infos.append(i)
    return np.stack(obs), np.stack(rewards), np.stack(dones), infos


def test_batched_env_gives_the_transitions_of_single_envs(pipe):
    vec = CachingVecEnv(N, _twin(pipe), num_steps=STEPS, seed=42)
    dummy = DummyVecEnv([lambda: CachingEnv(_twin(pipe), num_steps=STEPS) for _ in range(N)])
    dummy.seed(42)
    v_obs, v_rew, v_done, v_info = _rollout(vec, lambda env: env.action_masks())
    d_obs, d_rew, d_done, d_info = _rollout(dummy, lambda env: np.stack(env.env_method("action_masks")))
    np.testing.assert_allclose(v_obs, d_obs, atol=1e-4)
    np.testing.assert_allclose(v_rew, d_rew, atol=1e-4)
    assert (v_done == d_done).all() and v_done[STEPS - 1].all() and v_done.sum() == 2 * N
    for vi, di in zip(v_info[STEPS - 1], d_info[STEPS - 1]):
        assert vi["compute_fraction"] == di["compute_fraction"]
        assert vi["final_distance"] == pytest.approx(di["final_distance"], abs=1e-4)
        assert "terminal_observation" in vi and vi["episode"]["l"] == STEPS


def test_vec_env_api_basics(pipe):
    vec = CachingVecEnv(2, _twin(pipe), num_steps=4, seed=0)
    obs = vec.reset()
    assert obs.shape == (2, vec.observation_space.shape[0])
    assert vec.action_masks().shape == (2, 3)
    assert len(vec.env_method("action_masks")) == 2
    assert vec.env_is_wrapped(object) == [False, False]
