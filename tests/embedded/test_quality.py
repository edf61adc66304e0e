"""The embedded models' own figures in the commands: the scenes pipeline is recognised by its directory, gets
its trained call and held-out prompts by default, and `generate` reports its prompt adherence."""

from types import SimpleNamespace

import torch

from cachepilot.embedded.base import call_kwargs_for, conditions_for, quality_for
from cachepilot.embedded.scenes.data import HELD_OUT_PAIRS
from cachepilot.embedded.scenes.model import SCENES, SCENES_DIR
from cachepilot.loading import load_pipeline

from ..tiny_pipelines import build_tiny_pipeline


def test_only_the_shipped_scenes_pipeline_is_recognised(tmp_path):
    scenes = load_pipeline(SCENES_DIR)
    assert SCENES.matches(scenes)
    assert call_kwargs_for(scenes)["true_cfg_scale"] > 1 and call_kwargs_for(scenes)["height"] == 32
    prompts = [c["prompt"] for c in conditions_for(scenes, 32)]
    assert all(any(f"{c} {s}" in p for c, s in HELD_OUT_PAIRS) for p in prompts)  # held-out pairs only
    other = load_pipeline(build_tiny_pipeline("flux", tmp_path / "flux"))
    assert not SCENES.matches(other)
    # the same checkpoint in another checkout (a git worktree's) is the scenes pipeline too; other directories not
    assert SCENES.matches(SimpleNamespace(name_or_path="/elsewhere/checkpoints/scenes-flux"))
    assert not SCENES.matches(SimpleNamespace(name_or_path="/elsewhere/runs/scenes-flux"))
    assert not SCENES.matches(SimpleNamespace(name_or_path=None))
    assert call_kwargs_for(other) == {} and conditions_for(other) is None
    assert quality_for(other) is None


def test_scenes_quality_scores_rendered_scenes_above_noise():
    from cachepilot.embedded.scenes.data import evaluation_prompts, render

    quality = quality_for(load_pipeline(SCENES_DIR))
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
