"""Load a diffusers pipeline (a local directory or a hub id) whose transformer cachepilot supports, with errors
before any work: diffusers' `DiffusionPipeline.from_pretrained`, so a hub id works for users with network and a
local directory works offline. Generic: it knows no embedded model (`loading.load_pipeline` routes to those).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cachepilot.devices import check_device
from cachepilot.errors import CheckpointError, InvalidInputError
from cachepilot.finite import check_finite_weights, check_strict_load
from cachepilot.records import read_json_object

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    if name is None or isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise InvalidInputError(f"unknown dtype {name!r}: use one of {sorted(DTYPES)}")
    return DTYPES[name]


def pipeline_class(path: Path) -> str | None:
    """The `_class_name` of a pipeline directory's model_index.json (None without one)."""
    index = path / "model_index.json"
    if not index.is_file():
        return None
    content = read_json_object(index)
    entry = content.get("transformer")
    if entry is not None and not (
            isinstance(entry, list) and len(entry) == 2 and all(e is None or isinstance(e, str) for e in entry)):
        raise CheckpointError(f"{index}: the transformer entry must be [library, class], got {entry!r}")
    return content.get("_class_name")


def check_location(path_or_id: str | Path) -> Path:
    """The local directory (checked to be a pipeline directory), or the path of a plausible hub id (org/name)."""
    local = Path(path_or_id)
    if local.exists():
        if not local.is_dir():
            raise CheckpointError(f"a pipeline must be a directory, got the file {local}")
        if pipeline_class(local) is None:
            raise CheckpointError(f"{local} is not a diffusers pipeline directory (model_index.json is missing)")
    elif str(path_or_id).startswith((".", "/")) or str(path_or_id).count("/") != 1:
        raise CheckpointError(f"pipeline not found: {path_or_id} is neither a directory nor a hub id (org/name)")
    return local


def load_diffusers_pipeline(path_or_id: str | Path, device: str | torch.device = "cpu",
                            dtype: str | torch.dtype | None = None) -> Any:
    """Any diffusers pipeline whose transformer cachepilot supports (checked before returning)."""
    from cachepilot.runtime.adapters import get_adapter

    check_device(device)
    torch_dtype = parse_dtype(dtype)
    local = check_location(path_or_id)
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    kwargs = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
    try:
        pipe = DiffusionPipeline.from_pretrained(str(path_or_id), local_files_only=local.exists(), **kwargs)
    except Exception as err:  # missing files, corrupt weights, no network for a hub id
        raise CheckpointError(f"the pipeline {path_or_id} could not be loaded: {err}".splitlines()[0]) from err
    finally:
        diffusers_logging.enable_progress_bar()
    transformer = getattr(pipe, "transformer", None)
    if not isinstance(transformer, torch.nn.Module):
        raise CheckpointError(f"{path_or_id} ({type(pipe).__name__}) has no `transformer` for cachepilot to cache")
    get_adapter(transformer)  # unsupported families fail here, naming the supported ones
    if local.exists() and (local / "transformer").is_dir():
        check_strict_load(transformer, local / "transformer", "the transformer")
    check_finite_weights(transformer.state_dict().items(), f"the transformer of {path_or_id}")
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)

