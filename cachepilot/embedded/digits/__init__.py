"""The embedded digits model: a class-conditional pixel-space DiT on scikit-learn's 8x8 digits, its
pipeline class, its reference classifier and the classifier-based metrics (class accuracy, Fréchet
distance).

`cachepilot.embedded.digits.DigitsDiTPipeline` and `load_pipeline` load on first access (PEP 562): importing the
package (e.g. for the embedded-model registry) imports no diffusers.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {"DigitsDiTPipeline": "cachepilot.embedded.digits.pipeline",
         "load_pipeline": "cachepilot.embedded.digits.loading",
         "load_classifier": "cachepilot.embedded.digits.loading",
         "sample_images": "cachepilot.embedded.digits.sampling",
         "DIGITS": "cachepilot.embedded.digits.model"}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)
