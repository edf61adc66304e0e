"""Every tested family, found from diffusers' block metadata (no adapter class per family).

Per family (tiny configs from tiny_models.FAMILIES, images and videos): the discovered stack, a cached
policy that runs (fixed:2 with taylor:1), and per-sample decisions in a batch of 2 equal to each sample run
alone with its own schedule. Always-compute bit-exactness and a batch mixing COMPUTE / REUSE / FORECAST in
one step are checked over the same FAMILIES in test_engine.py.
"""

import pytest
import torch
from diffusers.models.attention import BasicTransformerBlock

import cachepilot
from cachepilot.policies.baselines import AlwaysCompute, Schedule
from cachepilot.predictors.taylor import Reuse, Taylor
from cachepilot.core.actions import Action
from cachepilot.runtime.adapters import CHAINED_LISTS, UnsupportedModelError, get_adapter
from cachepilot.runtime.hooks import apply_cache

from .tiny_models import FAMILIES, VIDEO_FAMILIES, build, run

STEPS = 4
MASK = torch.tensor([[1, 1, 0, 1], [1, 0, 1, 1]], dtype=torch.bool)  # sample 0 skips step 2, sample 1 step 1

STACKS = {  # the block lists each family's stack is made of, in execution order
    "dit": ("transformer_blocks",), "pixart": ("transformer_blocks",), "sd3": ("transformer_blocks",),
    "flux": ("transformer_blocks", "single_transformer_blocks"), "sana": ("transformer_blocks",),
    "qwenimage": ("transformer_blocks",), "wan": ("blocks",), "cogvideox": ("transformer_blocks",),
    "hunyuanvideo": ("transformer_blocks", "single_transformer_blocks"), "ltx": ("transformer_blocks",),
}


def test_families_cover_images_and_videos():
    assert set(STACKS) == set(FAMILIES) and len(FAMILIES) >= 8
    assert len(VIDEO_FAMILIES) >= 2 and set(VIDEO_FAMILIES) <= set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_stack_is_discovered(family):
    model, x, _ = build(family, batch=1)
    adapter = get_adapter(model)
    assert adapter.block_lists == STACKS[family]
    assert len(adapter.blocks(model)) == sum(len(getattr(model, name)) for name in STACKS[family])
    if len(STACKS[family]) > 1:
        assert type(model).__name__ in CHAINED_LISTS
    if family in VIDEO_FAMILIES:
        assert x.ndim == 5 or family == "ltx"  # LTX takes packed video tokens


@pytest.mark.parametrize("family", FAMILIES)
def test_fixed_interval_with_taylor_runs(family):
    model, x, kwargs = build(family, batch=2)
    reference = run(model, x, kwargs, STEPS)
    cachepilot.enable(model, "fixed:2", predictor="taylor:1")
    cached = run(model, x, kwargs, STEPS)
    assert torch.isfinite(cached).all()
    assert torch.equal(cached[0], reference[0])  # everyone computes at step 0: the untouched call
    assert not torch.allclose(cached[1], reference[1])  # step 1 is forecast
    stats = cachepilot.last_stats(model)
    assert stats.decisions.shape == (STEPS, 2)
    assert stats.computes_per_sample.tolist() == [2, 2]


