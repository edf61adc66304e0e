"""Load any supported pipeline: an embedded model's (the default, or a directory holding one) through that model,
every other through diffusers (`diffusers_loading`), with errors before any work.

The embedded models are asked through their interface (`cachepilot.embedded.base`), never imported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cachepilot.devices import check_device
from cachepilot.diffusers_loading import DTYPES, check_location, load_diffusers_pipeline, parse_dtype
from cachepilot.embedded.base import embedded_for_directory, get_embedded

__all__ = ["DTYPES", "load_pipeline", "parse_dtype"]


def load_pipeline(path_or_id: str | Path | None = None, device: str | torch.device = "cpu",
                  dtype: str | torch.dtype | None = None) -> Any:
    """The default embedded pipeline (the digits one) when no path is given; a directory holding an embedded model
    that needs its own loader through that model; any other diffusers pipeline whose transformer cachepilot
    supports through diffusers (checked before returning)."""
    check_device(device)
    parse_dtype(dtype)
    if path_or_id is None:
        return get_embedded().load(device=device)
    local = check_location(path_or_id)
    if local.exists():
        model = embedded_for_directory(local)
        if model is not None and model.own_loader:
            return model.load(local, device=device)
    return load_diffusers_pipeline(path_or_id, device=device, dtype=dtype)
