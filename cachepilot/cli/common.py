"""Options and helpers the commands share. Nothing heavy at import time: `cachepilot --help` loads no torch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cachepilot.errors import CachepilotError, InvalidInputError

OUT = Path("out")  # every default output lands here, never in the shipped checkpoints/


class DeprecatedAlias(argparse.Action):
    """An old flag spelling: hidden from --help, sets the new flag's value and prints one warning line."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"cachepilot: warning: {option_string} is deprecated, use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated(p: argparse.ArgumentParser, old: str, new: str, dest: str, **kwargs) -> None:
    p.add_argument(old, dest=dest, action=DeprecatedAlias, new=new, default=argparse.SUPPRESS, **kwargs)


def check_at_least(minimum: int, *flags: tuple[str, int | None]) -> None:
    """One line naming the flag as the user typed it, e.g. `--layers must be >= 1, got 0`."""
    for flag, value in flags:
        if value is not None and value < minimum:
            raise CachepilotError(f"{flag} must be >= {minimum}, got {value}")


def json_object(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def add_pipeline_args(p: argparse.ArgumentParser) -> None:
    """The options that name a user's pipeline and what it is sampled with."""
    p.add_argument("--pipeline", default=None,
                   help="diffusers pipeline directory or hub id (DiffusionPipeline.from_pretrained); default: the "
                        "embedded digits model")
    p.add_argument("--prompts", default=None,
                   help="conditions: a prompts file (one per line), a JSONL of call kwargs per sample, a saved HF "
                        "dataset directory, hf:NAME[:SPLIT], or classes:0-9 (default: every class of a "
                        "class-conditional pipeline)")
    p.add_argument("--call-kwargs", type=json_object, default={},
                   help='JSON object of kwargs for every pipeline call, e.g. \'{"height": 512, "guidance_scale": 3.5}\'')
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="float32 | float16 | bfloat16 (default: as saved)")


def add_pipeline_alias(p: argparse.ArgumentParser) -> None:
    """`--checkpoint` used to name the pipeline directory: kept, hidden, with a warning (`--cache` is a cache)."""
    add_deprecated(p, "--checkpoint", "--pipeline", dest="pipeline")


def call_kwargs(args: argparse.Namespace) -> dict:
    kwargs = dict(args.call_kwargs)
    if getattr(args, "guidance", None) is not None:
        kwargs["guidance_scale"] = args.guidance
    return kwargs


def takes_class_labels(pipe) -> bool:
    """Whether the pipeline's __call__ is class-conditional (a `class_labels` argument), whatever its id2label."""
    import inspect

    if getattr(pipe, "num_classes", None) is not None:
        return True
    try:
        return "class_labels" in inspect.signature(type(pipe).__call__).parameters
    except (TypeError, ValueError):
        return False


def conditions_of(pipe, prompts, class_flag: str = "--prompts classes:0-N"):
    """The ConditionSet of --prompts, else every class of a class-conditional pipeline; a class-conditional
    pipeline that does not list its classes is told to pass them (not that it is conditioned on text)."""
    from cachepilot.conditions import pipeline_conditions

    if prompts is None and not takes_class_labels(pipe):
        raise InvalidInputError(f"{type(pipe).__name__} is conditioned on text: pass --prompts FILE "
                                "(one prompt per line, or a JSONL of call kwargs)")
    if (prompts is None and getattr(pipe, "num_classes", None) is None
            and not isinstance(getattr(pipe, "labels", None), dict)):
        raise InvalidInputError(f"{type(pipe).__name__} takes class labels but does not list its classes: pass "
                                f"{class_flag}")
    return pipeline_conditions(pipe, prompts)


def train_conditions(args: argparse.Namespace, pipe) -> list[dict]:
    """The train split of --prompts (default: every class of a class-conditional pipeline)."""
    from cachepilot.conditions import split_conditions

    return list(split_conditions(conditions_of(pipe, args.prompts)).train.conditions)


def quiet() -> None:
    """Silence the third-party warnings every run would print and that say nothing about the user's input."""
    import os
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # diffusers' / transformers' loading chatter ("accelerate was not found", "kept in float32: []", torchvision
    # fallbacks of image processors), read from the environment at their import; download progress bars stay
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for message in (
        r".*does not have many workers.*",                   # Lightning: tiny in-memory datasets load fast
        r".*GPU available but not used.*",
        r".*Checkpoint directory .* exists and is not empty.*",  # our work dirs are meant to be reused (--resume)
        r".*Failed to load image Python extension.*",         # torchvision
        r".*is deprecated and will be removed.*",
        r".*TypedStorage is deprecated.*",
        r".*`torch_dtype` is deprecated.*",
        r".*LeafSpec.*",
        r".*The number of training batches .* is smaller than the logging interval.*",
        r".*tensorboardX.*",
        r".*Found keys that are not in the model state dict but in the checkpoint.*",
        r".*You are using `torch.load` with `weights_only=False`.*",
    ):
        warnings.filterwarnings("ignore", message=message)
    for category in (FutureWarning, DeprecationWarning):  # third-party API churn, not the user's concern
        warnings.filterwarnings("ignore", category=category, module=r"^(?!cachepilot)")
    import logging

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.pytorch.accelerators.cuda", "lightning_fabric.utilities.seed"):
        logging.getLogger(name).setLevel(logging.WARNING)
