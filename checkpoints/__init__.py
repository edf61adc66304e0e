"""Shipped checkpoints, as package data so `generate` works with no download: data paths only, no model code.

`digits-dit/` is a diffusers pipeline directory (model_index.json, transformer/, scheduler/) and
`digits-classifier/` its reference classifier; `digits-dit-cache/` the cache checkpoint for it (policy/,
predictors/, searched schedules), the default of `CacheCheckpoint.from_pretrained()` and of the bare `learned`
policy / predictor specs. `scenes-flux/`, `scenes-judge/` and `scenes-flux-cache/` are the scenes model's; each
embedded model names its own directories (`cachepilot.embedded.base.EmbeddedModel`).
"""

from importlib.resources import files
from pathlib import Path

CHECKPOINTS_DIR = Path(str(files(__name__)))
DEFAULT_PIPELINE = CHECKPOINTS_DIR / "digits-dit"
DEFAULT_CLASSIFIER = CHECKPOINTS_DIR / "digits-classifier"
DEFAULT_CACHE = CHECKPOINTS_DIR / "digits-dit-cache"  # the default cache checkpoint (for digits-dit)
DEFAULT_PREDICTOR = DEFAULT_CACHE / "predictors"
DEFAULT_POLICY = DEFAULT_CACHE / "policy"
