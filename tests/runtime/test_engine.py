import pytest
import torch
from diffusers import UNet2DModel

import cachepilot
from cachepilot.core.policy import CachePolicy
from cachepilot.policies.baselines import AlwaysCompute, FixedInterval
from cachepilot.predictors.taylor import Reuse, Taylor
from cachepilot.core.actions import Action
from cachepilot.runtime.adapters import UnsupportedModelError
from cachepilot.runtime.hooks import apply_cache, remove_cache

from .tiny_models import FAMILIES, build, run

STEPS = 6


class PerSamplePattern(CachePolicy):
    """Sample i computes when (step + i) % period == 0, else takes `skip` (REUSE/FORECAST alternating)."""

    def __init__(self, sample_ids: list[int], period: int = 3):
        self.ids = torch.tensor(sample_ids)
        self.period = period

    def decide(self, obs):
        step = obs.step
        compute = (step + self.ids) % self.period == 0
        skip = torch.where(self.ids % 2 == 0, int(Action.REUSE), int(Action.FORECAST))
        return torch.where(compute, int(Action.COMPUTE), skip)


@pytest.mark.parametrize("family", FAMILIES)
def test_always_compute_is_bit_exact(family):
    model, x, kwargs = build(family, batch=2)
    reference = run(model, x, kwargs, STEPS)
    apply_cache(model, AlwaysCompute(), Reuse())
    assert torch.equal(run(model, x, kwargs, STEPS), reference)
    remove_cache(model)
    assert torch.equal(run(model, x, kwargs, STEPS), reference)


@pytest.mark.parametrize("family", FAMILIES)
def test_mixed_action_batch_equals_per_sample_runs(family):
    batch = 3
    model, x, kwargs = build(family, batch=batch)
    apply_cache(model, PerSamplePattern(list(range(batch))), Taylor(1))
    batched = run(model, x, kwargs, STEPS)
    decisions = cachepilot.last_stats(model).decisions
    computes = (decisions == Action.COMPUTE).sum(1)
    assert computes[0] == batch and ((computes[1:] > 0) & (computes[1:] < batch)).all()  # mixed after step 0
    assert set(decisions.unique().tolist()) == {0, 1, 2}
    for i in range(batch):
        single_model, single_x, single_kwargs = build(family, batch=1)
        apply_cache(single_model, PerSamplePattern([i]), Taylor(1))
        # same weights, the i-th sample's inputs
        full_kwargs = kwargs
        single = run(single_model, x[i:i + 1], lambda t: {
            k: (v[i:i + 1] if isinstance(v, torch.Tensor) and v.shape[:1] == (batch,) else v)
            for k, v in full_kwargs(t).items()}, STEPS)
        torch.testing.assert_close(single[:, 0], batched[:, i], atol=2e-5, rtol=1e-5)


def test_cfg_copies_share_one_decision():
    model, x, kwargs = build("dit", batch=4)  # rows [s0, s1, s0', s1']: two samples, two CFG copies
    apply_cache(model, FixedInterval(2), Reuse(), cfg_copies=2)
    run(model, x, kwargs, STEPS)
    stats = cachepilot.last_stats(model)
    assert stats.decisions.shape == (STEPS, 2)
    assert stats.compute_fraction == pytest.approx(0.5)


def test_state_resets_between_generations():
    model, x, kwargs = build("dit", batch=2)
    apply_cache(model, FixedInterval(3), Taylor(2))
    first = run(model, x, kwargs, STEPS)
    second = run(model, x, kwargs, STEPS)
    assert torch.equal(first, second)
    # without a cache context: the engine counts calls and restarts after num_inference_steps
    apply_cache(model, FixedInterval(3), Taylor(2), num_inference_steps=STEPS)
    third = run(model, x, kwargs, STEPS, context=False)
    fourth = run(model, x, kwargs, STEPS, context=False)
    assert torch.equal(first, third) and torch.equal(third, fourth)


