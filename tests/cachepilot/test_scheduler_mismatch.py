"""A cache checkpoint enabled on a pipeline whose scheduler differs from the one it was fitted with: one warning
naming the fields, and Taylor-2 instead of the learned forecaster; the same scheduler, or a checkpoint that
recorded none (fitted before schedulers were recorded), keeps the head without a warning."""

import json
import shutil
import warnings

import pytest
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler,
                       UniPCMultistepScheduler)

import cachepilot
from cachepilot.checkpoints import CHECKPOINTS_DIR
from cachepilot.driver import unhooked_twin
from cachepilot.embedded.digits.sampling import sample_images
from cachepilot.predictors.taylor import Taylor
from cachepilot.runtime.fingerprint import scheduler_differences, scheduler_fingerprint


@pytest.fixture()
def checkpoint(tmp_path, pipe):
    """The shipped digits cache, with the record of the scheduler it was fitted with."""
    root = shutil.copytree(CHECKPOINTS_DIR / "digits-dit-cache", tmp_path / "cache")
    (root / "cachepilot_config.json").write_text(json.dumps({"scheduler": scheduler_fingerprint(pipe.scheduler)}))
    return root


def _enable(pipe, checkpoint):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = cachepilot.enable(pipe, checkpoint=checkpoint, speed=0.5)
    return engine, [w for w in caught if "fitted with another scheduler" in str(w.message)]


def test_same_scheduler_keeps_the_head_without_a_warning(pipe, checkpoint):
    twin = unhooked_twin(pipe)
    engine, warned = _enable(twin, checkpoint)
    assert warned == [] and not isinstance(engine.predictor, Taylor)


@pytest.mark.parametrize("make, fields", [
    (lambda c: DDIMScheduler.from_config(c, timestep_spacing="leading"), "timestep_spacing"),
    (lambda c: DDIMScheduler.from_config(c, prediction_type="v_prediction"), "prediction_type"),
    (lambda c: DPMSolverMultistepScheduler.from_config(c), "scheduler_class"),
])
def test_another_scheduler_warns_once_and_forecasts_with_taylor_2(pipe, checkpoint, make, fields):
    twin = unhooked_twin(pipe)
    twin.scheduler = make(pipe.scheduler.config)
    engine, warned = _enable(twin, checkpoint)
    assert len(warned) == 1 and warned[0].category is UserWarning
    message = str(warned[0].message)
    assert fields in message and "Taylor-2 (taylor:2)" in message and "cachepilot fit" in message
    assert isinstance(engine.predictor, Taylor) and engine.predictor.order == 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sample_images(twin, [1, 2], seed=0, num_inference_steps=6)
        sample_images(twin, [1, 2], seed=0, num_inference_steps=6)
    assert not [str(w.message) for w in caught if "fitted with another scheduler" in str(w.message)]  # once
    assert cachepilot.last_stats(twin) is not None


def test_a_checkpoint_without_a_scheduler_record_is_trusted(pipe):
    twin = unhooked_twin(pipe)
    twin.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    engine, warned = _enable(twin, CHECKPOINTS_DIR / "digits-dit-cache")
    assert warned == [] and not isinstance(engine.predictor, Taylor)


def test_only_trajectory_fields_count():
    fitted = scheduler_fingerprint(DDIMScheduler())
    assert scheduler_differences(fitted, DDIMScheduler(dynamic_thresholding_ratio=0.9)) == []
    assert scheduler_differences(fitted, DDIMScheduler(beta_schedule="scaled_linear")) == ["beta_schedule"]
    assert scheduler_differences(None, DDIMScheduler()) == [] and scheduler_differences(fitted, None) == []
    flow = scheduler_fingerprint(FlowMatchEulerDiscreteScheduler(shift=3.0))
    assert scheduler_differences(flow, FlowMatchEulerDiscreteScheduler(shift=1.0)) == ["shift"]
    unipc = scheduler_fingerprint(UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                          flow_shift=3.0))
    assert scheduler_differences(unipc, UniPCMultistepScheduler(prediction_type="flow_prediction",
                                                                use_flow_sigmas=True, flow_shift=5.0,
                                                                solver_order=3)) == ["flow_shift", "solver_order"]


def test_a_scheduler_replaced_after_enable_warns_once_at_the_next_call(pipe, checkpoint):
    twin = unhooked_twin(pipe)
    engine, warned = _enable(twin, checkpoint)
    assert warned == [] and not isinstance(engine.predictor, Taylor)
    twin.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="leading")
    for expected in (1, 0):  # the first call after the swap warns, the next does not
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sample_images(twin, [1, 2], seed=0, num_inference_steps=6)
        warned = [w for w in caught if "fitted with another scheduler" in str(w.message)]
        assert len(warned) == expected and (not warned or "timestep_spacing" in str(warned[0].message))
        assert isinstance(engine.predictor, Taylor) and engine.predictor.order == 2
    assert cachepilot.last_stats(twin).num_steps == 6
