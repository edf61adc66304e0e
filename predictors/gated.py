"""The learned head where it is measured to win, Taylor where it is not.

A head fitted on one step count's trajectories does not transfer to every regime: at 50 steps the scenes head,
trained at 20, lost 3-8 dB to Taylor-1 on intervals 2-4 and won on 5-6. The gate is a table, per step count,
of which forecaster (`learned`, `taylor:1`, `taylor:2`) won the closed-loop image PSNR on training seeds for each
spacing between a row's last two computes (`cachepilot calibrate-forecaster`). At a call it takes the table of
the nearest calibrated count and picks per row by that row's spacing: all tensor ops, no host sync.

Spacing alone does not say which forecaster wins a whole trajectory (Taylor-2 after TaylorSeer's three warm-up
computes, Taylor-1 on a lone skip late in a dense threshold run), and per-part scores do not add up (a table per
third of the trajectory lost 3-6 dB elsewhere). So the gate also keeps whole-schedule choices: per step count and
policy spec (`fixed:3`, `threshold:0.05`, `schedule:MASK`, `learned@0.3`), the forecaster that won that schedule's
closed-loop PSNR, the spacing table's mix being one of the candidates (`table`), and so are plain reuse and a
rank-1 DMD. A call whose policy and count were
calibrated uses that choice for every row; others the table.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cachepilot.errors import CheckpointError
from cachepilot.core.predictor import ForecastContext, Predictor
from cachepilot.core.history import ResidualHistory
from cachepilot.predictors.learned import Learned
from cachepilot.predictors.dmd import DMD
from cachepilot.predictors.taylor import Reuse, Taylor
from cachepilot.records import read_json_object
from cachepilot.step_counts import nearest_count

GATE_FILE = "forecaster_gate.json"
GATE_CHOICES = ("learned", "taylor:1", "taylor:2")
# a whole schedule may also take the mean of Taylor-1 and Taylor-2, or keep the spacing table's mix
# or one of the field's training-free forecasters that fit in the head's history of 3 computes: plain reuse (FORA;
# on the scenes model at 20 steps the best forecaster on uniform masks at compute 0.2-0.3) and a rank-1 DMD
WHOLE_ONLY_CHOICES = ("reuse", "dmd:1")
SCHEDULE_CHOICES = GATE_CHOICES + ("taylor:1.5", "table") + WHOLE_ONLY_CHOICES


def _step_count(count, where: str) -> int:
    try:
        return int(count)
    except (TypeError, ValueError):
        raise CheckpointError(f"{where}: step count {count!r} is not an integer") from None


def check_schedule_choices(schedules: dict, where: str) -> dict[int, dict[str, str]]:
    """{num_steps: {policy spec: choice}} with known choices, or a CheckpointError naming `where`."""
    if not isinstance(schedules, dict):
        raise CheckpointError(f"{where}: the gate's schedules must be an object of step counts")
    checked = {}
    for count, by_spec in schedules.items():
        steps = _step_count(count, where)
        if not isinstance(by_spec, dict) or any(c not in SCHEDULE_CHOICES for c in by_spec.values()):
            raise CheckpointError(f"{where}: the schedules at {count} steps must map policy specs to one of "
                                  f"{SCHEDULE_CHOICES}, got {by_spec!r}")
        checked[steps] = {str(spec): choice for spec, choice in by_spec.items()}
    return checked


def check_gate_table(table: dict, where: str) -> dict[int, list[str]]:
    """{num_steps: [choice for spacing 1, 2, ...]} with known choices, or a CheckpointError naming `where`."""
    if not isinstance(table, dict) or not table:
        raise CheckpointError(f"{where}: the gate has no calibrated step count")
    checked = {}
    for count, choices in table.items():
        steps = _step_count(count, where)
        if steps < 1 or not isinstance(choices, list) or not choices or any(c not in GATE_CHOICES for c in choices):
            raise CheckpointError(f"{where}: the gate at {count} steps must be a non-empty list of {GATE_CHOICES}, "
                                  f"got {choices!r}")
        checked[steps] = list(choices)
    return checked


def _stored_choices(schedules: dict) -> dict:
    """{count: {spec: choice}} from the file's {count: {spec: {"choice": ..., "psnr": ...}}} (shapes checked later)."""
    if not isinstance(schedules, dict):
        return schedules
    return {count: {spec: entry.get("choice") if isinstance(entry, dict) else entry for spec, entry in by_spec.items()}
            if isinstance(by_spec, dict) else by_spec for count, by_spec in schedules.items()}


