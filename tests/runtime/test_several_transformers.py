"""Pipelines beyond one transformer called once per step: a transformer the engine cannot cache beside one
it can (cached, with a warning naming the other), and one `__call__` that denoises in two phases (both
reported by last_stats). The Wan 2.2 pipeline (two experts) is in tests/test_tiny_pipelines.py."""

import pytest
import torch
from diffusers.hooks.hooks import CacheContext, _set_cache_context

import cachepilot
from cachepilot.runtime.hooks import get_engine

from .tiny_models import build


class _Scheduler:
    def __init__(self):
        self.timesteps = None

    def set_timesteps(self, steps: int) -> None:
        self.timesteps = torch.linspace(900, 100, steps)  # a new tensor: a new denoising loop


class _TwoPhasePipeline:
    """Denoises twice in one call (as VisualCloze does: a generation phase, then an upsampling phase)."""

    def __init__(self, transformer, extra=None):
        self.transformer, self.scheduler = transformer, _Scheduler()
        self.components = {"transformer": transformer, "scheduler": self.scheduler, **(extra or {})}

    @torch.no_grad()
    def __call__(self, x, kwargs, steps=(4, 2)):
        for count in steps:
            self.scheduler.set_timesteps(count)
            self._num_timesteps = count
            for i, t in enumerate(self.scheduler.timesteps):
                _set_cache_context(self.transformer, CacheContext("cond", step_index=i, num_inference_steps=count))
                x = x - 0.1 * self.transformer(x, **kwargs(float(t))).sample
        return x


def test_both_phases_of_one_call_are_reported():
    model, x, kwargs = build("dit", batch=2)
    pipe = _TwoPhasePipeline(model)
    reference = pipe(x, kwargs)
    cachepilot.enable(pipe, "fixed:2", predictor="taylor:1")
    cached = pipe(x, kwargs)
    stats = cachepilot.last_stats(pipe)
    assert [p.num_steps for p in stats.phases] == [4, 2] and stats.num_steps == 6
    assert stats.executed_steps == 2 * (2 + 1) and stats.batch_size == 2
    assert not torch.equal(cached, reference)
    cachepilot.disable(pipe)
    assert torch.equal(pipe(x, kwargs), reference)


def test_an_uncacheable_transformer_beside_a_cacheable_one_is_named_and_the_rest_cached():
    model, x, kwargs = build("dit", batch=1)
    other = type("HiDreamImageTransformer2DModel", (torch.nn.Module,), {})()
    pipe = _TwoPhasePipeline(model, {"transformer_2": other})
    with pytest.warns(UserWarning, match=r"caches transformer but not the pipeline's transformer_2: .*HiDream"):
        cachepilot.enable(pipe, "fixed:2")
    assert get_engine(model) is not None and get_engine(other) is None
    pipe(x, kwargs, steps=(4,))
    assert cachepilot.last_stats(pipe).compute_fraction == 0.5
    cachepilot.disable(pipe)
    assert get_engine(model) is None and type(pipe) is _TwoPhasePipeline


def test_a_pipeline_without_its_first_transformer_caches_the_other():
    """Wan 2.2 with boundary_ratio 1.0 may hold transformer=None and only transformer_2."""
    model, x, kwargs = build("dit", batch=1)
    pipe = _TwoPhasePipeline(model)
    pipe.transformer, pipe.components["transformer"] = None, None
    pipe.components["transformer_2"] = model
    cachepilot.enable(pipe, "fixed:2", num_inference_steps=4)
    assert get_engine(model) is not None
    for i, t in enumerate(torch.linspace(900, 100, 4)):
        _set_cache_context(model, CacheContext("cond", step_index=i, num_inference_steps=4))
        with torch.no_grad():
            x = x - 0.1 * model(x, **kwargs(float(t))).sample
    assert cachepilot.last_stats(pipe).compute_fraction == 0.5
    cachepilot.disable(pipe)
    assert get_engine(model) is None


def test_a_pipeline_built_from_an_enabled_ones_class_runs():
    """`type(pipe).from_pipe(pipe, ...)` (the driver's unhooked twin) builds another pipeline of the class
    enable() swapped in: it runs as its base class does."""
    model, x, kwargs = build("dit", batch=1)
    pipe = _TwoPhasePipeline(model)
    cachepilot.enable(pipe, "always")
    plain, _, _ = build("dit", batch=1)
    twin = type(pipe)(plain)
    assert torch.equal(twin(x, kwargs), pipe(x, kwargs))
    cachepilot.disable(pipe)
