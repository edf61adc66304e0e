"""The options every research tool takes to name a pipeline and how it is sampled (as the CLI's)."""

from __future__ import annotations

import argparse
import json


def _json_object(text: str) -> dict:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def add_pipeline_args(parser: argparse.ArgumentParser) -> None:
    """--pipeline (default: the embedded digits model), --prompts, --call-kwargs, --device, --dtype."""
    for flag, kwargs in (
            ("--pipeline", {"help": "diffusers pipeline directory or hub id (default: the embedded digits model)"}),
            ("--prompts", {"help": "conditions: a prompts file, a JSONL of call kwargs, a saved HF dataset, "
                                   "hf:NAME[:SPLIT] or classes:0-9"}),
            ("--call-kwargs", {"type": _json_object, "default": {}, "help": "JSON object of kwargs for every call"}),
            ("--device", {"default": "cpu"}),
            ("--dtype", {"help": "float32 | float16 | bfloat16 (default: as saved)"})):
        parser.add_argument(flag, **{"default": None, **kwargs})
