"""The tiny offline pipelines of `tiny_pipelines`: build, save, load, run, determinism, cachepilot."""

from __future__ import annotations

import hashlib
import pathlib

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from diffusers import DiffusionPipeline  # noqa: E402

from .tiny_pipelines import (  # noqa: E402
    FAMILIES, build_tiny_pipeline, call_kwargs, collate_conditions, example_condition)

STEPS, BATCH = 3, 2


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from intra-op threads; on a contended 2-vCPU machine 2 threads made the
    3-step calls ~50x slower (2 s instead of 0.03 s). Restored afterwards for the rest of the session."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, pathlib.Path]:
    root = tmp_path_factory.mktemp("tiny_pipelines")
    return {family: build_tiny_pipeline(family, root / family) for family in FAMILIES}


def _load(path: pathlib.Path) -> DiffusionPipeline:
    pipe = DiffusionPipeline.from_pretrained(path, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _call(pipe: DiffusionPipeline, family: str, **extra) -> np.ndarray:
    conditions = collate_conditions([example_condition(family, i) for i in range(BATCH)])
    generator = [torch.Generator().manual_seed(seed) for seed in range(BATCH)]
    out = pipe(**conditions, **call_kwargs(family), num_inference_steps=STEPS, generator=generator,
               output_type="np", **extra)
    return out.images


def _weights_digest(path: pathlib.Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*.safetensors"))}


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_runs_and_is_deterministic(built, family):
    pipe = _load(built[family])
    assert all(not m.training for m in pipe.components.values() if isinstance(m, torch.nn.Module))
    first = _call(pipe, family)
    assert first.shape == (BATCH, 32, 32, 3)
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, _call(pipe, family))
    # per-sample generators: the two samples differ
    assert not np.array_equal(first[0], first[1])


@pytest.mark.parametrize("family", FAMILIES)
def test_same_call_gives_same_weights(built, tmp_path, family):
    again = build_tiny_pipeline(family, tmp_path / family)
    assert again == tmp_path / family
    digest = _weights_digest(again)
    assert digest and digest == _weights_digest(built[family])


@pytest.mark.parametrize("family", FAMILIES)
def test_step_callback_sees_the_batch(built, family):
    """flux / sd3: `callback_on_step_end`; pixart-sigma only has the legacy `callback` (its **kwargs would
    swallow `callback_on_step_end` silently); DiTPipeline has no callback: watch the transformer instead."""
    pipe = _load(built[family])
    seen: list[torch.Tensor] = []
    if family in ("flux", "sd3"):
        def on_step_end(pipeline, step, timestep, tensors):
            seen.append(tensors["latents"])
            return tensors

        _call(pipe, family, callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"])
    elif family == "pixart-sigma":
        _call(pipe, family, callback=lambda step, t, latents: seen.append(latents), callback_steps=1)
    else:
        handle = pipe.transformer.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
        try:
            _call(pipe, family)
        finally:
            handle.remove()
        assert all(x.shape[0] == 2 * BATCH for x in seen)  # CFG: [cond; null class]
        seen = [x[:BATCH] for x in seen]
    assert len(seen) == STEPS
    assert all(isinstance(x, torch.Tensor) and x.shape[0] == BATCH for x in seen)


@pytest.mark.parametrize("family", FAMILIES)
def test_cachepilot_enable_runs(built, family):
    import cachepilot

    pipe = _load(built[family])
    reference = _call(pipe, family)
    cachepilot.enable(pipe, policy="fixed:2", predictor="taylor:1")
    try:
        cached = _call(pipe, family)
        stats = cachepilot.last_stats(pipe)
    finally:
        cachepilot.disable(pipe)
    assert cached.shape == reference.shape
    assert np.isfinite(cached).all()
    assert stats is not None
    np.testing.assert_array_equal(_call(pipe, family), reference)  # disable restores the plain model


# PixArtSigmaPipeline and DiTPipeline run CFG as one [2B] batch but, unlike SD3, expose no
# `do_classifier_free_guidance` attribute: the engine finds the copies from the batch layout (both halves
# hold the same latents), per call.
_CFG_NOT_DETECTED = {"pixart-sigma", "dit"}


@pytest.mark.parametrize("family", FAMILIES)
def test_cachepilot_counts_samples_not_cfg_rows(built, family):
    import cachepilot

    pipe = _load(built[family])
    cachepilot.enable(pipe, policy="fixed:2", predictor="taylor:1")
    _call(pipe, family)
    stats = cachepilot.last_stats(pipe)
    assert stats is not None and stats.batch_size == BATCH and stats.num_steps == STEPS


@pytest.mark.parametrize("family", sorted(_CFG_NOT_DETECTED))
def test_cachepilot_explicit_cfg_copies(built, family):
    """An explicit cfg_copies=2 is honoured where the batch holds copies."""
    import cachepilot

    pipe = _load(built[family])
    cachepilot.enable(pipe, policy="fixed:2", predictor="taylor:1", cfg_copies=2)
    images = _call(pipe, family)
    stats = cachepilot.last_stats(pipe)
    assert np.isfinite(images).all()
    assert stats is not None and stats.batch_size == BATCH and stats.num_steps == STEPS


@pytest.fixture(scope="module")
def wan22():
    from .tiny_pipelines import wan22_pipeline

    return wan22_pipeline()


def _wan22_call(pipe) -> torch.Tensor:
    from .tiny_pipelines import wan22_call_kwargs

    return pipe(**wan22_call_kwargs(), num_inference_steps=4, generator=torch.Generator().manual_seed(0)).frames


def test_wan22_caches_both_experts_and_reports_the_whole_call(wan22):
    """Wan 2.2: `transformer` runs the two high-noise steps, `transformer_2` the two others (CFG: a cond and an
    uncond call each). Both are cached, and last_stats counts both experts: fixed:2 computes half of them."""
    import cachepilot
    from cachepilot.runtime.hooks import get_engine

    reference = _wan22_call(wan22)
    cachepilot.enable(wan22, "always")
    try:
        assert get_engine(wan22.transformer) is not None and get_engine(wan22.transformer_2) is not None
        assert torch.equal(_wan22_call(wan22), reference)
        cachepilot.enable(wan22, "fixed:2", predictor="taylor:1")
        cached = _wan22_call(wan22)
        stats = cachepilot.last_stats(wan22)
        assert stats is not None and len(stats.phases) == 2  # one part per expert
        assert stats.num_steps == 4 and stats.batch_size == 1 and stats.compute_fraction == 0.5
        assert [p.num_steps for p in stats.phases] == [2, 2]
        assert not torch.equal(cached, reference)
        assert torch.equal(_wan22_call(wan22), cached)
    finally:
        cachepilot.disable(wan22)
    assert get_engine(wan22.transformer) is None and get_engine(wan22.transformer_2) is None
    assert type(wan22).__name__ == "WanPipeline" and "_cachepilot_base" not in type(wan22).__dict__
    assert torch.equal(_wan22_call(wan22), reference)


def test_a_checkpoint_on_a_pipeline_of_several_transformers_is_refused_clearly(wan22):
    import cachepilot
    from cachepilot.runtime.adapters import UnsupportedModelError
    from cachepilot.runtime.hooks import get_engine

    with pytest.raises(UnsupportedModelError, match=r"runs several \(transformer, transformer_2\)"):
        cachepilot.enable(wan22, checkpoint="unused", speed=0.3)
    assert get_engine(wan22.transformer) is None
