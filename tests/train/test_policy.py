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


def test_training_leaves_no_pipeline_call_paused(pipe, tmp_path):
    """PPO stops mid-episode (the vec env resets as the last rollout ends): that call, paused in its thread, held
    the pipeline's scheduler patched for stepping, so later sampling stepped twice per step."""
    import threading

    def paused() -> set:
        return {t for t in threading.enumerate() if t.name == "cachepilot-stepped-call" and t.is_alive()}

    own = unhooked_twin(pipe)
    before = paused()  # other tests' envs may leave theirs
    train_policy(PolicyConfig(**{**TINY, "total_timesteps": 80}), tmp_path, progress=False, pipe=own)
    assert "step" not in vars(own.scheduler)
    assert not paused() - before


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


def test_resume_trains_to_the_total_and_appends_the_logs(exported):
    import pandas as pd

    _, _, work, config, own = exported
    before = pd.read_csv(work / "logs" / "progress.csv")
    config = PolicyConfig(**{**TINY, "total_timesteps": 240})  # a total, not 240 more
    model = train_policy(config, work, resume=True, progress=False, pipe=own)
    assert model.num_timesteps == 240
    after = pd.read_csv(work / "logs" / "progress.csv")
    assert len(after) > len(before)  # the rows before the resume are kept, the new ones follow
    assert after["time/total_timesteps"].dropna().iloc[:len(before)].tolist() == \
        before["time/total_timesteps"].dropna().tolist()
    assert after["time/total_timesteps"].dropna().iloc[-1] == 240
    assert not (work / "logs" / "progress.previous.csv").exists()
    with pytest.warns(UserWarning, match="nothing left to train"):
        again = train_policy(config, work, resume=True, progress=False, pipe=own)
    assert again.num_timesteps == 240


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


def test_per_batch_decisions_are_shared_and_keep_the_budget(exported, pipe):
    _, out, *_ = exported
    cachepilot.enable(pipe, LearnedPolicy(out, target=0.3, per_batch=True), "taylor:1")
    try:
        images = pipe([1, 5, 7, 2], num_inference_steps=10, output_type="pt").images
        stats = cachepilot.last_stats(pipe)
    finally:
        cachepilot.disable(pipe)
    assert torch.isfinite(images).all()
    assert stats.computes_per_sample.tolist() == [3] * 4
    assert (stats.decisions == stats.decisions[:, :1]).all()  # one decision per step for the whole batch
    assert LearnedPolicy(out, target=0.3, per_batch=True).spec() == "learned@0.3/batch"


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



def test_warm_start_rollouts_cover_every_step_count(pipe):
    from cachepilot.envs.vec_env import CachingVecEnv
    from cachepilot.train.warm_start import prior_rollouts

    env = CachingVecEnv(2, unhooked_twin(pipe), num_steps=(4, 6), predictor="taylor:1", seed=0)
    observations, actions, returns = prior_rollouts(env, episodes=2)
    assert observations.shape == (2 * (4 + 6), NUM_FEATURES) and returns.shape == actions.shape == (20,)
    fractions = np.round(observations[:, FEATURES.index("step_fraction")].astype(np.float64), 4)
    assert set(fractions.tolist()) == {0.0, 0.2, 0.3333, 0.4, 0.6, 0.6667, 0.8, 1.0}  # both grids: t / 3 and t / 5
    assert np.isfinite(returns).all()

def test_shipped_policy_takes_the_searched_schedule(pipe):
    """The docs' claim about the shipped artefact: its decisions are the searched schedule's, every sample alike;
    where the searched mask leaves a compute of the budget unspent (0.4: 19 of 20), the policy spends it, on
    top of every compute of the mask."""
    from cachepilot.checkpoints import DEFAULT_CACHE, DEFAULT_POLICY
    from cachepilot.policies.budget import budget_computes

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
        computed = decisions == 0
        assert torch.equal(computed, computed[:, :1].expand_as(computed))  # every sample alike
        if mask.sum() == budget_computes(target, 50):
            assert torch.equal(computed[:, 0], mask)
        else:  # the mask's computes and the rest of the budget
            assert bool(computed[mask, 0].all()) and int(computed[:, 0].sum()) == budget_computes(target, 50)


def _copy_run(work, dest):
    import shutil

    dest.mkdir()
    for name in ("policy_config.json", "backbone.json"):
        shutil.copy(work / name, dest / name)
    newest = sorted(work.glob("ppo_*_steps.zip"), key=lambda p: int(p.stem.split("_")[1]))
    for path in newest:
        shutil.copy(path, dest / path.name)
    return newest


