"""What the commands measure beyond PSNR / SSIM on the embedded models, and what they sample by default: the
functions the CLI calls, answered by the embedded-model interface (`cachepilot.embedded.base`). Generic code calls
`base.call_kwargs_for` / `conditions_for` / `quality_for` directly.
"""

from __future__ import annotations

from typing import Any

from cachepilot.embedded.base import Quality, call_kwargs_for, conditions_for, quality_for
from cachepilot.embedded.scenes.model import SCENES, SCENES_DIR, SCENES_TRUE_CFG

__all__ = ["Quality", "SCENES_DIR", "SCENES_TRUE_CFG", "default_call_kwargs", "default_conditions",
           "embedded_quality", "is_scenes_pipeline"]


def is_scenes_pipeline(pipe: Any) -> bool:
    """The shipped scenes FluxPipeline (this checkout's `checkpoints/scenes-flux` or another's), not any Flux."""
    return SCENES.matches(pipe)


embedded_quality = quality_for
default_call_kwargs = call_kwargs_for
default_conditions = conditions_for
