"""Embedded checkpoints, shipped as package data so `generate` works with no download.

`digits-dit/` is a diffusers pipeline directory (model_index.json, transformer/, scheduler/);
`digits-classifier/` is the reference classifier used for quality metrics;
`digits-dit-cache/predictors/` the learned forecaster head for digits-dit.
"""

from importlib.resources import files
from pathlib import Path

CHECKPOINTS_DIR = Path(str(files(__name__)))
DEFAULT_PIPELINE = CHECKPOINTS_DIR / "digits-dit"
DEFAULT_CLASSIFIER = CHECKPOINTS_DIR / "digits-classifier"
DEFAULT_CACHE = CHECKPOINTS_DIR / "digits-dit-cache"  # learned cache artefacts for digits-dit
DEFAULT_PREDICTOR = DEFAULT_CACHE / "predictors"
DEFAULT_POLICY = DEFAULT_CACHE / "policy"
