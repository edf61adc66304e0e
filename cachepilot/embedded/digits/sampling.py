"""Batched sampling with one seed per image, and the digits' PNG grid (the generic grid, drawn as ink on paper).

Image i of a run uses `torch.Generator().manual_seed(seed + i)`, so an image depends only on its
seed and class, never on the batch it was drawn in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from cachepilot.embedded.digits.pipeline import DEFAULT_GUIDANCE_SCALE, DigitsDiTPipeline
from cachepilot.finite import check_finite
from cachepilot.images import image_grid as tile


def sample_images(
    pipe: DigitsDiTPipeline,
    class_labels: Sequence[int],
    seed: int = 0,
    num_inference_steps: int = 50,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    batch_size: int = 256,
) -> torch.Tensor:
    """(N, 1, H, W) in [0, 1]; sample i seeded with seed + i (through the generic sampling driver)."""
    from cachepilot.driver import SamplingDriver

    labels = [int(c) for c in class_labels]
    driver = SamplingDriver(pipe, num_inference_steps, {"guidance_scale": guidance_scale}, batch_size=batch_size)
    images = driver.sample([{"class_labels": c} for c in labels], [seed + i for i in range(len(labels))]).images
    # as the CLI: diverged samples (e.g. guidance 1e38) are an error here, not all-NaN images returned quietly
    check_finite(images, f"the generated images (guidance {guidance_scale:g}, {num_inference_steps} steps)")
    return images


def digits_grid(images: torch.Tensor, ncols: int = 10, scale: int = 16, pad: int = 2) -> Image.Image:
    """The digits' grid: `cachepilot.images.image_grid` with dark ink on white, upscaled 16x (8x8 images)."""
    return tile(images, ncols=ncols, scale=scale, pad=pad, invert=True)

