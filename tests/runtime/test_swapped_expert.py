"""A transformer replaced after `enable` (`pipe.transformer_2 = other`): the next call warns once, naming the
component and telling to enable again, and runs (no shape error from the engine); enabling again caches it."""

import warnings

import torch

import cachepilot
from cachepilot.runtime.hooks import get_engine

from ..tiny_pipelines import wan22_call_kwargs, wan22_pipeline


def _call(pipe):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frames = pipe(**wan22_call_kwargs(), num_inference_steps=4, generator=torch.Generator().manual_seed(0)).frames
    return frames, [str(w.message) for w in caught if "was replaced after cachepilot.enable" in str(w.message)]


def test_a_swapped_expert_warns_once_then_enable_caches_it():
    from diffusers import WanTransformer3DModel

    pipe = wan22_pipeline()
    cachepilot.enable(pipe, "fixed:2", predictor="taylor:1")
    _, warned = _call(pipe)
    assert warned == []
    other = WanTransformer3DModel.from_config(pipe.transformer_2.config).eval()
    pipe.transformer_2 = other
    frames, warned = _call(pipe)
    assert len(warned) == 1 and "transformer_2" in warned[0] and "WanTransformer3DModel" in warned[0]
    assert "enable(pipe" in warned[0] and torch.isfinite(frames).all()
    assert get_engine(other) is None  # honestly uncached, and said so
    _, warned = _call(pipe)
    assert warned == []  # once per replacement
    cachepilot.enable(pipe, "fixed:2", predictor="taylor:1")
    _, warned = _call(pipe)
    stats = cachepilot.last_stats(pipe)
    assert warned == [] and get_engine(other) is not None
    assert stats.compute_fraction == 0.5 and stats.num_steps == 4


def test_swapping_the_first_transformer_warns_too():
    from diffusers import WanTransformer3DModel

    pipe = wan22_pipeline()
    cachepilot.enable(pipe, "fixed:2", predictor="taylor:1")
    pipe.transformer = WanTransformer3DModel.from_config(pipe.transformer.config).eval()
    _, warned = _call(pipe)
    assert len(warned) == 1 and "pipeline's transformer was replaced" in warned[0]


def test_the_warning_points_at_the_callers_line():
    from diffusers import WanTransformer3DModel

    pipe = wan22_pipeline()
    cachepilot.enable(pipe, "fixed:2", predictor="taylor:1")
    pipe.transformer_2 = WanTransformer3DModel.from_config(pipe.transformer_2.config).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe(**wan22_call_kwargs(), num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    warned = [w for w in caught if "was replaced after cachepilot.enable" in str(w.message)]
    assert len(warned) == 1 and warned[0].filename == __file__ and "runs uncached" in str(warned[0].message)
