"""The learned forecaster: a tiny head that must beat TaylorSeer at equal compute to earn its place.

Forecast = sum_k w_k(t, gaps) r_k  +  gate(t, gaps) * U V^T [x_t - x_c ; r_0]

- r_k: the row's last K computed residuals; the mixing weights start at Newton order-1
  extrapolation (= TaylorSeer order 1) and an MLP of (step fraction, gaps, validity) learns a
  correction — per-timestep linear weights over past features, as L2P fits them;
- the low-rank term sees what Taylor cannot: how far the stack *input* has moved since the last
  compute (x_t - x_c), mapped through a rank-r channel map (zero-initialised, so training starts
  from Taylor exactly).
Cost per forecast: an MLP on a few floats per row, K axpys, and two (tokens x hidden x rank) matmuls.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from cachepilot.errors import CheckpointError
from cachepilot.records import read_json_object
from cachepilot.finite import check_finite_weights, check_strict_load
from cachepilot.core.predictor import ForecastContext, Predictor
from cachepilot.core.history import ResidualHistory
from cachepilot.runtime.fingerprint import check_fingerprint

FINGERPRINT_FILE = "cachepilot_predictor.json"


class ResidualForecaster(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, hidden_size: int, history: int = 3, rank: int = 16, width: int = 64):
        super().__init__()
        k = history
        self.mix = nn.Sequential(nn.Linear(1 + 2 * k, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, k + 1))
        nn.init.zeros_(self.mix[-1].weight)
        nn.init.zeros_(self.mix[-1].bias)
        self.down = nn.Linear(2 * hidden_size, rank, bias=False)
        self.up = nn.Linear(rank, hidden_size, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(
        self, residuals: torch.Tensor, steps: torch.Tensor, count: torch.Tensor, step: torch.Tensor | float,
        num_steps: int | torch.Tensor, hidden: torch.Tensor, hidden_at_compute: torch.Tensor,
    ) -> torch.Tensor:
        """residuals (K, B, N, D) newest first; steps (K, B); count (B,) valid entries;
        step: the step to forecast (scalar or (B,)); num_steps: the call's (int) or per row ((B,), training on
        several step counts at once); hidden, hidden_at_compute (B, N, D)."""
        k, batch = steps.shape
        if isinstance(num_steps, torch.Tensor):
            scale = (num_steps.to(steps.device, steps.dtype) - 1).clamp(min=1).expand(batch)
        else:
            scale = float(max(num_steps - 1, 1))
        step = (step.to(steps.device, steps.dtype).expand(batch) if isinstance(step, torch.Tensor) else
                torch.full((batch,), float(step), dtype=steps.dtype, device=steps.device))  # a fill: no host copy
        valid = torch.arange(k, device=steps.device)[:, None] < count[None, :]   # (K, B)
        gaps = (step[None] - steps) / scale * valid
        feats = torch.cat([(step / scale)[:, None], gaps.T, valid.T.to(gaps.dtype)], dim=1)
        out = self.mix(feats.to(self.mix[0].weight.dtype))                     # (B, K + 1)
        # Newton order-1 weights: r0 + (r0 - r1) (t - s0) / (s0 - s1) where two computes exist
        a = (step - steps[0]) / (steps[0] - steps[1]).clamp(min=1e-6) * (count >= 2)
        base = torch.zeros(k, batch, device=steps.device, dtype=out.dtype)
        base[0] = 1 + a
        if k > 1:
            base[1] = -a
        weights = base + out[:, :k].T * valid
        view = (k, batch) + (1,) * (residuals.ndim - 2)
        forecast = (weights.view(view).to(residuals.dtype) * residuals).sum(0)
        moved = torch.cat([hidden - hidden_at_compute, residuals[0]], dim=-1)
        gate = (1 + out[:, k]).view((batch,) + (1,) * (residuals.ndim - 2)).to(residuals.dtype)
        return forecast + gate * self.up(self.down(moved))


class Learned(Predictor):
    """Engine-side wrapper: reads the engine's history and context, runs the head without grad."""

    def __init__(self, model: ResidualForecaster, fingerprint: dict | None = None, source: str = "learned"):
        self.model = model.eval()
        self.history_size = int(model.config.history)
        self.fingerprint = fingerprint or {}
        self.source = source

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "Learned":
        path = Path(path)
        if not (path / "config.json").is_file():
            raise CheckpointError(f"no predictor head at {path} (config.json is missing)")
        try:
            model = ResidualForecaster.from_pretrained(path, local_files_only=True, low_cpu_mem_usage=False)
        except Exception as err:
            raise CheckpointError(f"the predictor head at {path} could not be loaded, it looks corrupt: {err}") from err
        check_strict_load(model, path, "the predictor head")
        check_finite_weights(model.state_dict().items(), f"the predictor head at {path}")
        fingerprint_path = path / FINGERPRINT_FILE
        fingerprint = {}
        if fingerprint_path.exists():
            fingerprint = read_json_object(fingerprint_path, "the predictor's backbone fingerprint")
        return cls(model, fingerprint, source=str(path))

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        self.model.save_pretrained(path, safe_serialization=True)
        (path / FINGERPRINT_FILE).write_text(json.dumps(self.fingerprint, indent=2))

    def bind(self, transformer: torch.nn.Module) -> None:
        check_fingerprint({"hidden_size": self.model.config.hidden_size, **self.fingerprint}, transformer,
                          f"the predictor head {self.source}")
        parameter, own = next(transformer.parameters()), next(self.model.parameters())
        if (own.device, own.dtype) != (parameter.device, parameter.dtype):
            self.model.to(device=parameter.device, dtype=parameter.dtype)

    @torch.no_grad()
    def predict(
        self, history: ResidualHistory, step: int, rows: torch.Tensor | None = None,
        context: ForecastContext | None = None,
    ) -> torch.Tensor:
        if context is None:
            raise ValueError("the learned predictor needs the engine's ForecastContext")
        r, s, count = history.residuals, history.steps, history.count
        if rows is not None:
            r, s, count = r.index_select(1, rows), s.index_select(1, rows), count.index_select(0, rows)
        return self.model(r, s, count, float(step), context.num_steps, context.hidden, context.hidden_at_compute)

    def spec(self) -> str:
        return "learned" if self.source == "learned" else f"learned:{self.source}"
