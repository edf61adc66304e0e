import pytest
import torch

from experiments.headroom import auc, deviation_examples, shuffle_within_budgets
from cachepilot.policies.features import FEATURES, NUM_FEATURES


def test_auc():
    labels = torch.tensor([True, False, False, True])
    assert auc(torch.tensor([0.9, 0.1, 0.2, 0.8]), labels) == 1.0
    assert auc(torch.tensor([0.1, 0.9, 0.8, 0.2]), labels) == 0.0
    assert auc(torch.zeros(4), labels) == 0.5


def test_deviation_examples_stop_at_the_first_deviation():
    steps, samples = 6, 2
    obs = torch.zeros(steps, samples, NUM_FEATURES)
    prior = torch.tensor([1, 0, 0, 1, 0, 1], dtype=torch.bool)
    obs[:, :, FEATURES.index("prior_compute")] = prior[:, None].float()
    computes = prior[:, None].repeat(1, samples)
    computes[2, 0], computes[3, 0] = True, False  # sample 0 computes one step early; sample 1 follows
    x, y = deviation_examples(obs, computes)
    assert len(x) == 2 + 5 and y.tolist() == [False, True] + [False] * 5


def test_shuffle_within_budgets_pairs_equal_budgets():
    masks = torch.tensor([[1, 0, 1], [1, 1, 1], [1, 0, 1], [1, 1, 1], [1, 0, 1]], dtype=torch.bool)
    perm = shuffle_within_budgets(masks)
    assert sorted(perm.tolist()) == list(range(5)) and torch.equal(masks[perm].sum(1), masks.sum(1))


def _tiny_flux(tmp_path):
    from cachepilot.loading import load_pipeline

    from ..tiny_pipelines import build_tiny_pipeline, call_kwargs

    kwargs = {k: v for k, v in call_kwargs("flux").items() if k != "num_inference_steps"}
    kwargs.update(true_cfg_scale=2.0, negative_prompt="")  # true CFG, as the scenes pipeline is sampled
    return build_tiny_pipeline("flux", tmp_path / "flux"), load_pipeline, kwargs


def test_mixed_noise_mixes_the_pipelines_own_noise_and_restores_it(tmp_path):
    import sys

    from experiments.headroom import mixed_noise
    from cachepilot.driver import SamplingDriver

    path, load_pipeline, kwargs = _tiny_flux(tmp_path)
    pipe = load_pipeline(path)
    module = sys.modules[type(pipe).__module__]
    original = module.randn_tensor
    driver = SamplingDriver(pipe, 2, kwargs)
    conditions, seeds = [{"prompt": "a red circle"}, {"prompt": "a blue square"}], [3, 4]
    plain = driver.sample(conditions, seeds).latents
    with mixed_noise(pipe, 0.0):
        assert torch.equal(driver.sample(conditions, seeds).latents, plain)
    with mixed_noise(pipe, 0.5):
        noise = module.randn_tensor((2, 3), generator=[torch.Generator().manual_seed(s) for s in seeds])
        mixed = driver.sample(conditions, seeds).latents
    expected = 0.75 ** 0.5 * torch.cat([torch.randn((1, 3), generator=torch.Generator().manual_seed(s))
                                        for s in seeds]) + 0.5 * torch.randn((2, 3), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(noise, expected)
    assert not torch.allclose(mixed, plain, atol=1e-3)
    assert module.randn_tensor is original and torch.equal(driver.sample(conditions, seeds).latents, plain)


def tiny_flux_user_setup(tmp_path) -> tuple:
    """A user's pipeline as the headroom tools take it: (pipeline dir, call kwargs with true CFG, a prompts file,
    a cache dir whose searched schedules, 8 steps, are the prior)."""
    import json

    from ..tiny_pipelines import example_condition

    path, _, kwargs = _tiny_flux(tmp_path)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(example_condition("flux", i)["prompt"] for i in range(24)) + "\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "searched_schedules.json").write_text(json.dumps({"num_steps": 8, "schedules": {
        "0.3": {"mask": "10010001"}, "0.5": {"mask": "11010101"}}}))
    return path, kwargs, prompts, cache