def test_skipping_changes_the_output_and_counts_computes():
    model, x, kwargs = build("dit", batch=2)
    reference = run(model, x, kwargs, STEPS)
    apply_cache(model, FixedInterval(2), Reuse())
    cached = run(model, x, kwargs, STEPS)
    assert torch.equal(cached[0], reference[0]) and not torch.equal(cached, reference)
    assert cachepilot.last_stats(model).computes_per_sample.tolist() == [3, 3]


def test_missing_step_count_is_a_clear_error():
    model, x, kwargs = build("dit", batch=1)
    apply_cache(model, AlwaysCompute(), Reuse())
    with pytest.raises(cachepilot.InvalidInputError, match="number of denoising steps"):
        run(model, x, kwargs, 1, context=False)


def test_unsupported_model_names_the_supported_ones():
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)
    with pytest.raises(UnsupportedModelError, match="UNet2DModel.*DiTTransformer2DModel.*FluxTransformer2DModel"):
        cachepilot.enable(unet, "fixed:2")


class Recorder(CachePolicy):
    """Computes every other step and records what it observed."""

    def __init__(self, observes_drift: bool = True):
        self.observes_drift = observes_drift
        self.seen = []

    def decide(self, obs):
        self.seen.append(obs)
        return torch.full((obs.batch_size,), int(Action.COMPUTE if obs.step % 2 == 0 else Action.REUSE))


def test_observation_change_and_drift_follow_their_definitions():
    model, x, kwargs = build("dit", batch=2)
    inputs, outputs = [], []
    first = model.transformer_blocks[0]
    last = model.transformer_blocks[-1]
    first.register_forward_pre_hook(lambda m, args, kw: inputs.append(kw.get("hidden_states", args[0] if args else None)), with_kwargs=True)
    last.register_forward_hook(lambda m, args, out: outputs.append((len(inputs) - 1, out)))  # (step, stack output)
    watching, blind = Recorder(), Recorder(observes_drift=False)
    apply_cache(model, watching, Reuse())
    run(model, x, kwargs, STEPS)
    apply_cache(model, blind, Reuse())
    run(model, x, kwargs, STEPS)
    relative = lambda a, b: (a - b).abs().mean((1, 2)) / b.abs().mean((1, 2))  # noqa: E731
    # Stack inputs of the watched call, per step (every step calls the first block: computing, or passed through).
    stack_inputs = inputs[:STEPS]
    stack_outputs = dict(outputs[:len(outputs) // 2])  # the last entry of each step: the stack's output
    residuals = {step: stack_outputs[step] - stack_inputs[step] for step in range(0, STEPS, 2)}
    for obs in watching.seen[1:]:
        step = obs.step
        last_compute = step - 1 - (step - 1) % 2
        torch.testing.assert_close(obs.change, relative(stack_inputs[step], stack_inputs[last_compute]))
        if last_compute >= 2:  # two computes seen: the residual's change per step between them
            expected = relative(residuals[last_compute], residuals[last_compute - 2]) / 2
            torch.testing.assert_close(obs.drift, expected)
    assert any((obs.drift > 0).all() for obs in watching.seen)
    assert all((obs.drift == 0).all() for obs in blind.seen)  # Threshold-like: no residual reduction


def test_rows_of_an_action_are_found_on_the_actions_device_in_sample_order():
    """The rows that skip or compute come from the device-side actions (a host index copied to a GPU is a host
    sync): sample i's rows are i, i + S, ... (its CFG copies), in sample order, as the host indices give them."""
    from cachepilot.runtime.engine import CacheEngine, EngineState

    state = EngineState()
    state.samples, state.copies = 7, 2
    actions = torch.tensor([2, 0, 1, 2, 2, 0, 1])
    for action in Action:
        idx = (actions == action).nonzero().flatten()
        rows = CacheEngine._device_rows(actions, action, idx.numel(), state)
        assert rows.tolist() == torch.cat([idx, idx + 7]).tolist()
        assert rows.device == actions.device
