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


# Scheduler config fields that change the denoising trajectory (the timesteps / sigmas a step sees, and what the
# model output means): a learned forecaster fitted on one trajectory is out of its domain on another. Fields a
# scheduler class lacks are not compared; the class itself always is.
SCHEDULER_FIELDS: tuple[str, ...] = (
    "num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type", "timestep_spacing",
    "steps_offset", "rescale_betas_zero_snr", "shift", "flow_shift", "use_dynamic_shifting", "base_shift",
    "max_shift", "base_image_seq_len", "max_image_seq_len", "shift_terminal", "time_shift_type", "invert_sigmas",
    "use_flow_sigmas", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "sigma_min", "sigma_max",
    "final_sigmas_type", "solver_order", "solver_type", "algorithm_type", "predict_x0", "lower_order_final",
    "stochastic_sampling", "clip_sample", "set_alpha_to_one", "thresholding",
)


def scheduler_fingerprint(scheduler: Any) -> dict[str, Any] | None:
    """The scheduler's class and its trajectory fields (`SCHEDULER_FIELDS`), JSON-plain; None without one."""
    config = getattr(scheduler, "config", None)
    if scheduler is None or config is None:
        return None
    fields = {k: dict(config)[k] for k in SCHEDULER_FIELDS if k in dict(config)}
    return json.loads(json.dumps({"scheduler_class": type(scheduler).__name__, **fields}, default=str))


def scheduler_differences(expected: dict[str, Any] | None, scheduler: Any) -> list[str]:
    """The fields where `scheduler` differs from the recorded fingerprint `expected` (the class first, then the
    trajectory fields both record); [] when either side has no fingerprint."""
    actual = scheduler_fingerprint(scheduler)
    if not isinstance(expected, dict) or actual is None:
        return []
    shared = [k for k in ("scheduler_class", *SCHEDULER_FIELDS) if k in expected and k in actual]
    return [k for k in shared if expected[k] != actual[k]]
