"""A learned combination of training-free forecasters, fitted in closed form per step of a schedule (L2P-style).

L2P (Shen et al., "Beyond Fixed Formulas: Data-Driven Linear Predictor for Efficient Diffusion Models", 2026)
observes that the hand-made forecasters (reuse, Taylor, ...) are fixed linear combinations of a few past features,
and replaces the fixed coefficients with weights learned per timestep from a handful of recorded trajectories.
Here the combined terms are the forecasters themselves: at forecast step t of a fixed schedule the residual is

    sum_m w[t, m] * forecaster_m(history, t)

with one small weight vector per (step count, schedule, step), fitted by ridge least squares against the true
residuals (`cachepilot.train.combination`). At a fixed step of a fixed schedule every linear forecaster (reuse,
Taylor, FoCa, Hermite, Chebyshev) is a fixed combination of the last computed residuals, so reuse + Taylor 1 +
Taylor 2 already span what L2P's per-step weights over the last three computes can express; non-linear ones
(DMD's fitted exponentials) add directions outside that span.

The weights are read on the host once at load: a forecast is M forecasts and M scaled adds with Python-float
coefficients (no host sync, no per-element loop); a forecaster whose weight is 0 at a step is not run.
Stored as `combination.safetensors` (one (steps, M) table per fitted schedule) + `combination.json` (the
forecaster specs and, per table, its step count and policy spec).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from cachepilot.core.history import ResidualHistory
from cachepilot.core.predictor import ForecastContext, Predictor
from cachepilot.errors import CheckpointError, InvalidInputError

CONFIG_FILE = "combination.json"
WEIGHTS_FILE = "combination.safetensors"
DEFAULT_BASES = ("reuse", "taylor:1", "taylor:2", "dmd:1", "dmd:2")


def _make(spec: str) -> Predictor:
    from cachepilot.predictors.spec import make_predictor  # the spec parser knows this module: import late

    predictor = make_predictor(spec)
    if isinstance(predictor, Combination):
        raise InvalidInputError("Combination: a base forecaster cannot itself be a combination")
    return predictor


def _table_key(num_steps: int, policy: str) -> str:
    return f"{int(num_steps)}|{policy}"


class Combination(Predictor):
    """bases: forecaster specs; tables: {(num_steps, policy spec): (num_steps, len(bases)) weights}."""

    def __init__(self, bases: Sequence[str], tables: dict[tuple[int, str], torch.Tensor], source: str = ""):
        if not bases:
            raise InvalidInputError("Combination: needs at least one base forecaster")
        if not tables:
            raise InvalidInputError("Combination: no fitted schedule")
        self.bases = [str(b) for b in bases]
        self.predictors = [_make(b) for b in self.bases]
        self.tables: dict[tuple[int, str], torch.Tensor] = {}
        self._host: dict[str, list[list[float]]] = {}  # key -> per step, per base: Python floats (no device sync)
        for (num_steps, policy), weights in tables.items():
            weights = torch.as_tensor(weights, dtype=torch.float32).cpu()
            if weights.shape != (int(num_steps), len(self.bases)) or not torch.isfinite(weights).all():
                raise InvalidInputError(f"Combination: the weights of {policy} at {num_steps} steps must be a finite "
                                        f"({num_steps}, {len(self.bases)}) table, got {tuple(weights.shape)}")
            self.tables[(int(num_steps), str(policy))] = weights
            self._host[_table_key(num_steps, policy)] = weights.tolist()
        self.source = source
        self.history_size = max(p.history_size for p in self.predictors)

    def fitted(self) -> str:
        """The fitted (step count, policy) pairs, for messages."""
        return ", ".join(f"{policy} at {n} steps" for n, policy in sorted(self.tables))

    def check(self, num_steps: int, policy: str) -> None:
        """One-line error unless weights were fitted for `policy` (a policy spec) at `num_steps`: call it before
        sampling where both are known (the engine's first forecast checks again)."""
        if _table_key(num_steps, policy) not in self._host:
            where = f" ({self.source})" if self.source else ""
            raise InvalidInputError(f"the combination forecaster{where} has no weights for {policy} at {num_steps} "
                                    f"steps; fitted: {self.fitted()} (cachepilot fit-combination --steps "
                                    f"{num_steps} --policy {policy})")

    def predict(
        self, history: ResidualHistory, step: int, rows: torch.Tensor | None = None,
        context: ForecastContext | None = None,
    ) -> torch.Tensor:
        if context is None:
            raise InvalidInputError("the combination forecaster needs the engine's ForecastContext (step count, "
                                    "policy)")
        weights = self._host.get(_table_key(context.num_steps, context.policy))
        if weights is None:
            self.check(context.num_steps, context.policy)
        forecast = None
        for weight, predictor in zip(weights[step], self.predictors):
            if weight == 0.0:
                continue
            part = predictor.predict(history, step, rows, context)
            forecast = part * weight if forecast is None else forecast.add_(part, alpha=weight)
        if forecast is None:  # an all-zero row: the fit found the residual best forecast as zero
            forecast = torch.zeros_like(self.predictors[0].predict(history, step, rows, context))
        return forecast

    def save_pretrained(self, path: str | Path, extra: dict | None = None) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        keys = {f"table{i}": key for i, key in enumerate(sorted(self.tables))}
        save_file({name: self.tables[key].contiguous() for name, key in keys.items()}, str(path / WEIGHTS_FILE))
        config = {"bases": self.bases,
                  "tables": [{"name": name, "num_steps": n, "policy": policy} for name, (n, policy) in keys.items()],
                  **(extra or {})}
        (path / CONFIG_FILE).write_text(json.dumps(config, indent=2))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "Combination":
        path = Path(path)
        if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise CheckpointError(f"no combination forecaster in {path}: expected {CONFIG_FILE} and {WEIGHTS_FILE} "
                                  "(cachepilot fit-combination)")
        try:
            config = json.loads((path / CONFIG_FILE).read_text())
            stored = load_file(str(path / WEIGHTS_FILE))
            tables = {(int(t["num_steps"]), str(t["policy"])): stored[t["name"]] for t in config["tables"]}
            return cls(config["bases"], tables, source=str(path))
        except (OSError, ValueError, KeyError, TypeError, InvalidInputError) as error:
            raise CheckpointError(f"unreadable combination forecaster in {path}: {error}") from None

    def spec(self) -> str:
        return f"combo:{self.source}" if self.source else "combo"
