"""Batched sampling with one seed per image, and the PNG grid a person looks at.

Image i of a run uses `torch.Generator().manual_seed(seed + i)`, so an image depends only on its
seed and class, never on the batch it was drawn in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from cachepilot.embedded.digits.pipeline import DEFAULT_GUIDANCE_SCALE, DigitsDiTPipeline


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
    return driver.sample([{"class_labels": c} for c in labels], [seed + i for i in range(len(labels))]).images


def image_grid(images: torch.Tensor, ncols: int = 10, scale: int = 16, pad: int = 2) -> Image.Image:
    """Tile (N, 1, H, W) images in [0, 1] into one upscaled greyscale PIL image (nearest neighbour)."""
    n, _, h, w = images.shape
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    cell_h, cell_w = h * scale + pad, w * scale + pad
    canvas = np.full((nrows * cell_h + pad, ncols * cell_w + pad), 255, dtype=np.uint8)
    pixels = (images[:, 0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    pixels = 255 - pixels  # digits dataset: ink is high; draw dark ink on white
    for i in range(n):
        r, c = divmod(i, ncols)
        big = np.kron(pixels[i], np.ones((scale, scale), dtype=np.uint8))
        canvas[pad + r * cell_h: pad + r * cell_h + h * scale, pad + c * cell_w: pad + c * cell_w + w * scale] = big
    return Image.fromarray(canvas, mode="L")
