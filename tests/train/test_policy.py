from cachepilot.driver import unhooked_twin
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import DiTTransformer2DModel

import cachepilot
from cachepilot import CheckpointError, InvalidInputError
from cachepilot.policies.features import FEATURES, NUM_FEATURES
from cachepilot.policies.learned import LearnedPolicy
from cachepilot.policies.prior import SchedulePrior
from cachepilot.train.policy import PolicyConfig, export_policy, train_policy

TINY = dict(num_envs=4, num_steps=10, total_timesteps=160, batch_size=40, n_epochs=1, checkpoint_every=80,
            predictor="taylor:1", eval_every=80, eval_samples=4)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, pipe):


    own = unhooked_twin(pipe)
    work = tmp_path_factory.mktemp("ppo")
    config = PolicyConfig(**TINY)
    model = train_policy(config, work, progress=False, pipe=own)
    out = export_policy(model, work / "export", own.transformer, config)
    return model, out, work, config, own


def test_export_matches_sb3_deterministic_predict(exported):
    model, out, *_ = exported
    policy = LearnedPolicy(out, target=0.3)
    obs = np.random.default_rng(0).uniform(0, 1, (64, NUM_FEATURES)).astype(np.float32)
    expected, _ = model.predict(obs, deterministic=True)
    with torch.no_grad():
        assert (policy.actor(torch.from_numpy(obs)).argmax(1).numpy() == expected).all()


def test_held_out_evaluation_is_logged(exported):
    import pandas as pd

    _, _, work, _, _ = exported
    log = pd.read_csv(work / "logs" / "progress.csv")
    for target in (0.2, 0.4):
        values = log[f"eval/compute_fraction_{target:g}"].dropna()
        assert len(values) >= 1 and (values == round(target * 10) / 10).all()
        assert log[f"eval/psnr_{target:g}"].dropna().between(5, 100).all()


def test_resume_continues_the_timestep_count(exported):
    _, _, work, config, own = exported
    config = PolicyConfig(**{**TINY, "total_timesteps": 80})
    model = train_policy(config, work, resume=True, progress=False, pipe=own)
    assert model.num_timesteps >= 240


def test_learned_policy_keeps_the_budget_in_the_pipeline(exported, pipe):
    _, out, *_ = exported
    for target in (0.2, 0.5):
        cachepilot.enable(pipe, LearnedPolicy(out, target=target), "taylor:1")
        try:
            images = pipe([1, 5, 7], num_inference_steps=10, output_type="pt").images
            stats = cachepilot.last_stats(pipe)
        finally:
            cachepilot.disable(pipe)
        assert torch.isfinite(images).all()
        assert stats.computes_per_sample.tolist() == [round(target * 10)] * 3


def test_importing_the_policy_does_not_import_sb3():
    code = ("import sys; import cachepilot.policies.learned, cachepilot.policies.spec; "
            "print('stable_baselines3' in sys.modules or 'sb3_contrib' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_bad_checkpoints_and_targets(exported, tmp_path):
    _, out, *_ = exported
    with pytest.raises(CheckpointError, match="no policy checkpoint"):
        LearnedPolicy(tmp_path)
    with pytest.raises(InvalidInputError, match=r"\(0, 1\]"):
        LearnedPolicy(out, target=1.5)
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "model.safetensors").write_bytes(b"\0" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        LearnedPolicy(broken)
    other_spec = tmp_path / "spec"
    shutil.copytree(out, other_spec)
    config = json.loads((other_spec / "config.json").read_text())
    config["observation"] = config["observation"][:-1]
    (other_spec / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="observation"):
        LearnedPolicy(other_spec)
    config["observation"] = list(FEATURES)
    config["prior"] = {"0.3": "0110"}
    (other_spec / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="prior schedule"):
        LearnedPolicy(other_spec)
    other = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=1, out_channels=1,
                                  num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=10)
    with pytest.raises(CheckpointError, match="hidden_size"):
        cachepilot.enable(other, LearnedPolicy(out), "reuse", num_inference_steps=10)


def test_warm_start_clones_the_prior_schedule(exported):
    from cachepilot.envs.vec_env import CachingVecEnv
    from cachepilot.train.warm_start import behaviour_clone, prior_rollouts

    model, _, _, config, own = exported
    prior = SchedulePrior({0.3: "1000100001", 0.5: "1010101011"})
    env = CachingVecEnv(4, own, num_steps=10, predictor="taylor:1", seed=0, prior=prior, targets=(0.3, 0.5))
    observations, actions, returns = prior_rollouts(env, episodes=2)
    assert observations.shape == (2 * 10 * 4, NUM_FEATURES) and set(actions.tolist()) == {0, 2}
    assert returns.shape == (2 * 10 * 4,) and np.isfinite(returns).all()
    # the prior's own suggestion is in the observation: following it is what was done
    assert (observations[:, FEATURES.index("prior_compute")] == (actions == 0)).all()
    assert behaviour_clone(model, observations, actions, returns, epochs=50, progress=False) >= 0.95


def test_shipped_policy_takes_the_searched_schedule(pipe):
    """The README's claim about the shipped artefact: its decisions are the searched schedule's."""
    from cachepilot.checkpoints import DEFAULT_CACHE, DEFAULT_POLICY

    searched = json.loads((DEFAULT_CACHE / "searched_schedules.json").read_text())["schedules"]
    own = unhooked_twin(pipe)
    for target in (0.2, 0.4):
        cachepilot.enable(own, LearnedPolicy(DEFAULT_POLICY, target=target), "learned")
        try:
            own([0, 4, 9], num_inference_steps=50, output_type="pt")
            decisions = cachepilot.last_stats(own).decisions
        finally:
            cachepilot.disable(own)
        mask = torch.tensor([c == "1" for c in searched[f"{target:g}"]["mask"]])
        assert torch.equal(decisions == 0, mask[:, None].expand_as(decisions))
