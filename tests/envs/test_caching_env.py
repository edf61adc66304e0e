import gymnasium as gym
import numpy as np
import pytest
import torch

import cachepilot
from cachepilot.envs import ENV_ID
from cachepilot.envs.caching_env import CachingEnv
from cachepilot.driver import SamplingDriver, unhooked_twin
from cachepilot.envs.references import uniform_mask
from cachepilot.policies.baselines import Schedule
from cachepilot.core.actions import Action

STEPS = 12


@pytest.fixture(scope="module")
def env(pipe):
    return CachingEnv(unhooked_twin(pipe), num_steps=STEPS)


def _play(env, choose, **options):
    obs, info = env.reset(seed=0, options=options or None)
    total, actions = 0.0, []
    while True:
        action = choose(env, len(actions))
        obs, reward, terminated, truncated, step_info = env.step(action)
        assert env.observation_space.contains(obs) and np.isfinite(reward)
        total += reward
        actions.append(step_info["action"])
        if terminated:
            return total, actions, step_info, info


def test_passes_gymnasium_and_sb3_checks(env):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    check_env(env, skip_render_check=True)
    sb3_check_env(env)


def test_budget_is_exact_whatever_the_agent_does(env):
    rng = np.random.default_rng(0)
    for target in (0.2, 0.35, 0.5):
        def random_valid(env, step):
            return int(rng.choice(np.flatnonzero(env.action_masks())))

        _, actions, last, info = _play(env, random_valid, target=target, noise_seed=5, condition=3)
        assert actions.count(Action.COMPUTE) == info["computes_allowed"]
        assert actions[0] == Action.COMPUTE and actions[-1] == Action.COMPUTE
        assert last["compute_fraction"] == info["computes_allowed"] / STEPS


def test_invalid_actions_are_replaced_not_obeyed(env):
    _, actions, last, info = _play(env, lambda env, step: int(Action.COMPUTE), target=0.25, noise_seed=1, condition=1)
    assert actions.count(Action.COMPUTE) == info["computes_allowed"]


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_env_steps_are_the_runtime_steps(env, pipe, guidance):
    """Playing a schedule through the env gives bit-for-bit the latents `enable(pipe, Schedule)` gives;
    with guidance > 1 both CFG branches of a sample share its decisions, as at inference."""
    if guidance != 1.0:
        env = CachingEnv(unhooked_twin(pipe), num_steps=STEPS, guidance=guidance)
    target, seed, label = 0.34, 7, 4  # the condition index is the class on the default digits conditions
    _, _, _, info = _play(env, lambda env, step: 0, target=target, noise_seed=seed, condition=label)  # sizes budget
    mask = uniform_mask(STEPS, info["computes_allowed"])
    _, actions, last, _ = _play(env, lambda env, step: int(Action.COMPUTE if mask[step] else Action.FORECAST),
                                target=target, noise_seed=seed, condition=label)
    env_latents = env.episodes.latents.clone()
    assert actions == [0 if m else 2 for m in mask]
    # the uniform schedule is the reward's normaliser: its return is exactly -2
    assert last["final_distance"] == pytest.approx(last["uniform_distance"], rel=1e-6)
    twin = unhooked_twin(pipe)
    cachepilot.enable(twin, Schedule(mask), "taylor:1")
    try:
        driver = SamplingDriver(twin, STEPS, {"guidance_scale": guidance})
        result = driver.sample([{"class_labels": label}], [seed])
    finally:
        cachepilot.disable(twin)
    assert twin.do_classifier_free_guidance == (guidance > 1)
    assert torch.equal(env_latents, result.latents)


def test_uniform_schedule_return_is_minus_two(env):
    _, _, _, info = _play(env, lambda env, step: 0, target=0.4, noise_seed=11, condition=9)
    mask = uniform_mask(STEPS, info["computes_allowed"])
    total, _, _, _ = _play(env, lambda env, step: int(Action.COMPUTE if mask[step] else Action.FORECAST),
                           target=0.4, noise_seed=11, condition=9)
    assert total == pytest.approx(-2.0, rel=1e-5)


def test_registered_and_validates_targets(pipe):
    assert ENV_ID in gym.registry
    with pytest.raises(cachepilot.InvalidInputError, match="targets"):
        CachingEnv(pipe, num_steps=4, targets=(0.5, 0.2))
    cachepilot.disable(pipe)


def test_step_before_reset_is_an_error(pipe):
    fresh = CachingEnv(unhooked_twin(pipe), num_steps=4)
    with pytest.raises(RuntimeError, match="before start"):
        fresh.step(0)


def test_reset_mid_episode_aborts_the_running_call_cleanly(env):
    """A reset before the end unwinds the pipeline call in its worker thread; the next episode is clean."""
    first, *_ = _play(env, lambda env, step: 0, target=0.3, noise_seed=3, condition=2)
    env.reset(seed=0, options={"target": 0.3, "noise_seed": 3, "condition": 2})
    env.step(0)
    env.step(2)
    again, *_ = _play(env, lambda env, step: 0, target=0.3, noise_seed=3, condition=2)
    assert again == pytest.approx(first, abs=1e-9)


def test_observation_carries_the_prior_and_the_residual_drift(pipe):
    from cachepilot.policies.features import FEATURES
    from cachepilot.policies.prior import SchedulePrior

    prior = SchedulePrior({0.5: "101010010011"})
    env = CachingEnv(unhooked_twin(pipe), num_steps=STEPS, prior=prior)
    obs, _ = env.reset(seed=0, options={"target": 0.5})
    seen = []
    for _ in range(4):
        seen.append(obs)
        obs, *_ = env.step(Action.COMPUTE)
    seen = np.stack(seen)
    assert seen[:, FEATURES.index("prior_compute")].tolist() == [1, 0, 1, 0]
    drift = seen[:, FEATURES.index("drift")]
    assert drift[0] == 0 and drift[1] == 0 and (drift[2:] > 0).all()  # known after two computes


def test_a_prior_that_forecasts_the_last_step_frees_it_in_the_env(pipe):
    from cachepilot.policies.prior import SchedulePrior

    for mask, last_step in (("101010010011", [True, False, False]), ("110101010100", [False, True, True])):
        env = CachingEnv(unhooked_twin(pipe), num_steps=STEPS, prior=SchedulePrior({0.5: mask}))
        env.reset(seed=0, options={"target": 0.5})
        for step in range(STEPS - 1):  # asks for all six computes first; the last step computed keeps one back
            env.step(Action.COMPUTE if step < 6 else Action.FORECAST)
        assert env.action_masks().tolist() == last_step
        env.close()


def test_episodes_start_more_samples_than_the_drivers_batch(pipe):
    """The uniform-schedule errors that scale the reward follow the driver's split into batches (a Schedule of
    every sample given to a call of `batch_size` of them was refused before)."""
    from cachepilot.envs.episodes import CachingEpisodes

    seeds, conditions, targets = [1, 2, 3], [{"class_labels": c} for c in (0, 4, 8)], [0.3, 0.5, 0.4]
    small = CachingEpisodes(SamplingDriver(unhooked_twin(pipe), 6, batch_size=2), "taylor:1")
    whole = CachingEpisodes(SamplingDriver(unhooked_twin(pipe), 6), "taylor:1")
    small.start(seeds, conditions, targets)
    whole.start(seeds, conditions, targets)
    assert torch.allclose(small.scale, whole.scale, rtol=1e-4) and (small.scale > 1e-4).all()
    small.close()
    whole.close()
