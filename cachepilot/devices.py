"""Device and Lightning hardware options checked before any work: one line naming the problem, not a
traceback from deep inside torch or Lightning after the data has loaded."""

from __future__ import annotations

import torch

from cachepilot.errors import InvalidInputError

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu", "xla")


def check_device(device: str | torch.device) -> torch.device:
    """A usable torch device, or an `InvalidInputError` (unknown name, CUDA / MPS not present, bad index)."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InvalidInputError(f"unknown device {device!r} ({err}); use e.g. cpu, cuda, cuda:1, mps") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError(f"device {device!r}: CUDA is not available on this machine (use --device cpu)")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise InvalidInputError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidInputError(f"device {device!r}: MPS is not available on this machine (use --device cpu)")
    elif parsed.type not in ("cpu", "cuda", "mps", "meta"):
        if not getattr(getattr(torch, parsed.type, None), "is_available", lambda: False)():
            raise InvalidInputError(f"device {device!r} is not available on this machine")
    return parsed


def check_lightning_hardware(accelerator: str = "auto", devices: int = 1, strategy: str = "auto") -> None:
    """--accelerator / --devices / --strategy of the Lightning trainers, checked up front."""
    if accelerator not in ACCELERATORS:
        raise InvalidInputError(f"unknown accelerator {accelerator!r}: use one of {list(ACCELERATORS)}")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise InvalidInputError(f"--accelerator {accelerator}: no CUDA GPU on this machine (use cpu or auto)")
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise InvalidInputError("--accelerator mps: MPS is not available on this machine")
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise InvalidInputError(f"--devices must be an integer >= 1, got {devices!r}")
    if accelerator in ("gpu", "cuda") and devices > torch.cuda.device_count():
        raise InvalidInputError(f"--devices {devices}: only {torch.cuda.device_count()} CUDA device(s) here")
    from lightning.pytorch.strategies import StrategyRegistry

    known = ["auto"] + sorted(StrategyRegistry.available_strategies())
    if strategy not in known:
        raise InvalidInputError(f"unknown strategy {strategy!r}: use one of {known}")
