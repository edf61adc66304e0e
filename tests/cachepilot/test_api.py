import pytest
import torch

import cachepilot
from cachepilot.quality import psnr
from cachepilot.embedded.digits.sampling import sample_images


def test_always_compute_equals_the_unhooked_pipeline(pipe):
    classes = [0, 3, 6, 9]
    reference = sample_images(pipe, classes, seed=11, num_inference_steps=12)
    for guidance in (1.0, 2.0):  # conditional only, and batched [cond; uncond]
        reference = sample_images(pipe, classes, seed=11, num_inference_steps=12, guidance_scale=guidance)
        cachepilot.enable(pipe, "always")
        try:
            hooked = sample_images(pipe, classes, seed=11, num_inference_steps=12, guidance_scale=guidance)
        finally:
            cachepilot.disable(pipe)
        assert torch.equal(hooked, reference)
        assert cachepilot.last_stats(pipe) is None  # disabled: no engine left
    assert torch.equal(sample_images(pipe, classes, seed=11, num_inference_steps=12, guidance_scale=2.0), reference)


def test_fixed_interval_with_taylor_is_cheaper_and_close(pipe):
    classes = list(range(10))
    reference = sample_images(pipe, classes, seed=3, num_inference_steps=30)
    cachepilot.enable(pipe, "fixed:3", "taylor:1")
    try:
        cached = sample_images(pipe, classes, seed=3, num_inference_steps=30)
        stats = cachepilot.last_stats(pipe)
    finally:
        cachepilot.disable(pipe)
    assert stats.decisions.shape == (30, 10)
    assert stats.compute_fraction == pytest.approx(10 / 30)
    assert not torch.equal(cached, reference)
    assert psnr(cached, reference) > 30


def test_cfg_halves_share_decisions_in_the_pipeline(pipe):
    cachepilot.enable(pipe, "threshold:0.1")
    try:
        sample_images(pipe, [1, 2, 3], seed=0, num_inference_steps=10, guidance_scale=2.0)
        stats = cachepilot.last_stats(pipe)
    finally:
        cachepilot.disable(pipe)
    assert stats.decisions.shape == (10, 3)  # one decision per sample, not per [cond; uncond] row


def test_enable_rejects_bad_specs(pipe):
    with pytest.raises(cachepilot.InvalidInputError, match="unknown policy"):
        cachepilot.enable(pipe, "sometimes")
    with pytest.raises(cachepilot.InvalidInputError, match="order must be 0, 1, 1.5 or 2"):
        cachepilot.enable(pipe, "fixed:2", "taylor:3")
    assert cachepilot.last_stats(pipe) is None


def test_enable_on_a_compiled_transformer_hooks_the_real_blocks(pipe):
    """`torch.compile(pipe.transformer)` before `enable` is accepted (the wrapper is unwrapped) and gives the
    eager cached output (dynamo's eager backend: the plumbing, without a compiler in the test)."""
    from cachepilot.driver import unhooked_twin

    own = unhooked_twin(pipe)
    cachepilot.enable(own, "fixed:2", "taylor:1")
    eager = sample_images(own, [1, 2], seed=0, num_inference_steps=6)
    cachepilot.disable(own)
    own.transformer = torch.compile(own.transformer, backend="eager")
    cachepilot.enable(own, "fixed:2", "taylor:1")
    try:
        compiled = sample_images(own, [1, 2], seed=0, num_inference_steps=6)
        assert cachepilot.last_stats(own).compute_fraction == 0.5
    finally:
        cachepilot.disable(own)
    assert torch.equal(compiled, eager)


def test_importing_cachepilot_loads_no_torch_and_the_public_names_load_on_use():
    """`import cachepilot` stays light (PEP 562): torch, diffusers and the embedded models load on first use."""
    import subprocess
    import sys

    code = ("import sys, cachepilot\n"
            "print(any(m in sys.modules for m in ('torch', 'diffusers', 'cachepilot.embedded.digits.pipeline')))\n"
            "print(callable(cachepilot.enable), cachepilot.CacheCheckpoint.__name__, 'torch' in sys.modules)\n"
            "print(hasattr(cachepilot, 'DigitsDiTPipeline'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.split("\n")[:3] == ["False", "True CacheCheckpoint True", "False"], done.stderr[-800:]