class Gated(Predictor):
    """The forecaster calibrated for the call's policy at its step count, else per row the table's forecaster for the
    row's spacing (last two computes; clamped to the table)."""

    def __init__(self, learned: Learned, table: dict[int, list[str]], source: str = "gated",
                 schedules: dict[int, dict[str, str]] | None = None):
        self.learned = learned
        self.table = check_gate_table(table, source)
        self.schedules = check_schedule_choices(schedules or {}, source)
        self.forecasters: dict[str, Predictor] = {"learned": learned, "taylor:1": Taylor(1), "taylor:2": Taylor(2),
                                                  "taylor:1.5": Taylor(1.5), "reuse": Reuse(), "dmd:1": DMD(1)}
        self.history_size = max(learned.history_size, 3)
        self.source = source
        self._index: dict[tuple[int, torch.device], tuple[list[str], torch.Tensor]] = {}

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "Gated":
        path = Path(path)
        gate_path = path / GATE_FILE
        if not gate_path.is_file():
            raise CheckpointError(f"no forecaster gate at {path} ({GATE_FILE} is missing: run `cachepilot "
                                  "calibrate-forecaster`)")
        record = read_json_object(gate_path, "the forecaster gate")
        table = {count: entry.get("choices") if isinstance(entry, dict) else entry
                 for count, entry in (record.get("counts") or {}).items()}
        return cls(Learned.from_pretrained(path), table, source=str(path),
                   schedules=_stored_choices(record.get("schedules") or {}))

    @property
    def causal(self) -> bool:
        """A choice calibrated per whole schedule makes a step's forecast depend on the schedule's later steps."""
        return not self.schedules

    def bind(self, transformer: torch.nn.Module) -> None:
        self.learned.bind(transformer)

    def choices(self, num_steps: int) -> list[str]:
        """The table used at `num_steps`: that of the nearest calibrated count (`step_counts.nearest_count`)."""
        return self.table[nearest_count(list(self.table), num_steps)]

    def _lookup(self, num_steps: int, device: torch.device) -> tuple[list[str], torch.Tensor]:
        key = (num_steps, device)
        if key not in self._index:
            choices = self.choices(num_steps)
            used = sorted(set(choices), key=GATE_CHOICES.index)
            self._index[key] = used, torch.tensor([used.index(c) for c in choices], device=device)
        return self._index[key]

    def predict(
        self, history: ResidualHistory, step: int, rows: torch.Tensor | None = None,
        context: ForecastContext | None = None,
    ) -> torch.Tensor:
        if context is None:
            raise ValueError("the gated predictor needs the engine's ForecastContext (the step count)")
        whole = self.schedules.get(context.num_steps, {}).get(context.policy)
        if whole is not None and whole != "table":  # this schedule was calibrated as a whole at this count
            return self.forecasters[whole].predict(history, step, rows, context)
        used, index = self._lookup(context.num_steps, history.steps.device)
        if len(used) == 1:
            return self.forecasters[used[0]].predict(history, step, rows, context)
        steps = history.steps if rows is None else history.steps.index_select(1, rows)
        spacing = (steps[0] - steps[1]).round().long().clamp(1, len(index))  # rows with one compute: spacing 1
        chosen = index[spacing - 1]
        view = (-1,) + (1,) * (history.residuals.ndim - 2)
        forecast = None
        for i, name in enumerate(used):
            part = self.forecasters[name].predict(history, step, rows, context)
            forecast = part if forecast is None else torch.where((chosen == i).view(view), part, forecast)
        return forecast

    def spec(self) -> str:
        return f"gated:{self.source}"


def write_gate(path: Path, record: dict) -> None:
    """Atomically (a kill leaves the old gate or the new one): the record `calibrate_gate` returns."""
    check_gate_table({k: v["choices"] for k, v in record["counts"].items()}, str(path))
    check_schedule_choices({k: {s: e["choice"] for s, e in v.items()} for k, v in record.get("schedules", {}).items()},
                           str(path))
    tmp = path / (GATE_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path / GATE_FILE)
