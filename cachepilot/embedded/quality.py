"""What the commands measure beyond PSNR / SSIM on the embedded models, and what they sample by default.

Users' pipelines get fidelity to full compute only; the two embedded models also have a judge of their own
(the digits classifier, the scenes' attribute judge), so `bench` and `generate` report class accuracy or
prompt adherence and a Fréchet distance in the judge's feature space, and the scenes pipeline is sampled on
its held-out prompts with the call it was trained for unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cachepilot.checkpoints import CHECKPOINTS_DIR

SCENES_DIR = CHECKPOINTS_DIR / "scenes-flux"
SCENES_TRUE_CFG = 4.0  # the guidance the scenes pipeline is demonstrated and benched at (best of its sweep)

Quality = Callable[[torch.Tensor, list[dict]], dict]


def is_scenes_pipeline(pipe: Any) -> bool:
    """The shipped scenes FluxPipeline (loaded from `checkpoints/scenes-flux`, this checkout's or another's, e.g.
    a git worktree's), not any FluxPipeline."""
    path = getattr(pipe, "name_or_path", None)
    if not path:
        return False
    resolved = Path(path).resolve()
    return resolved == SCENES_DIR.resolve() or resolved.parts[-2:] == SCENES_DIR.parts[-2:]


def embedded_quality(pipe: Any) -> Quality | None:
    """`fn(images, conditions) -> {metric: value}` for an embedded pipeline, None for any other."""
    from cachepilot.embedded.digits.pipeline import DigitsDiTPipeline

    if isinstance(pipe, DigitsDiTPipeline):
        from cachepilot.embedded.digits.data import load_digits_split
        from cachepilot.embedded.digits.loading import load_classifier
        from cachepilot.embedded.digits.metrics import digits_quality

        return digits_quality(load_classifier(), load_digits_split().held_out_images)
    if is_scenes_pipeline(pipe):
        from cachepilot.embedded.scenes.data import evaluation_prompts, render
        from cachepilot.embedded.scenes.judge import load_judge, scenes_quality

        _, scenes = evaluation_prompts(512, seed=1)  # the held-out distribution's rendered scenes
        return scenes_quality(load_judge(), render(scenes))
    return None


def default_call_kwargs(pipe: Any) -> dict:
    """The call an embedded pipeline expects when the user gives no --call-kwargs ({} for others)."""
    if is_scenes_pipeline(pipe):
        from cachepilot.embedded.scenes.pipeline import call_kwargs

        kwargs = call_kwargs(SCENES_TRUE_CFG)
        kwargs.pop("num_inference_steps")
        return kwargs
    return {}


def default_conditions(pipe: Any, n: int = 256) -> list[dict] | None:
    """Held-out prompts of the scenes pipeline (every one has a colour/shape pair never seen in training);
    None for other pipelines."""
    if is_scenes_pipeline(pipe):
        from cachepilot.embedded.scenes.data import evaluation_prompts

        return [{"prompt": caption} for caption in evaluation_prompts(n, seed=0)[0]]
    return None