@pytest.mark.parametrize("family", FAMILIES)
def test_per_sample_schedule_equals_each_sample_alone(family):
    model, x, kwargs = build(family, batch=2)
    apply_cache(model, Schedule(MASK), Taylor(1))
    batched = run(model, x, kwargs, STEPS)
    decisions = cachepilot.last_stats(model).decisions
    assert torch.equal(decisions == Action.COMPUTE, MASK.T)  # (steps, samples): decided per sample
    for i in range(2):
        single_model, _, _ = build(family, batch=1)  # same weights
        apply_cache(single_model, Schedule(MASK[i]), Taylor(1))
        single = run(single_model, x[i:i + 1], lambda t: _sample(kwargs(t), i, 2), STEPS)
        torch.testing.assert_close(single[:, 0], batched[:, i], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_threshold_skips_and_stays_finite(family):
    """TeaCache-style threshold on the probe: decided per sample from the observation, skips some steps."""
    model, x, kwargs = build(family, batch=2)
    cachepilot.enable(model, "threshold:0.5", predictor="taylor:1")
    cached = run(model, x, kwargs, STEPS)
    stats = cachepilot.last_stats(model)
    assert torch.isfinite(cached).all()
    assert stats.decisions.shape == (STEPS, 2) and 0 < stats.compute_fraction < 1


class _Boom(Exception):
    pass


@pytest.mark.parametrize("family", FAMILIES)
def test_a_call_after_a_failed_call_equals_a_fresh_models(family):
    """A bare transformer in a sampler loop: the loop raises inside the cached stack at step 2; the next full
    loop equals a fresh model's, bit for bit (the pipeline-level test is in test_call_state.py)."""
    fresh, x, kwargs = build(family, batch=2)
    cachepilot.enable(fresh, "fixed:2", predictor="taylor:1")
    expected = run(fresh, x, kwargs, STEPS)

    model, _, _ = build(family, batch=2)
    cachepilot.enable(model, "fixed:2", predictor="taylor:1")
    calls = {"n": 0}

    def explode(module, args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise _Boom()

    handle = get_adapter(model).blocks(model)[0].register_forward_pre_hook(explode)
    with pytest.raises(_Boom):
        run(model, x, kwargs, STEPS)
    handle.remove()
    assert torch.equal(run(model, x, kwargs, STEPS), expected)


def _sample(kwargs: dict, i: int, batch: int) -> dict:
    """The i-th sample's call kwargs: per-sample tensors and lists (Qwen's img_shapes) sliced."""
    def pick(v):
        if isinstance(v, torch.Tensor) and v.shape[:1] == (batch,) or isinstance(v, list) and len(v) == batch:
            return v[i:i + 1]
        return v
    return {k: pick(v) for k, v in kwargs.items()}


class _TwoLists(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.refiner = torch.nn.ModuleList([BasicTransformerBlock(8, 1, 8)])
        self.blocks = torch.nn.ModuleList([BasicTransformerBlock(8, 1, 8)])


def test_several_unchained_lists_are_refused():
    with pytest.raises(UnsupportedModelError, match=r"_TwoLists.*several block lists \(refiner, blocks\)"):
        get_adapter(_TwoLists())


class _Hinted(torch.nn.Module):
    """A stack that adds a hint between its blocks when given one (as ControlNet residuals and VACE hints do)."""

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([BasicTransformerBlock(8, 1, 8) for _ in range(3)])

    def forward(self, hidden_states, hint=None):
        for block in self.blocks:
            hidden_states = block(hidden_states)
            if hint is not None:
                hidden_states = hidden_states + hint
        return hidden_states


@torch.no_grad()
def test_a_stream_changed_between_blocks_is_a_clear_error():
    torch.manual_seed(0)
    model, x = _Hinted().eval(), torch.randn(2, 4, 8)
    reference = model(x)
    apply_cache(model, AlwaysCompute(), Reuse(), num_inference_steps=2)
    assert torch.equal(model(x), reference)  # nothing between the blocks: one stack
    with pytest.raises(UnsupportedModelError, match=r"_Hinted changed hidden_states between blocks 0 and 1"):
        model(x, hint=torch.ones(8))


@torch.no_grad()
def test_flux_controlnet_residuals_are_refused():
    model, x, kwargs = build("flux", batch=1)
    apply_cache(model, AlwaysCompute(), Reuse(), num_inference_steps=1)
    with pytest.raises(UnsupportedModelError, match="FluxTransformer2DModel changed hidden_states"):
        model(x, **kwargs(900), controlnet_block_samples=[torch.zeros(1, 16, 32)])


def test_a_subclass_of_a_registered_block_is_found():
    class MyBlock(BasicTransformerBlock):
        pass

    model = _TwoLists()
    del model.refiner
    model.blocks = torch.nn.ModuleList([MyBlock(8, 1, 8), MyBlock(8, 1, 8)])
    adapter = get_adapter(model)
    assert adapter.block_lists == ("blocks",) and adapter.streams == ("hidden_states",)
