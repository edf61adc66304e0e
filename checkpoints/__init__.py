"""Embedded checkpoints, shipped as package data so `generate` works with no download.

`digits-dit/` is a diffusers pipeline directory (model_index.json, transformer/, scheduler/);
`digits-classifier/` is the reference classifier used for quality metrics.
"""

from importlib.resources import files
from pathlib import Path

CHECKPOINTS_DIR = Path(str(files(__name__)))
DEFAULT_PIPELINE = CHECKPOINTS_DIR / "digits-dit"
DEFAULT_CLASSIFIER = CHECKPOINTS_DIR / "digits-classifier"
