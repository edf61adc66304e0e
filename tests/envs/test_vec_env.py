
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


def _episodes(env, count):
    """`count` episodes of the rollout policy above: per episode (length, observations, actions, rewards, infos)."""
    obs, out = env.reset(), []
    for _ in range(count):
        seen, acts, rewards = [], [], []
        while True:
            actions = np.array([2 if m[2] else 0 for m in env.action_masks()])
            if len(seen) % 3 == 1:
                actions[:] = 0
            seen.append(obs)
            acts.append(actions)
            obs, r, d, infos = env.step(actions)
            rewards.append(r)
            if d.all():
                break
        out.append((len(seen), np.stack(seen), np.stack(acts), np.stack(rewards), infos))
    return out


def test_several_step_counts_draw_one_per_batch_and_match_single_count_envs(pipe):
    """Each reset draws one count for the whole batch; the k-th episode is the k-th episode of a single-count
    env with the same seed at that count (the count has a stream of its own)."""
    twin = _twin(pipe)
    multi = CachingVecEnv(2, twin, num_steps=(6, 4), seed=3)
    assert multi.step_counts == (4, 6)
    got = _episodes(multi, 5)
    lengths = [g[0] for g in got]
    assert set(lengths) == {4, 6}
    assert all(info["episode"]["l"] == n and info["num_steps"] == n for n, *_, infos in got for info in infos)
    for n in (4, 6):
        single = _episodes(CachingVecEnv(2, twin, num_steps=n, seed=3), 5)
        for k in [k for k, length in enumerate(lengths) if length == n]:
            np.testing.assert_allclose(got[k][1], single[k][1], atol=1e-6)
            np.testing.assert_array_equal(got[k][2], single[k][2])
            np.testing.assert_allclose(got[k][3], single[k][3], atol=1e-6)
    again = CachingVecEnv(2, twin, num_steps=(4, 6), seed=3)
    assert [g[0] for g in _episodes(again, 5)] == lengths  # seeded: the same counts in the same order


def test_single_env_draws_its_step_count_per_reset(pipe):
    from cachepilot import InvalidInputError

    env = CachingEnv(_twin(pipe), num_steps=[4, 6])
    lengths = set()
    for seed in range(6):
        _, info = env.reset(seed=seed)
        length = 0
        while True:
            _, _, terminated, _, step_info = env.step(0)
            length += 1
            if terminated:
                break
        assert length == info["num_steps"] == step_info["num_steps"]
        lengths.add(length)
    assert lengths == {4, 6}
    _, info = env.reset(options={"num_steps": 6})
    assert info["num_steps"] == 6
    with pytest.raises(InvalidInputError, match="not one of"):
        env.reset(options={"num_steps": 5})
    with pytest.raises(InvalidInputError, match="num_steps"):
        CachingVecEnv(2, _twin(pipe), num_steps=[])