def test_headroom_on_a_text_to_image_pipeline_with_true_cfg(tmp_path):
    """The command on a user's pipeline: --pipeline, --prompts (evaluation split), --call-kwargs, --cache (its
    searched schedules are the prior, their step count the default)."""
    import json
    import math

    from experiments.headroom import main

    path, kwargs, prompts, cache = tiny_flux_user_setup(tmp_path)
    out = tmp_path / "headroom.json"
    figures = main(["--pipeline", str(path), "--prompts", str(prompts), "--call-kwargs", json.dumps(kwargs),
                    "--cache", str(cache), "--samples", "6", "--sweeps", "1", "--seeds-per-condition", "2", "--first-block-probe",
                    "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(figures))
    assert figures["pipeline_class"] == "FluxPipeline" and figures["steps"] == 8 and figures["samples"] == 6
    assert figures["predictor"] == "taylor:2" and figures["call_kwargs"]["true_cfg_scale"] == 2.0
    assert figures["conditions"].endswith("[evaluation]")
    assert figures["oracle_gain_db"] >= 0  # the oracle only keeps moves that bring a sample closer
    assert 0 < figures["decisions_differing_from_prior"] < 1
    for key in ("own_mask_gain_db", "other_samples_mask_gain_db", "own_mask_gain_db_noise_perturbed_0.1",
                "own_mask_gain_db_noise_perturbed_1"):
        assert math.isfinite(figures[key]), key
    per_condition = figures["per_condition"]  # 3 conditions x 2 seeds, one mask each, scored on fresh seeds
    assert per_condition["conditions"] == 3 and per_condition["seeds_per_condition"] == 2
    assert per_condition["condition_mask_gain_db_fitted_seeds"] >= -1e-4  # moves kept only where a group's mean fell
    assert math.isfinite(per_condition["condition_mask_gain_db_fresh_seeds"])
    for key in ("first_deviation_auc_all_features", "first_deviation_auc_time_and_budget_only",
                "first_deviation_auc_with_first_block_probe", "first_deviation_auc_time_budget_and_first_block_probe"):
        assert math.isnan(figures[key]) or 0 <= figures[key] <= 1, key


@pytest.mark.parametrize("args, match", [(["--perturb", "1.5"], "--perturb"),
                                         (["--seeds-per-condition", "3"], "--seeds-per-condition"),
                                         (["--seeds-per-condition", "0"], "--seeds-per-condition")])
def test_headroom_refuses_bad_arguments_before_loading(args, match):
    from experiments.headroom import main
    from cachepilot.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=match):
        main(["--pipeline", "/nonexistent", "--samples", "4", *args])


def test_a_user_pipeline_needs_searched_schedules(tmp_path):
    from experiments.headroom import _prior_and_predictor
    from cachepilot.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="--cache"):
        _prior_and_predictor(object(), None, None, None)
    prior, predictor = _prior_and_predictor(object(), tmp_path, None, None)
    assert prior == tmp_path / "searched_schedules.json" and predictor == "taylor:2"  # no head: the checkpoint's rule


def test_first_block_probe_sees_changes_since_each_samples_last_compute(tmp_path):
    from experiments.first_block_probe import PROBE_FEATURES, first_block_probe_features
    from cachepilot.driver import SamplingDriver
    from cachepilot.predictors.spec import make_predictor

    path, load_pipeline, kwargs = _tiny_flux(tmp_path)
    driver = SamplingDriver(load_pipeline(path), 5, kwargs)
    conditions, seeds = [{"prompt": "a red circle"}, {"prompt": "a blue square"}], [3, 4]
    masks = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 1, 0]], dtype=torch.bool)
    features = first_block_probe_features(driver, conditions, seeds, masks, make_predictor("taylor:1"))
    assert features.shape == (5, 2, len(PROBE_FEATURES)) and torch.isfinite(features).all()
    assert (features[0] == 0).all()  # nothing to compare with at the first step
    change, accumulated = features[..., 0], features[..., 2]
    assert (change[1:] > 0).all()  # the probe moves every step, computed or not
    # sample 0 computes every step: change since its last compute == the step's change == the sum since then
    assert torch.allclose(change[1:, 0], accumulated[1:, 0])
    # sample 1 skips steps 1-2: its change keeps growing against step 0 and resets after the compute at step 3
    assert accumulated[2, 1] > accumulated[1, 1] and torch.isclose(change[4, 1], accumulated[4, 1])
