"""cachepilot: learned caching decisions for diffusion transformers.

`import cachepilot` stays light (no torch, no diffusers): the public names load on first use (PEP 562), so the
CLI's `--help` and tools that only need the errors start at once. The embedded models are not re-exported here:
their pipelines live at `cachepilot.embedded.digits.pipeline.DigitsDiTPipeline` and
`cachepilot.embedded.scenes.pipeline`, behind the interface in `cachepilot.embedded.base`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from cachepilot.errors import CachepilotError, CheckpointError, InvalidInputError

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first access)
_LAZY = {
    "enable": "cachepilot.api",
    "disable": "cachepilot.api",
    "last_stats": "cachepilot.api",
    "CacheCheckpoint": "cachepilot.cache_checkpoint",
    "load_pipeline": "cachepilot.loading",
}

__all__ = ["CacheCheckpoint", "CachepilotError", "CheckpointError", "InvalidInputError", "__version__", "disable",
           "enable", "last_stats", "load_pipeline"]

if TYPE_CHECKING:
    from cachepilot.api import disable, enable, last_stats
    from cachepilot.cache_checkpoint import CacheCheckpoint
    from cachepilot.loading import load_pipeline


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cachepilot' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
