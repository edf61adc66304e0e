"""The reference digits classifier: the judge of generated samples (class accuracy, Fréchet distance).

A small CNN saved diffusers-style (`ModelMixin`/`ConfigMixin`: config.json + safetensors), so it
loads like the backbone and ships in `checkpoints/` with no pickles.
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn


class DigitsClassifier(ModelMixin, ConfigMixin):
    """Input (N, 1, 8, 8) in [0, 1]; `features` is the penultimate layer used for Fréchet distances."""

    @register_to_config
    def __init__(self, num_classes: int = 10, width: int = 32, feature_dim: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            nn.Flatten(),
            nn.Linear(2 * width * 16, feature_dim), nn.ReLU(),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, num_classes)

    @property
    def num_features(self) -> int:
        return int(self.config.feature_dim)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images.float())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(images)))