class _Marker:
    """Unpickling this creates a file: stands for any code a crafted checkpoint would run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _craft(zip_path, marker):
    import base64
    import pickle
    import zipfile

    with zipfile.ZipFile(zip_path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(members["data"])
    payload = base64.b64encode(pickle.dumps(_Marker(marker))).decode()
    for key in ("observation_space", "action_space", "lr_schedule", "evil"):
        data[key] = {":type:": "<class 'object'>", ":serialized:": payload}
    members["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(zip_path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)


def test_export_and_resume_never_unpickle_the_checkpoint(exported, tmp_path):
    from cachepilot.cli import main

    model, out, work, config, own = exported
    crafted = tmp_path / "crafted"
    zips = _copy_run(work, crafted)
    marker = tmp_path / "code-ran"
    _craft(crafted / zips[-1].name, marker)
    assert main(["export", "--work-dir", str(crafted), "--out", str(tmp_path / "exp")]) == 0
    assert not marker.exists()
    exported_policy = LearnedPolicy(tmp_path / "exp")
    reference = LearnedPolicy(out)
    obs = torch.rand(16, NUM_FEATURES)
    with torch.no_grad():
        assert torch.equal(exported_policy.actor(obs), exported_policy.actor(obs))
    assert exported_policy.config["timesteps"] == int(zips[-1].stem.split("_")[1])
    resumed = train_policy(PolicyConfig(**{**TINY, "total_timesteps": 1}), crafted, resume=True, progress=False,
                           pipe=own)
    assert not marker.exists()
    assert resumed.num_timesteps == exported_policy.config["timesteps"]
    del reference


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(exported, tmp_path):
    from cachepilot.train.policy import _last_checkpoint

    _, _, work, *_ = exported
    run = tmp_path / "run"
    zips = _copy_run(work, run)
    good = zips[-1]
    newest = run / "ppo_999999_steps.zip"
    newest.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.warns(UserWarning, match="previous good checkpoint"):
        assert _last_checkpoint(run) == run / good.name
    for path in run.glob("ppo_*.zip"):
        path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"), pytest.warns(UserWarning):
        _last_checkpoint(run)


@pytest.mark.parametrize("field, value, message", [
    ("net_arch", "64", "net_arch"),
    ("activation", "gelu", "activation"),
    ("num_steps_range", None, "num_steps_range"),
    ("backbone", ["DiTTransformer2DModel"], "backbone"),
])
def test_malformed_policy_config_is_a_checkpoint_error(exported, tmp_path, field, value, message):
    import shutil

    _, out, *_ = exported
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    config = json.loads((bad / "config.json").read_text())
    if value is None:
        del config[field]
    else:
        config[field] = value
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        LearnedPolicy(bad)


def test_list_fingerprint_fails_the_check(pipe):
    from cachepilot.runtime.fingerprint import check_fingerprint

    with pytest.raises(CheckpointError, match="malformed backbone fingerprint"):
        check_fingerprint(["DiTTransformer2DModel", 128], pipe.transformer, "the policy X")


def test_export_with_a_malformed_run_config_is_one_line(exported, tmp_path, capsys):
    from cachepilot.cli import main

    _, _, work, *_ = exported
    for field, value in (("net_arch", "64"), ("net_arch", [64]), ("seed", -1)):
        run = tmp_path / f"run-{field}-{value}"
        _copy_run(work, run)
        config = json.loads((run / "policy_config.json").read_text())
        config[field] = value
        (run / "policy_config.json").write_text(json.dumps(config))
        assert main(["export", "--work-dir", str(run), "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert field in err and "Traceback" not in err, err
    assert not (tmp_path / "x").exists()
    run = tmp_path / "run-backbone"
    _copy_run(work, run)
    (run / "backbone.json").write_text("[1, 2]")
    assert main(["export", "--work-dir", str(run), "--out", str(tmp_path / "y")]) == 2
    assert "backbone" in capsys.readouterr().err


def test_nan_policy_weights_are_refused(exported, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    _, out, *_ = exported
    bad = tmp_path / "nan"
    shutil.copytree(out, bad)
    weights = load_file(str(bad / "model.safetensors"))
    weights["2.weight"][0, 0] = float("nan")
    save_file(weights, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError, match="2.weight"):
        LearnedPolicy(bad)


@pytest.mark.parametrize("argv, message", [
    (["--seed", "-1"], "seed"),
    (["--lr", "nan"], "learning_rate"),
    (["--lr", "0"], "learning_rate"),
    (["--ent-coef", "inf"], "ent_coef"),
])
def test_bad_policy_settings_are_one_line_before_any_work(tmp_path, capsys, argv, message):
    from cachepilot.cli import main

    assert main(["train", "policy", "--work-dir", str(tmp_path / "w"), "--out", str(tmp_path / "o")] + argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "w").exists()


def test_sigint_saves_a_checkpoint_and_stops_cleanly(exported, tmp_path, monkeypatch):
    from cachepilot.train import policy as policy_module

    _, _, _, _, own = exported

    def interrupt(self):
        if self.num_timesteps >= 40:
            raise KeyboardInterrupt
        return True

    monkeypatch.setattr(policy_module.HeldOutEval, "_on_step", interrupt)
    work = tmp_path / "w"
    with pytest.raises(policy_module.Interrupted, match="interrupted at 40 timesteps") as info:
        train_policy(PolicyConfig(**{**TINY, "checkpoint_every": 10_000}), work, progress=False, pipe=own)
    assert info.value.exit_code == 130
    assert policy_module.read_checkpoint(work / "ppo_40_steps.zip").num_timesteps == 40


def test_cli_maps_an_interrupt_to_exit_130_without_a_traceback(monkeypatch, capsys):
    from cachepilot import cli
    from cachepilot.cli import export
    from cachepilot.train.policy import Interrupted

    def stopped(args):
        raise Interrupted("interrupted at 40 timesteps; saved w/ppo_40_steps.zip (continue with --resume)")

    monkeypatch.setattr(export, "run", stopped)
    assert cli.main(["export"]) == 130
    err = capsys.readouterr().err
    assert "interrupted at 40" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1

    def killed(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "run", killed)
    assert cli.main(["export"]) == 130


@pytest.fixture(scope="module")
def several_counts(tmp_path_factory, pipe):
    """A tiny run over two step counts, warm-started (the behaviour cloning sees both), then exported."""
    own = unhooked_twin(pipe)
    work = tmp_path_factory.mktemp("ppo-counts")
    config = PolicyConfig(**{**TINY, "num_steps": (10, 6), "warm_start": True, "warm_start_episodes": 2,
                             "warm_start_epochs": 5})
    model = train_policy(config, work, progress=False, pipe=own)
    return model, export_policy(model, work / "export", own.transformer, config), work, config


def test_one_checkpoint_serves_every_trained_step_count(several_counts, pipe):
    import warnings

    import pandas as pd

    from cachepilot.policies.budget import budget_computes

    model, out, work, config = several_counts
    assert model.n_steps == config.rollout_episodes * 10  # sized for the longest episodes
    policy = LearnedPolicy(out, target=0.5)
    assert policy.config["num_steps_range"] == [6, 10]
    for steps in (6, 10):
        cachepilot.enable(pipe, policy, "taylor:1")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # inside the range: no "trained for" warning
                pipe([1, 5], num_inference_steps=steps, output_type="pt")
            stats = cachepilot.last_stats(pipe)
        finally:
            cachepilot.disable(pipe)
        assert stats.computes_per_sample.tolist() == [budget_computes(0.5, steps)] * 2
    with pytest.warns(UserWarning, match="trained for 6..10 steps"):
        policy.reset(12, 1)
    # outside the trained range, at a count the prior was searched at: the searched decisions, no warning
    config12 = {**policy.config, "prior": {"0.5": ["1010100011", "101010010011"]}}  # searched at 10 and at 12
    weights = dict(policy.actor.state_dict())
    follower = LearnedPolicy(state=(config12, weights), target=0.5)
    cachepilot.enable(pipe, follower, "taylor:1")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            pipe([1, 5], num_inference_steps=12, output_type="pt")
        stats = cachepilot.last_stats(pipe)
    finally:
        cachepilot.disable(pipe)
    from cachepilot.core.actions import Action

    computed = (stats.decisions == int(Action.COMPUTE)).T.tolist()
    assert follower.follow_prior and computed == [[c == "1" for c in "101010010011"]] * 2
    actor = LearnedPolicy(state=(config12, weights), target=0.5, actor_outside_range=True)
    with pytest.warns(UserWarning, match="trained for 6..10 steps"):
        actor.reset(12, 1)
    assert not actor.follow_prior
    # at a count nobody searched: the prior's masks when its nearest searched count is outside the actor's range
    config14 = {**policy.config, "prior": {"0.5": ["1010100011", "10101010100101"]}}  # searched at 10 and at 14
    follower = LearnedPolicy(state=(config14, weights), target=0.5)
    cachepilot.enable(pipe, follower, "taylor:1")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            pipe([1, 5], num_inference_steps=13, output_type="pt")  # nearest searched: 14
        stats = cachepilot.last_stats(pipe)
    finally:
        cachepilot.disable(pipe)
    computed = (stats.decisions == int(Action.COMPUTE)).T.tolist()
    assert follower.follow_prior and computed == [follower.prior.mask(0.5, 13)] * 2
    with pytest.warns(UserWarning, match="trained for 6..10 steps"):  # nearest searched: 10, the actor's own
        follower.reset(11, 1)
    assert not follower.follow_prior
    # a count searched without this target (the search left it to the actor): the actor decides there
    config14_other = {**policy.config, "prior": {"0.5": "1010100011", "0.3": ["1000100001", "10001000100001"]}}
    actor = LearnedPolicy(state=(config14_other, weights), target=0.5)
    with pytest.warns(UserWarning, match="trained for 6..10 steps"):
        actor.reset(14, 1)
    assert not actor.follow_prior
    follower = LearnedPolicy(state=(config14_other, weights), target=0.3)
    follower.reset(14, 1)
    assert follower.follow_prior
    log = pd.read_csv(work / "logs" / "progress.csv")
    for steps in (6, 10):
        for target in config.eval_targets:
            assert log[f"eval/psnr_{target:g}@{steps}"].dropna().between(5, 100).all()
            fractions = log[f"eval/compute_fraction_{target:g}@{steps}"].dropna()
            assert len(fractions) >= 1 and (fractions == budget_computes(target, steps) / steps).all()
    assert "warm_start/accuracy" in log


def test_policy_config_step_counts_and_old_single_int_files(tmp_path):
    assert PolicyConfig(num_steps=50).step_counts == (50,)
    assert PolicyConfig(num_steps=(100, 20, 50, 20)).step_counts == (20, 50, 100)
    assert PolicyConfig(num_steps=(20, 100), rollout_episodes=2).rollout_steps == 200
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"num_steps": 30, "num_envs": 4}))  # a run's config written before step lists
    assert PolicyConfig.from_json(old).step_counts == (30,)
    several = tmp_path / "several.json"
    from dataclasses import asdict

    several.write_text(json.dumps(asdict(PolicyConfig(num_steps=(20, 50)))))
    assert PolicyConfig.from_json(several).num_steps == (20, 50)
    for bad in ([], [20, 0], "50", [True]):
        with pytest.raises(InvalidInputError, match="num_steps"):
            PolicyConfig(num_steps=bad).check()


def test_cli_takes_several_step_counts(monkeypatch, tmp_path):
    from cachepilot import cli
    from cachepilot.train import policy as policy_module

    seen = {}

    def fake_train(config, work_dir, **kwargs):
        seen["config"] = config
        return "model"

    monkeypatch.setattr(policy_module, "train_policy", fake_train)
    monkeypatch.setattr(policy_module, "export_policy", lambda *args, **kwargs: None)
    argv = ["train", "policy", "--work-dir", str(tmp_path / "w"), "--out", str(tmp_path / "o")]
    assert cli.main(argv + ["--steps", "20", "50", "100"]) == 0
    assert seen["config"].step_counts == (20, 50, 100)
    assert cli.main(argv + ["--steps", "30"]) == 0
    assert seen["config"].num_steps == 30
    assert cli.main(argv + ["--steps", "20", "0"]) == 2


def test_add_prior_gives_an_exported_policy_the_masks_of_another_step_count(exported, tmp_path, capsys):
    import shutil

    from cachepilot.cli import main

    _, out, *_ = exported
    policy = tmp_path / "policy"
    shutil.copytree(out, policy)
    searched = {"0.2": "10000010000100000001", "0.4": "11001001001001001001"}  # the budgets: 4 and 8 of 20
    schedules = tmp_path / "searched_20.json"
    schedules.write_text(json.dumps({"num_steps": 20, "schedules": {t: {"mask": m} for t, m in searched.items()}}))
    before = LearnedPolicy(policy).prior.searched_steps()
    assert main(["add-prior", str(policy), str(schedules)]) == 0
    prior = LearnedPolicy(policy).prior
    assert prior.searched_steps() == sorted(set(before) | {20})
    for target, mask in searched.items():
        assert "".join("1" if m else "0" for m in prior.mask(float(target), 20)) == mask
    assert "forecaster gate" not in capsys.readouterr().err  # no gate beside it: nothing to warn of
    assert main(["add-prior", str(tmp_path / "nowhere"), str(schedules)]) == 2
    assert "no policy checkpoint" in capsys.readouterr().err

    # a cache whose gate scored this policy's schedules whole: those choices were made on the earlier prior
    (tmp_path / "predictors").mkdir()
    (tmp_path / "predictors" / "forecaster_gate.json").write_text(json.dumps(
        {"schedules": {"50": {"learned@0.2": {"choice": "taylor:1"}, "fixed:2": {"choice": "learned"}},
                       "20": {"fixed:3": {"choice": "learned"}}}}))
    assert main(["add-prior", str(policy), str(schedules)]) == 0
    err = capsys.readouterr().err
    assert "learned@TARGET at 50 steps" in err and "calibrate-forecaster" in err


def test_the_budget_keeps_the_last_step_computed_only_where_the_prior_does(exported):
    _, out, *_ = exported
    policy = LearnedPolicy(out, target=0.5)
    weights = dict(policy.actor.state_dict())
    closed = LearnedPolicy(state=({**policy.config, "prior": {"0.5": "1010100011"}}, weights), target=0.5)
    open_end = LearnedPolicy(state=({**policy.config, "prior": {"0.5": "1101010100"}}, weights), target=0.5)
    closed.reset(10, 1)
    open_end.reset(10, 1)
    assert closed.compute_last and not open_end.compute_last


def test_seed_pool_narrows_the_training_seeds_and_reaches_the_cli(monkeypatch, tmp_path):
    assert PolicyConfig().training_seeds == (200_000, 300_000)
    assert PolicyConfig(seed_pool=4).check().training_seeds == (200_000, 200_004)
    for bad in (0, -1, 100_001, 2.0, True):
        with pytest.raises(InvalidInputError, match="seed_pool"):
            PolicyConfig(seed_pool=bad).check()
    from cachepilot import cli
    from cachepilot.train import policy as policy_module

    seen = {}
    monkeypatch.setattr(policy_module, "train_policy", lambda config, work_dir, **kwargs: seen.update(config=config))
    monkeypatch.setattr(policy_module, "export_policy", lambda *args, **kwargs: None)
    argv = ["train", "policy", "--work-dir", str(tmp_path / "w"), "--out", str(tmp_path / "o")]
    assert cli.main(argv + ["--seed-pool", "3"]) == 0
    assert seen["config"].seed_pool == 3
    assert cli.main(argv + ["--seed-pool", "0"]) == 2


def test_pooled_training_draws_its_seeds_from_the_pool_and_reuses_references(tmp_path, pipe):
    own = unhooked_twin(pipe)
    config = PolicyConfig(**{**TINY, "seed_pool": 1, "total_timesteps": 80})
    from cachepilot.envs import vec_env

    made = []
    original = vec_env.CachingVecEnv.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self)

    import unittest.mock

    with unittest.mock.patch.object(vec_env.CachingVecEnv, "__init__", spy):
        train_policy(config, tmp_path / "w", progress=False, pipe=own)
    env = made[0]
    assert env.seeds == (200_000, 200_001)
    store = env.episodes.references
    assert {seed for seed, _ in store.trajectories} == {200_000}
    assert store.computed <= 10  # one pair per digit class at most, however many episodes ran


def test_policy_selection_ships_the_learned_policy_only_above_the_margin():
    from cachepilot.train.policy import policy_selection

    def results(gains: dict[str, float]) -> dict[str, float]:
        out = {}
        for name, gain in gains.items():
            out.update({f"eval/psnr_{name}": 30.0 + gain, f"eval/searched_psnr_{name}": 30.0,
                        f"eval/gain_{name}": gain, f"eval/compute_fraction_{name}": 0.3})
        return out

    won = policy_selection(results({"0.2": 0.5, "0.4": 0.1}), margin=0.1)  # mean +0.3 dB
    assert won["kind"] == "learned" and won["gain_db"] == pytest.approx(0.3)
    assert won["validation"]["0.2"] == {"learned_psnr": 30.5, "searched_psnr": 30.0, "gain_db": 0.5,
                                        "learned_compute_fraction": 0.3}
    lost = policy_selection(results({"0.2@10": 0.3, "0.2@20": -0.2}), margin=0.1)  # mean +0.05: not enough
    assert lost["kind"] == "searched" and "did not beat" in lost["reason"] and set(lost["validation"]) == {
        "0.2@10", "0.2@20"}
    assert policy_selection(results({"0.3": 0.1}), margin=0.1)["kind"] == "searched"  # a tie keeps the schedule
    assert policy_selection({"eval/psnr_0.3": 30.0}, margin=0.1)["kind"] == "learned"  # no searched prior
