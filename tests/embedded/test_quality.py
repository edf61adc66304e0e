"""The embedded models' own figures in the commands: the scenes pipeline is recognised by its directory, gets
its trained call and held-out prompts by default, and `generate` reports its prompt adherence."""

from types import SimpleNamespace

import torch

from cachepilot.embedded.quality import (
    SCENES_DIR, default_call_kwargs, default_conditions, embedded_quality, is_scenes_pipeline,
)
from cachepilot.embedded.scenes.data import HELD_OUT_PAIRS
from cachepilot.loading import load_pipeline

from ..tiny_pipelines import build_tiny_pipeline


def test_only_the_shipped_scenes_pipeline_is_recognised(tmp_path):
    scenes = load_pipeline(SCENES_DIR)
    assert is_scenes_pipeline(scenes)
    assert default_call_kwargs(scenes)["true_cfg_scale"] > 1 and default_call_kwargs(scenes)["height"] == 32
    prompts = [c["prompt"] for c in default_conditions(scenes, 32)]
    assert all(any(f"{c} {s}" in p for c, s in HELD_OUT_PAIRS) for p in prompts)  # held-out pairs only
    other = load_pipeline(build_tiny_pipeline("flux", tmp_path / "flux"))
    assert not is_scenes_pipeline(other)
    # the same checkpoint in another checkout (a git worktree's) is the scenes pipeline too; other directories not
    assert is_scenes_pipeline(SimpleNamespace(name_or_path="/elsewhere/checkpoints/scenes-flux"))
    assert not is_scenes_pipeline(SimpleNamespace(name_or_path="/elsewhere/runs/scenes-flux"))
    assert not is_scenes_pipeline(SimpleNamespace(name_or_path=None))
    assert default_call_kwargs(other) == {} and default_conditions(other) is None
    assert embedded_quality(other) is None


def test_scenes_quality_scores_rendered_scenes_above_noise():
    from cachepilot.embedded.scenes.data import evaluation_prompts, render

    quality = embedded_quality(load_pipeline(SCENES_DIR))
    captions, scenes = evaluation_prompts(16, seed=3)
    conditions = [{"prompt": c} for c in captions]
    rendered = quality(render(scenes), conditions)
    noise = quality(torch.rand(16, 3, 32, 32), conditions)
    assert rendered["adherence"] > 0.9 > noise["adherence"] + 0.3


def test_generate_reports_adherence_on_the_scenes_pipeline(tmp_path):
    from cachepilot.cli.generate import generate

    prompts = ["a large red circle", "a small blue square above a large yellow cross"]
    result = generate([{"prompt": p} for p in prompts], tmp_path / "grid.png", pipeline=SCENES_DIR, steps=4,
                      policy="fixed:2", predictor="taylor:1")
    assert result["call_kwargs"]["true_cfg_scale"] > 1  # the trained call, not FluxPipeline's defaults
    for side in ("full_quality", "cached_quality"):
        assert 0.0 <= result[side]["adherence"] <= 1.0
    assert (tmp_path / "grid.png").is_file() and (tmp_path / "grid_full.png").is_file()
    assert result["compute_fraction"] == 0.5
