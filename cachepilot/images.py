"""The PNG grid a person looks at, for any pipeline's images (grey or RGB; a video shows its first frame)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def image_grid(images: torch.Tensor, ncols: int = 10, scale: int = 1, pad: int = 2,
               invert: bool = False) -> Image.Image:
    """Tile (N, C, H, W) images in [0, 1] (C = 1 or 3) into one PIL image, nearest-neighbour upscaled; invert:
    draw high values dark (ink-on-paper data such as the digits)."""
    if images.ndim == 5:
        images = images[:, 0]
    n, channels, h, w = images.shape
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    cell_h, cell_w = h * scale + pad, w * scale + pad
    canvas = np.full((nrows * cell_h + pad, ncols * cell_w + pad, 3), 255, dtype=np.uint8)
    pixels = (images.clamp(0, 1).float().cpu().numpy() * 255).round().astype(np.uint8)
    if invert:
        pixels = 255 - pixels
    pixels = np.repeat(pixels, 3, axis=1) if channels == 1 else pixels[:, :3]
    for i in range(n):
        r, c = divmod(i, ncols)
        big = pixels[i].transpose(1, 2, 0).repeat(scale, axis=0).repeat(scale, axis=1)
        canvas[pad + r * cell_h: pad + r * cell_h + h * scale, pad + c * cell_w: pad + c * cell_w + w * scale] = big
    return Image.fromarray(canvas, mode="RGB")
