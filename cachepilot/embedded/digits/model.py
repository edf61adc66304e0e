"""The digits model behind the embedded-model interface: a class-conditional DiT on 8x8 digits, judged by the
shipped classifier (class accuracy, Fréchet distance in its features)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cachepilot.checkpoints import DEFAULT_CACHE, DEFAULT_PIPELINE
from cachepilot.embedded.base import EmbeddedModel, Quality
from cachepilot.records import read_json_object

PIPELINE_CLASS = "DigitsDiTPipeline"


class DigitsModel(EmbeddedModel):
    name = "digits"
    pipeline_dir = DEFAULT_PIPELINE
    cache_dir = DEFAULT_CACHE
    training = "cachepilot train backbone && cachepilot train classifier"
    own_loader = True  # DigitsDiTPipeline is not a diffusers class: diffusers cannot load it by name

    def matches(self, pipe: Any) -> bool:
        from cachepilot.embedded.digits.pipeline import DigitsDiTPipeline

        return isinstance(pipe, DigitsDiTPipeline)

    def matches_directory(self, path: Path) -> bool:
        index = Path(path) / "model_index.json"
        return index.is_file() and read_json_object(index).get("_class_name") == PIPELINE_CLASS

    def load(self, path: str | Path | None = None, device: str | torch.device = "cpu") -> Any:
        from cachepilot.embedded.digits.loading import load_digits_pipeline

        return load_digits_pipeline(path, device=device)

    def conditions(self, n: int = 256) -> list[dict] | None:
        """None: every class, as for any class-conditional pipeline (`conditions.pipeline_conditions`)."""
        return None

    def quality(self) -> Quality:
        from cachepilot.embedded.digits.data import load_digits_split
        from cachepilot.embedded.digits.loading import load_classifier
        from cachepilot.embedded.digits.metrics import digits_quality

        return digits_quality(load_classifier(), load_digits_split().held_out_images)


DIGITS = DigitsModel()
