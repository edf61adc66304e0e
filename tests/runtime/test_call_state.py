"""Per-call state on real pipelines: a call starts clean whatever happened to the last one (an exception
mid-loop, another step count), the steps counted are the ones the pipeline runs (img2img), and CFG copies
are found per call."""

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline

import cachepilot

from ..tiny_pipelines import FAMILIES, build_tiny_pipeline, call_kwargs, example_condition


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipes")
    return {family: build_tiny_pipeline(family, root / family) for family in FAMILIES}


def _call(pipe, family, steps=4, seeds=(3, 4), **extra):
    conditions = [example_condition(family, i) for i in range(len(seeds))]
    key = "class_labels" if family == "dit" else "prompt"
    kwargs = {**call_kwargs(family), **extra, key: [c[key] for c in conditions]}
    return pipe(**kwargs, num_inference_steps=steps, output_type="np",
                generator=[torch.Generator().manual_seed(s) for s in seeds]).images


class Boom(Exception):
    pass


@pytest.mark.parametrize("family", FAMILIES)
def test_a_call_after_a_failed_call_equals_a_fresh_pipelines(built, family):
    fresh = DiffusionPipeline.from_pretrained(built[family], local_files_only=True)
    cachepilot.enable(fresh, policy="fixed:2", predictor="taylor:1")
    expected = _call(fresh, family)

    pipe = DiffusionPipeline.from_pretrained(built[family], local_files_only=True)
    cachepilot.enable(pipe, policy="fixed:2", predictor="taylor:1")
    blocks = pipe.transformer.transformer_blocks
    calls = {"n": 0}

    def explode(module, args):
        calls["n"] += 1
        if calls["n"] == 3:  # mid-loop, inside the cached stack
            raise Boom()

    handle = blocks[0].register_forward_pre_hook(explode)
    with pytest.raises(Boom):
        _call(pipe, family)
    handle.remove()
    _call(pipe, family, steps=3)  # another step count in between
    assert np.array_equal(_call(pipe, family), expected)
    stats = cachepilot.last_stats(pipe)
    assert stats.num_steps == 4 and stats.batch_size == 2


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_img2img_counts_the_steps_it_runs(built, family):
    from diffusers import FluxImg2ImgPipeline, StableDiffusion3Img2ImgPipeline

    pipeline_class = {"sd3": StableDiffusion3Img2ImgPipeline, "flux": FluxImg2ImgPipeline}[family]
    pipe = pipeline_class.from_pretrained(built[family], local_files_only=True)
    cachepilot.enable(pipe, policy="fixed:2", predictor="taylor:1")
    image = torch.rand(2, 3, 32, 32)
    kwargs = {k: v for k, v in call_kwargs(family).items() if k not in ("height", "width")}
    if family == "flux":
        kwargs.update(height=32, width=32)  # FluxImg2Img resizes the image to these

    def run():
        return pipe(prompt=["a red circle", "a blue square"], image=image, strength=0.6, num_inference_steps=10,
                    output_type="np", generator=[torch.Generator().manual_seed(s) for s in (1, 2)], **kwargs).images

    first = run()
    stats = cachepilot.last_stats(pipe)
    assert stats is not None and stats.num_steps == 6 and stats.batch_size == 2
    assert np.array_equal(run(), first)  # the identical call repeated gives the identical output


def test_explicit_cfg_copies_do_not_break_a_later_call_without_cfg(built):
    pipe = DiffusionPipeline.from_pretrained(built["pixart-sigma"], local_files_only=True)
    cachepilot.enable(pipe, policy="fixed:2", predictor="taylor:1", cfg_copies=2)
    _call(pipe, "pixart-sigma")
    assert cachepilot.last_stats(pipe).batch_size == 2
    _call(pipe, "pixart-sigma", seeds=(3,), guidance_scale=1.0)  # no CFG: one row
    assert cachepilot.last_stats(pipe).batch_size == 1


def test_nan_latents_are_reported_with_the_step(built):
    """NaN spreading through a cached call is a loud warning naming the step, read in the step's one sync."""
    pipe = DiffusionPipeline.from_pretrained(built["sd3"], local_files_only=True)
    cachepilot.enable(pipe, policy="threshold:0.1", predictor="taylor:1")
    blocks = pipe.transformer.transformer_blocks
    calls = {"n": 0}

    def poison(module, args, kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second step's stack input turns NaN
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            hidden[0] = float("nan")

    handle = blocks[0].register_forward_pre_hook(poison, with_kwargs=True)
    try:
        with pytest.warns(RuntimeWarning, match="NaN or inf .* at step 1 of 4"):
            _call(pipe, "sd3")
    finally:
        handle.remove()


def test_true_cfg_call_reports_every_context(built):
    """Flux true CFG runs the transformer in a "cond" and an "uncond" context per step: the call's stats hold
    both, and count both contexts' stack calls."""
    pipe = DiffusionPipeline.from_pretrained(built["flux"], local_files_only=True)
    cachepilot.enable(pipe, policy="fixed:2", predictor="taylor:1")
    _call(pipe, "flux", steps=4, negative_prompt=["", ""], true_cfg_scale=2.0)
    stats = cachepilot.last_stats(pipe)
    assert set(stats.contexts) == {"cond", "uncond"}
    assert stats.batch_size == 2 and stats.num_steps == 4
    assert stats.executed_steps == sum(c.executed_steps for c in stats.contexts.values()) == 2 * 2 * 2
    assert stats.compute_fraction == 0.5
    assert set(stats.summary()["contexts"]) == {"cond", "uncond"}
    _call(pipe, "flux", steps=4)  # no true CFG: one context again
    assert not cachepilot.last_stats(pipe).contexts and cachepilot.last_stats(pipe).batch_size == 2


def test_true_cfg_contexts_share_one_decision_per_step(built):
    """The "uncond" context takes the actions the "cond" context decided at the same step (as batched CFG
    copies share one): the policy decides once per step, the two contexts' decisions are identical."""
    from cachepilot.policies.baselines import Threshold

    class Counting(Threshold):
        decided = 0

        def decide(self, obs):
            Counting.decided += 1
            return super().decide(obs)

    pipe = DiffusionPipeline.from_pretrained(built["flux"], local_files_only=True)
    cachepilot.enable(pipe, policy=Counting(0.5), predictor="taylor:1")
    _call(pipe, "flux", steps=6, negative_prompt=["", ""], true_cfg_scale=2.0)
    stats = cachepilot.last_stats(pipe)
    assert Counting.decided == 6
    assert torch.equal(stats.contexts["cond"].decisions, stats.contexts["uncond"].decisions)
    assert 0 < stats.compute_fraction < 1


def test_true_cfg_with_one_negative_prompt_for_the_batch(built):
    """`negative_prompt=""` (one string for a batch of prompts) gives the "uncond" context a text stream of one
    row; steps where one sample computes and the other skips still merge the streams."""
    from cachepilot.policies.baselines import Schedule

    pipe = DiffusionPipeline.from_pretrained(built["flux"], local_files_only=True)
    cachepilot.enable(pipe, policy=Schedule([[1, 1, 0, 1], [1, 0, 1, 1]]), predictor="taylor:1")
    images = _call(pipe, "flux", steps=4, negative_prompt="", true_cfg_scale=2.0)
    stats = cachepilot.last_stats(pipe)
    assert np.isfinite(images).all() and set(stats.contexts) == {"cond", "uncond"}
    assert stats.computes_per_sample.tolist() == [3, 3, 3, 3]  # (context, sample) columns
