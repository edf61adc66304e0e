"""Load the embedded (or a user's) pipeline and classifier, with errors that name the problem.

diffusers' own loaders fail deep inside with a traceback for a missing directory, a corrupt
safetensors file or a checkpoint of another model class; we check those up front.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DiTTransformer2DModel
from diffusers.utils import logging as diffusers_logging

from cachepilot.checkpoints import DEFAULT_CLASSIFIER, DEFAULT_PIPELINE
from cachepilot.embedded.digits.classifier import DigitsClassifier
from cachepilot.devices import check_device
from cachepilot.errors import CheckpointError
from cachepilot.records import read_json_object
from cachepilot.finite import check_finite_weights, check_strict_load
from cachepilot.embedded.digits.pipeline import DigitsDiTPipeline


def _read_config(path: Path, what: str) -> dict:
    return read_json_object(path, what)


def _check_class(config: dict, expected: type, path: Path) -> None:
    found = config.get("_class_name")
    if found != expected.__name__:
        raise CheckpointError(
            f"{path} holds a {found or 'model of unknown class'}, expected a {expected.__name__}"
        )


def _check_dir(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{what} directory not found: {path}")
    if not path.is_dir():
        raise CheckpointError(f"{what} must be a directory, got the file {path}")
    return path


def _load_weights(loader, path: Path, what: str):
    """Call a diffusers loader quietly, turning read/parse failures into a `CheckpointError`."""
    diffusers_logging.disable_progress_bar()
    try:
        return loader()
    except CheckpointError:
        raise
    except Exception as err:  # safetensors, OSError, shape mismatches: all mean a bad checkpoint
        raise CheckpointError(f"{what} at {path} could not be loaded, it looks corrupt: {err}") from err
    finally:
        diffusers_logging.enable_progress_bar()


def load_digits_pipeline(path: str | Path | None = None, device: str | torch.device = "cpu") -> DigitsDiTPipeline:
    """The embedded digits pipeline by default; `path` a pipeline directory saved by `train backbone`."""
    check_device(device)
    path = _check_dir(Path(path) if path is not None else DEFAULT_PIPELINE, "pipeline checkpoint")
    index = _read_config(path / "model_index.json", "not a pipeline checkpoint")
    entry = index.get("transformer")
    if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(e, str) for e in entry)):
        raise CheckpointError(f"{path}/model_index.json: the transformer entry must be [library, class], "
                              f"got {entry!r}")
    if entry[1] != DiTTransformer2DModel.__name__:
        raise CheckpointError(
            f"{path} holds a {entry[1]}, expected a {DiTTransformer2DModel.__name__} (model_index.json)"
        )
    config = _read_config(path / "transformer" / "config.json", "transformer config")
    _check_class(config, DiTTransformer2DModel, path / "transformer")
    if not config.get("num_embeds_ada_norm"):
        raise CheckpointError(f"{path}: the transformer is not class-conditional (num_embeds_ada_norm is unset)")
    if config.get("out_channels") not in (None, config.get("in_channels")):
        raise CheckpointError(
            f"{path}: the transformer predicts a learned sigma (out_channels {config['out_channels']} != in_channels "
            f"{config.get('in_channels')}), which the digits pipeline cannot sample: save it as a diffusers DiTPipeline")
    pipe = _load_weights(
        lambda: DigitsDiTPipeline.from_pretrained(
            path, dtype=torch.float32, local_files_only=True, low_cpu_mem_usage=False
        ),
        path, "pipeline",
    )
    check_strict_load(pipe.transformer, path / "transformer", "the transformer")
    check_finite_weights(pipe.transformer.state_dict().items(), f"the transformer at {path / 'transformer'}")
    pipe.transformer.eval()
    return pipe.to(device)


load_pipeline = load_digits_pipeline  # the name the CLI's evaluate, the experiments and the tests import


def load_classifier(path: str | Path | None = None, device: str | torch.device = "cpu") -> DigitsClassifier:
    """The reference classifier shipped in `checkpoints/digits-classifier` by default."""
    check_device(device)
    path = _check_dir(Path(path) if path is not None else DEFAULT_CLASSIFIER, "classifier checkpoint")
    _check_class(_read_config(path / "config.json", "classifier config"), DigitsClassifier, path)
    model = _load_weights(
        lambda: DigitsClassifier.from_pretrained(path, local_files_only=True, low_cpu_mem_usage=False),
        path, "classifier",
    )
    check_strict_load(model, path, "the classifier")
    check_finite_weights(model.state_dict().items(), f"the classifier at {path}")
    return model.to(device).eval()
