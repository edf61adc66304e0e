"""HyCa-style hybrid forecaster: per feature channel, the training-free forecaster that fits that channel best.

HyCa (Hybrid ODE solvers for feature caching, 2025) observes that feature dimensions of a DiT evolve
with different dynamics, so no single forecaster suits them all; it profiles the dimensions offline and
assigns each one the solver with the lowest error, then runs the assignment at inference with no
training. Here the pool is a list of forecaster specs, the assignment a per-channel index table fitted
by `fit_hyca` on recorded full-compute trajectories (simulating fixed-interval schedules and scoring
every candidate's forecasts of the skipped steps), stored as safetensors + json in a directory.

At a forecast every candidate runs (cost: the sum of theirs) and each channel takes its own's value.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from cachepilot.core.history import ResidualHistory
from cachepilot.core.predictor import ForecastContext, Predictor
from cachepilot.errors import CheckpointError, InvalidInputError

CONFIG_FILE = "hyca.json"
TABLE_FILE = "hyca.safetensors"
DEFAULT_CANDIDATES = ("reuse", "taylor:1", "taylor:1.5", "taylor:2", "foca")


def _make(spec: str) -> Predictor:
    from cachepilot.predictors.spec import make_predictor  # the spec parser knows this module: import late

    predictor = make_predictor(spec)
    if isinstance(predictor, HyCa):
        raise InvalidInputError("HyCa: a candidate cannot itself be a HyCa table")
    return predictor


class HyCa(Predictor):
    """candidates: forecaster specs; choice: (channels,) long, channel c forecast by candidates[choice[c]]."""

    def __init__(self, candidates: Sequence[str], choice: torch.Tensor, source: str = ""):
        if not candidates:
            raise InvalidInputError("HyCa: needs at least one candidate forecaster")
        self.candidates = [str(c) for c in candidates]
        self.predictors = [_make(c) for c in self.candidates]
        choice = torch.as_tensor(choice, dtype=torch.long)
        if choice.ndim != 1 or choice.numel() == 0 or int(choice.min()) < 0 or int(choice.max()) >= len(candidates):
            raise InvalidInputError(f"HyCa: choice must be a 1-D table of indices < {len(candidates)}")
        self.choice = choice
        self.source = source
        self.history_size = max(p.history_size for p in self.predictors)
        self._masks: dict = {}

    def _channel_masks(self, device: torch.device) -> list[torch.Tensor]:
        if device not in self._masks:
            choice = self.choice.to(device)
            self._masks[device] = [choice == m for m in range(len(self.candidates))]
        return self._masks[device]

    def predict(
        self, history: ResidualHistory, step: int, rows: torch.Tensor | None = None,
        context: ForecastContext | None = None,
    ) -> torch.Tensor:
        channels = history.residuals.shape[-1]
        if channels != self.choice.numel():
            raise InvalidInputError(f"HyCa table {self.source or ''} has {self.choice.numel()} channels, the model's "
                                    f"residual {channels}: fit it on this model")
        masks = self._channel_masks(history.residuals.device)
        forecast = None
        for m, predictor in enumerate(self.predictors):
            part = predictor.predict(history, step, rows, context)
            forecast = part if forecast is None else torch.where(masks[m], part, forecast)
        return forecast

    def save_pretrained(self, path: str | Path, extra: dict | None = None) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({"choice": self.choice.contiguous()}, str(path / TABLE_FILE))
        (path / CONFIG_FILE).write_text(json.dumps({"candidates": self.candidates, **(extra or {})}, indent=2))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "HyCa":
        path = Path(path)
        if not (path / CONFIG_FILE).is_file() or not (path / TABLE_FILE).is_file():
            raise CheckpointError(f"no HyCa table in {path}: expected {CONFIG_FILE} and {TABLE_FILE} (fit_hyca)")
        try:
            config = json.loads((path / CONFIG_FILE).read_text())
            choice = load_file(str(path / TABLE_FILE))["choice"]
        except (OSError, ValueError, KeyError) as error:
            raise CheckpointError(f"unreadable HyCa table in {path}: {error}") from None
        return cls(config["candidates"], choice, source=str(path))

    def spec(self) -> str:
        return f"hyca:{self.source}" if self.source else "hyca"


def fixed_schedule_errors(
    predictor: Predictor, steps: torch.Tensor, residuals: torch.Tensor, interval: int,
) -> torch.Tensor:
    """Per channel, the summed squared error of `predictor`'s forecasts of the steps a fixed:`interval`
    schedule skips on one recorded full-compute trajectory (steps (T,), residuals (T, rows, *feature))."""
    history = predictor.new_history()
    history.allocate(residuals[0])
    all_rows = torch.arange(residuals.shape[1])
    errors = torch.zeros(residuals.shape[-1], dtype=torch.float64)
    for i, step in enumerate(steps.tolist()):
        if i % interval == 0:
            history.update(all_rows, int(step), residuals[i])
            continue
        forecast = predictor.predict(history, int(step))
        errors += (forecast.float() - residuals[i].float()).pow(2).flatten(0, -2).sum(0).double()
    return errors


def fit_hyca(
    trajectories: Iterable[tuple[torch.Tensor, torch.Tensor]],
    candidates: Sequence[str] = DEFAULT_CANDIDATES,
    intervals: Sequence[int] = (2, 3, 4),
) -> tuple[HyCa, torch.Tensor]:
    """The per-channel choice with the lowest total squared error over `trajectories` (each (steps (T,),
    residuals (T, rows, *feature)), full compute) and fixed schedules of `intervals`; also returns the
    (candidates, channels) error table it chose from."""
    predictors = [_make(c) for c in candidates]
    table = None
    for steps, residuals in trajectories:
        errors = torch.stack([sum(fixed_schedule_errors(p, steps, residuals, n) for n in intervals)
                              for p in predictors])
        table = errors if table is None else table + errors
    if table is None:
        raise InvalidInputError("fit_hyca: no trajectories")
    return HyCa(candidates, table.argmin(0)), table
