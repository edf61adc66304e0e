"""`searched_schedules.json`: the best fixed schedule per compute target of an offline search, one file format.

`cachepilot search-schedule` and `cachepilot fit` write it, the learned policy's prior, the bench and the research
tools read it; they all go through `SearchedSchedules` (a cache checkpoint through `CacheCheckpoint.schedules`),
so the format is parsed in one place and a broken file fails with one message naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cachepilot.errors import CheckpointError
from cachepilot.records import read_json_object

SCHEDULES_FILE = "searched_schedules.json"


def schedules_file(num_steps: int | None = None) -> str:
    """`searched_schedules.json`, or `searched_schedules_<N>.json` for a search at N steps kept beside it."""
    return SCHEDULES_FILE if num_steps is None else f"searched_schedules_{int(num_steps)}.json"


def mask_string(mask) -> str:
    """'1'/'0' string of a sequence of booleans (the file's form of a mask)."""
    return "".join("1" if on else "0" for on in mask)


@dataclass
class SearchedSchedules:
    """num_steps: the count searched at; predictor: the forecaster the search scored with; schedules: target
    ('0.3') -> {"mask": '1'/'0' string, "train_psnr": float}; settings: the search's other settings (samples,
    seed, select_samples) kept as written."""

    num_steps: int
    predictor: str
    schedules: dict[str, dict] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    @classmethod
    def read(cls, path: str | Path) -> SearchedSchedules:
        """The file at `path`, or a `CheckpointError` naming it (missing, not JSON, or not this format)."""
        record = read_json_object(path, "searched schedules")
        try:
            schedules = {str(t): {"mask": str(entry["mask"]), **{k: v for k, v in entry.items() if k != "mask"}}
                         for t, entry in record["schedules"].items()}
            for target in schedules:
                float(target)
            num_steps = int(record["num_steps"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise CheckpointError(f"{path} is not a searched_schedules.json ({type(err).__name__}: {err})") from None
        settings = {k: v for k, v in record.items() if k not in ("num_steps", "predictor", "schedules")}
        return cls(num_steps, str(record.get("predictor", "reuse")), schedules, settings)

    def masks(self) -> dict[float, str]:
        """target compute fraction -> mask."""
        return {float(t): entry["mask"] for t, entry in self.schedules.items()}

    def add(self, target: float, mask, train_psnr: float, predictor: str | None = None) -> None:
        """Record the schedule found for one target (a sequence of booleans or a '1'/'0' string), with the
        forecaster chosen for it when it has its own (a lean fit's)."""
        self.schedules[f"{float(target):g}"] = {"mask": mask if isinstance(mask, str) else mask_string(mask),
                                                "train_psnr": float(train_psnr),
                                                **({"predictor": predictor} if predictor is not None else {})}

    def predictor_at(self, target: float | None) -> str:
        """The forecaster of the searched target nearest `target` when the schedules carry their own, else the
        file's."""
        own = {float(t): e["predictor"] for t, e in self.schedules.items() if isinstance(e.get("predictor"), str)}
        if target is None or not own:
            return self.predictor
        return own[min(own, key=lambda t: (abs(t - float(target)), t))]

    def to_json(self) -> dict:
        return {"num_steps": self.num_steps, "predictor": self.predictor, **self.settings,
                "schedules": self.schedules}

    def write(self, path: str | Path) -> None:
        """Atomically (an interruption leaves the previous file or this one): searches write after each target."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2))
        tmp.replace(path)
