"""cachepilot: learned caching decisions for diffusion transformers."""

from cachepilot.api import disable, enable, last_stats
from cachepilot.errors import CachepilotError, CheckpointError, InvalidInputError
from cachepilot.embedded.digits.pipeline import DigitsDiTPipeline

__version__ = "0.1.0"

__all__ = [
    "disable", "enable", "last_stats","CachepilotError", "CheckpointError", "DigitsDiTPipeline", "InvalidInputError", "__version__"]
