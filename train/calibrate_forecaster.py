"""`cachepilot calibrate-forecaster`: measure, per step count and interval, whether the learned head or Taylor
forecasts better, closed loop, and write the table the gated forecaster reads (`predictors/gated.py`).

Open-loop forecast error is not the judge: a head fine-tuned to lower it lost 0.5-2.5 dB in the image (issue 12).
So each candidate samples the training seeds under `fixed:N` and is scored by the final image's PSNR against full
compute at that step count, as the bench scores it (on held-out seeds). Ties go to the cheaper forecaster. Spacing 1
(two adjacent computes: warm-ups, dense stretches) has its own schedule, two computes then one skip: on TaylorSeer's
warm-up schedule Taylor-2 from three adjacent computes beats the Taylor-1 that plain interval 2 picks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from cachepilot.driver import SamplingDriver, caching
from cachepilot.errors import InvalidInputError
from cachepilot.predictors.gated import GATE_CHOICES, GATE_FILE, write_gate
from cachepilot.predictors.learned import Learned
from cachepilot.quality import psnr
from cachepilot.records import read_json_object

TIE_ORDER = ("taylor:1", "taylor:2", "learned")  # a tie goes to the cheaper forecaster
CALIBRATION_SEED = 300_000  # the schedule search's training seeds; the bench's are 20,000+


def calibration_schedule(interval: int, steps: int) -> str:
    """The policy spec whose every forecast is at `interval` steps from the last of two computes that far apart."""
    if interval == 1:
        return "schedule:" + "".join("0" if s % 3 == 2 and s < steps - 1 else "1" for s in range(steps))
    return f"fixed:{interval}"


def calibrate_gate(
    pipe, head: str | Path, conditions: Sequence[dict], counts: Sequence[int],
    intervals: Sequence[int] = (1, 2, 3, 4, 5, 6, 8),
    samples: int = 16, call_kwargs: dict | None = None, seed: int = CALIBRATION_SEED, out: Path | None = None,
    progress: bool = True,
) -> dict:
    """{"counts": {steps: {"choices": [per spacing 1..max(intervals)], "psnr": {interval: {choice: dB}}}}, ...}.

    A spacing not calibrated takes the winner of the nearest calibrated interval below it (the smallest, below all).
    With `out` (the head's directory) the record is written after each count: an interruption keeps the counts done,
    and a later call with the same samples, seed and intervals only measures the counts missing.
    """
    if not counts or any(isinstance(c, bool) or not isinstance(c, int) or c < 2 for c in counts):
        raise InvalidInputError(f"step counts must be integers >= 2, got {list(counts)}")
    if not intervals or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in intervals):
        raise InvalidInputError(f"intervals must be integers >= 1, got {list(intervals)}")
    if samples < 1 or not conditions:
        raise InvalidInputError("calibration needs at least one sample and one condition")
    learned = Learned.from_pretrained(head)  # loads (and checks) the head before any sampling
    intervals = sorted(set(intervals))
    chosen = [conditions[i % len(conditions)] for i in range(samples)]
    seeds = [seed + i for i in range(samples)]
    forecasters = {"learned": learned, "taylor:1": "taylor:1", "taylor:2": "taylor:2"}
    record = {"samples": samples, "seed": seed, "intervals": intervals, "counts": {}}
    if out is not None and (Path(out) / GATE_FILE).is_file():
        stored = read_json_object(Path(out) / GATE_FILE, "the forecaster gate")
        if all(stored.get(key) == record[key] for key in ("samples", "seed", "intervals")):
            record["counts"] = dict(stored.get("counts") or {})
    counts = [steps for steps in counts if str(steps) not in record["counts"]]
    total = len(counts) * len(intervals) * len(GATE_CHOICES)
    with tqdm(total=total, desc="calibrate forecaster", disable=not progress) as bar:
        for steps in counts:
            driver = SamplingDriver(pipe, steps, call_kwargs)
            reference = driver.sample(chosen, seeds).images
            scores: dict[int, dict[str, float]] = {}
            for interval in intervals:
                scores[interval] = {}
                for name in GATE_CHOICES:
                    with caching(pipe, calibration_schedule(interval, steps), forecasters[name]):
                        scores[interval][name] = psnr(driver.sample(chosen, seeds).images, reference)
                    bar.update()
            winner = {n: max(TIE_ORDER, key=lambda c: scores[n][c]) for n in intervals}
            choices = [winner[max([n for n in intervals if n <= spacing], default=intervals[0])]
                       for spacing in range(1, intervals[-1] + 1)]
            record["counts"][str(steps)] = {"choices": choices, "psnr": {str(n): scores[n] for n in intervals}}
            if out is not None:
                write_gate(Path(out), record)
    return record
