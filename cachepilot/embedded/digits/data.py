"""scikit-learn's bundled digits, split once and for all into train / held-out.

Every consumer (backbone training, the reference classifier, the Fréchet floor) takes the split
from here, so the held-out images are never seen by any model that is evaluated on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

NUM_CLASSES = 10
IMAGE_SIZE = 8
HELD_OUT_FRACTION = 0.15
SPLIT_SEED = 0


@dataclass(frozen=True)
class DigitsSplit:
    """Images in [0, 1], shape (N, 1, 8, 8), float32; labels int64."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    held_out_images: torch.Tensor
    held_out_labels: torch.Tensor


def load_digits_split(held_out_fraction: float = HELD_OUT_FRACTION, seed: int = SPLIT_SEED) -> DigitsSplit:
    """Stratified split of the 1,797 digits; deterministic for a given seed."""
    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[:, None]  # raw pixel values are 0..16
    labels = digits.target.astype(np.int64)
    x_tr, x_ho, y_tr, y_ho = train_test_split(
        images, labels, test_size=held_out_fraction, stratify=labels, random_state=seed
    )
    return DigitsSplit(
        torch.from_numpy(x_tr), torch.from_numpy(y_tr), torch.from_numpy(x_ho), torch.from_numpy(y_ho)
    )


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], the range the diffusion model is trained in."""
    return images * 2.0 - 1.0


def to_image_range(samples: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return (samples / 2.0 + 0.5).clamp(0.0, 1.0)
