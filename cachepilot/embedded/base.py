"""The one small interface every embedded model sits behind, and the registry generic code asks.

Code that serves every pipeline (loading, the commands, the bench, `fit`) never imports an embedded model: it asks
`embedded_for(pipe)` / `embedded_for_directory(path)` whether a pipeline is one of ours, and that model answers how
it is loaded, the call it was trained for, the conditions it is sampled on by default, its own quality judge and
how it is trained. This module imports no model code at import time (each model is loaded when first asked), so
importing it costs nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import cache
from importlib import import_module
from pathlib import Path
from typing import Any

import torch

from cachepilot.checkpoints import CHECKPOINTS_DIR

Quality = Callable[[torch.Tensor, list[dict]], dict]  # fn(images, conditions) -> {metric: value}


class EmbeddedModel(ABC):
    """An embedded model: its shipped pipeline and cache checkpoint directories and what generic code asks of it.

    name: the registry key; pipeline_dir / cache_dir: the shipped pipeline and cache checkpoint; training: the
    command that trains it from scratch (a person runs it; generic code only names it)."""


    name: str
    pipeline_dir: Path
    cache_dir: Path
    training: str
    own_loader: bool = False  # a pipeline class of its own: `loading.load_pipeline` hands its directories to `load`

    @abstractmethod
    def matches(self, pipe: Any) -> bool:
        """Whether a loaded pipeline is this model (not merely one of the same class)."""

    @abstractmethod
    def matches_directory(self, path: Path) -> bool:
        """Whether a pipeline directory holds this model (read before loading: some need their own loader)."""

    @abstractmethod
    def load(self, path: str | Path | None = None, device: str | torch.device = "cpu") -> Any:
        """The pipeline (the shipped one by default), checked before it is returned."""

    def call_kwargs(self) -> dict:
        """The call the model was trained for, less num_inference_steps (a user's --call-kwargs override it)."""
        return {}

    def conditions(self, n: int = 256) -> list[dict] | None:
        """Held-out conditions the commands sample by default (None: the caller must say)."""
        return None

    @abstractmethod
    def quality(self) -> Quality:
        """`fn(images, conditions) -> {metric: value}` in the model's own judge (beyond PSNR / SSIM)."""


# name -> "module:attribute" of the model object, read on first use (as package entry points name plugins): the
# interface sits below the models it lists, so a generic module that asks it imports no model code.
REGISTRY = {"digits": "cachepilot.embedded.digits.model:DIGITS", "scenes": "cachepilot.embedded.scenes.model:SCENES"}


@cache
def _models() -> dict[str, EmbeddedModel]:
    models = {}
    for name, target in REGISTRY.items():
        module, _, attribute = target.partition(":")
        models[name] = getattr(import_module(module), attribute)
    return models


DEFAULT_MODEL = "digits"  # what `load_pipeline()` with no path loads: the smallest, fastest to sample


def embedded_models() -> list[EmbeddedModel]:
    return list(_models().values())


def get_embedded(name: str = DEFAULT_MODEL) -> EmbeddedModel:
    models = _models()
    if name not in models:
        from cachepilot.errors import InvalidInputError

        raise InvalidInputError(f"no embedded model {name!r}: one of {sorted(models)}")
    return models[name]


def embedded_for(pipe: Any) -> EmbeddedModel | None:
    """The embedded model a loaded pipeline is, None for any other pipeline."""
    return next((model for model in embedded_models() if model.matches(pipe)), None)


def embedded_for_directory(path: str | Path) -> EmbeddedModel | None:
    """The embedded model a pipeline directory holds, None for any other."""
    path = Path(path)
    return next((model for model in embedded_models() if model.matches_directory(path)), None)


def is_shipped_directory(path: str | Path | None, shipped: Path) -> bool:
    """`path` is the shipped directory `shipped`: this checkout's, or the same checkpoint in another checkout (a
    git worktree's), i.e. the same last two path parts (`checkpoints/<name>`)."""
    if not path:
        return False
    resolved = Path(path).resolve()
    return resolved == shipped.resolve() or resolved.parts[-2:] == shipped.parts[-2:]


def call_kwargs_for(pipe: Any) -> dict:
    """The call an embedded pipeline expects when the user gives none ({} for other pipelines)."""
    model = embedded_for(pipe)
    return model.call_kwargs() if model is not None else {}


def conditions_for(pipe: Any, n: int = 256) -> list[dict] | None:
    """An embedded pipeline's default held-out conditions; None for other pipelines."""
    model = embedded_for(pipe)
    return model.conditions(n) if model is not None else None


def quality_for(pipe: Any) -> Quality | None:
    """An embedded pipeline's own quality judge; None for other pipelines (fidelity to full compute only)."""
    model = embedded_for(pipe)
    return model.quality() if model is not None else None


__all__ = ["CHECKPOINTS_DIR", "DEFAULT_MODEL", "EmbeddedModel", "Quality", "call_kwargs_for", "conditions_for",
           "embedded_for", "embedded_for_directory", "embedded_models", "get_embedded", "is_shipped_directory",
           "quality_for"]
