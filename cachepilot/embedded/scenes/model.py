"""The scenes model behind the embedded-model interface: an unmodified tiny `FluxPipeline` on captioned 32x32
scenes, sampled with the call it was trained for and judged by the attribute judge (prompt adherence)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cachepilot.checkpoints import CHECKPOINTS_DIR
from cachepilot.embedded.base import EmbeddedModel, Quality, is_shipped_directory

SCENES_DIR = CHECKPOINTS_DIR / "scenes-flux"
SCENES_TRUE_CFG = 4.0  # the guidance the scenes pipeline is demonstrated and benched at (best of its sweep)


class ScenesModel(EmbeddedModel):
    name = "scenes"
    pipeline_dir = SCENES_DIR
    cache_dir = CHECKPOINTS_DIR / "scenes-flux-cache"
    training = "python -m cachepilot.embedded.scenes.train"

    def matches(self, pipe: Any) -> bool:
        """The shipped scenes FluxPipeline (loaded from `checkpoints/scenes-flux`, this checkout's or another's),
        not any FluxPipeline."""
        return is_shipped_directory(getattr(pipe, "name_or_path", None), SCENES_DIR)

    def matches_directory(self, path: Path) -> bool:
        return is_shipped_directory(path, SCENES_DIR)

    def load(self, path: str | Path | None = None, device: str | torch.device = "cpu") -> Any:
        """A plain diffusers FluxPipeline: the generic diffusers loader reads it."""
        from cachepilot.diffusers_loading import load_diffusers_pipeline

        return load_diffusers_pipeline(path if path is not None else SCENES_DIR, device=device)

    def call_kwargs(self) -> dict:
        """height=32, width=32, max_sequence_length=16, negative_prompt="", true_cfg_scale=4."""
        from cachepilot.embedded.scenes.pipeline import call_kwargs

        kwargs = call_kwargs(SCENES_TRUE_CFG)
        kwargs.pop("num_inference_steps")
        return kwargs

    def conditions(self, n: int = 256) -> list[dict] | None:
        """Held-out prompts (every one has a colour/shape pair never seen in training)."""
        from cachepilot.embedded.scenes.data import evaluation_prompts

        return [{"prompt": caption} for caption in evaluation_prompts(n, seed=0)[0]]

    def quality(self) -> Quality:
        from cachepilot.embedded.scenes.data import evaluation_prompts, render
        from cachepilot.embedded.scenes.judge import load_judge, scenes_quality

        _, scenes = evaluation_prompts(512, seed=1)  # the held-out distribution's rendered scenes
        return scenes_quality(load_judge(), render(scenes))


SCENES = ScenesModel()
