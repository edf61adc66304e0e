"""Identify a backbone, so artefacts made for one model refuse to load on another.

Collected datasets, predictor heads and (later) policies record the backbone's class, a hash of
its config and its hidden size; loading compares them and names the field that differs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from cachepilot.errors import CheckpointError


def backbone_fingerprint(transformer: torch.nn.Module) -> dict[str, Any]:
    config = {k: v for k, v in dict(transformer.config).items() if not k.startswith("_")}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
    heads, head_dim = config.get("num_attention_heads"), config.get("attention_head_dim")
    return {
        "backbone_class": type(transformer).__name__,
        "backbone_config_hash": digest,
        "hidden_size": int(heads * head_dim) if heads and head_dim else None,
    }


def check_fingerprint(expected: dict[str, Any], transformer: torch.nn.Module, what: str) -> None:
    """Raise a `CheckpointError` naming the first field where `what` and the model disagree."""
    if not isinstance(expected, dict):
        raise CheckpointError(f"{what} has a malformed backbone fingerprint: expected an object with "
                              f"backbone_class / hidden_size / backbone_config_hash, got {expected!r}")
    actual = backbone_fingerprint(transformer)
    for field in ("backbone_class", "hidden_size", "backbone_config_hash"):
        if field in expected and expected[field] != actual[field]:
            raise CheckpointError(
                f"{what} was made for another backbone: {field} is {expected[field]!r} there but "
                f"{actual[field]!r} for this {actual['backbone_class']}"
            )
