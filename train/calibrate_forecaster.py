"""`cachepilot calibrate-forecaster`: measure, per step count and interval, whether the learned head or Taylor
forecasts better, closed loop, and write the table the gated forecaster reads (`predictors/gated.py`).

Open-loop forecast error is not the judge: a head fine-tuned to lower it lost 0.5-2.5 dB in the image (issue 12).
So each candidate samples the training seeds under `fixed:N` and is scored by the final image's PSNR against full
compute at that step count, as the bench scores it (on held-out seeds). Ties go to the cheaper forecaster. Spacing 1
(two adjacent computes: warm-ups, dense stretches) has its own schedule, two computes then one skip: on TaylorSeer's
warm-up schedule Taylor-2 from three adjacent computes beats the Taylor-1 that plain interval 2 picks.

Whole schedules (`schedules=`) are scored the same way, with each forecaster and with the spacing table's mix
(`table`, so a whole-schedule choice is never behind the table on the training seeds), and stored by the spec their
policy reports at a call: the gate then uses that schedule's winner for it at that count (`predictors/gated.py`).

Under `torchrun` each step count's runs (every interval with every forecaster, then every whole schedule with
every forecaster it misses) are split across the ranks and their scores gathered in order (`train/distributed.py`),
so every rank holds the one-process record; each rank samples the count's full-compute references itself, and
only rank 0 writes the gate.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from cachepilot.driver import SamplingDriver, caching
from cachepilot.errors import InvalidInputError
from cachepilot.core.policy import CachePolicy
from cachepilot.policies.baselines import Schedule, taylorseer_mask
from cachepilot.policies.spec import make_policy
from cachepilot.predictors.gated import (GATE_CHOICES, GATE_FILE, SCHEDULE_CHOICES, WHOLE_ONLY_CHOICES, Gated,
                                         write_gate)
from cachepilot.predictors.learned import Learned
from cachepilot.quality import psnr
from cachepilot.records import read_json_object
from cachepilot.searched import SearchedSchedules
from cachepilot.seeds import SEARCH
from cachepilot.train import distributed

TIE_ORDER = ("taylor:1", "taylor:2", "learned")  # a tie goes to the cheaper forecaster
# the table runs all it mixes; the whole-only ones last, so that adding them changes no earlier tie
WHOLE_TIE_ORDER = ("taylor:1", "taylor:2", "taylor:1.5", "learned", "table") + WHOLE_ONLY_CHOICES
CALIBRATION_SEED = SEARCH  # the schedule search's training seeds, apart from the bench's


def calibration_schedule(interval: int, steps: int) -> str:
    """The policy spec whose every forecast is at `interval` steps from the last of two computes that far apart."""
    if interval == 1:
        return "schedule:" + "".join("0" if s % 3 == 2 and s < steps - 1 else "1" for s in range(steps))
    return f"fixed:{interval}"


def spacing_choices(winner: dict[int, str], intervals: Sequence[int]) -> list[str]:
    """The table's choice for each spacing 1..max(intervals): the winner of the nearest calibrated interval below it
    (the smallest, below all)."""
    return [winner[max([n for n in intervals if n <= spacing], default=intervals[0])]
            for spacing in range(1, intervals[-1] + 1)]


SCHEDULE_SPECS = ("fixed:N | threshold:DELTA | schedule:MASK (its own step count only) | ts-schedule:N (TaylorSeer's "
                  "computes at interval N) | learned:TARGET (the policy at --policy) | searched:FILE (the masks of a "
                  "searched_schedules.json, at its step count)")


def schedule_policies(spec: str, steps: int, policy_dir: Path | None = None) -> list[CachePolicy]:
    """The policies `spec` stands for at `steps` steps (none where it does not apply to that count: a mask of
    another length); an InvalidInputError for a spec it cannot build, before any sampling."""
    name, _, arg = spec.partition(":")
    try:
        if name == "ts-schedule":
            return [Schedule([c == "1" for c in taylorseer_mask(int(arg), steps)])]
        if name == "learned":
            if policy_dir is None:
                raise InvalidInputError(f"{spec}: a learned policy's schedule needs the policy directory (--policy)")
            from cachepilot.policies.learned import LearnedPolicy

            return [LearnedPolicy(policy_dir, target=float(arg))]
        if name == "searched":
            found = SearchedSchedules.read(arg)
            if found.num_steps != steps:
                return []
            return [Schedule([c == "1" for c in entry["mask"]]) for _, entry in sorted(found.schedules.items())]
        if name == "schedule" and len(arg) != steps:
            return []
        return [make_policy(spec)]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        if isinstance(err, InvalidInputError):
            raise
        raise InvalidInputError(f"bad schedule spec {spec!r} ({err}); expected {SCHEDULE_SPECS}") from None


def calibrate_gate(
    pipe, head: str | Path, conditions: Sequence[dict], counts: Sequence[int],
    intervals: Sequence[int] = (1, 2, 3, 4, 5, 6, 8),
    samples: int = 16, call_kwargs: dict | None = None, seed: int = CALIBRATION_SEED, out: Path | None = None,
    progress: bool = True, schedules: Sequence[str] = (), schedule_counts: Sequence[int] | None = None,
    policy_dir: Path | None = None,
) -> dict:
    """{"counts": {steps: {"choices": [per spacing 1..max(intervals)], "psnr": {interval: {choice: dB}}}},
    "schedules": {steps: {policy spec at a call: {"spec": as given, "choice": winner, "psnr": {choice: dB}}}}, ...}.

    A spacing not calibrated takes the winner of the nearest calibrated interval below it (the smallest, below all).
    `schedules` (see SCHEDULE_SPECS) are scored whole at each of `schedule_counts` (default: `counts`).
    With `out` (the head's directory) the record is written after each count (by rank 0 under torchrun): an
    interruption keeps the counts done, and a later call with the same samples, seed and intervals only measures
    the counts and schedules missing; a call with others is refused before any sampling (it would drop the rest).
    """
    if not counts or any(isinstance(c, bool) or not isinstance(c, int) or c < 2 for c in counts):
        raise InvalidInputError(f"step counts must be integers >= 2, got {list(counts)}")
    if not intervals or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in intervals):
        raise InvalidInputError(f"intervals must be integers >= 1, got {list(intervals)}")
    if samples < 1 or not conditions:
        raise InvalidInputError("calibration needs at least one sample and one condition")
    schedule_counts = list(counts if schedule_counts is None else schedule_counts)
    if any(isinstance(c, bool) or not isinstance(c, int) or c < 2 for c in schedule_counts):
        raise InvalidInputError(f"schedule step counts must be integers >= 2, got {schedule_counts}")
    policies = {steps: [(spec, policy) for spec in schedules for policy in schedule_policies(spec, steps, policy_dir)]
                for steps in schedule_counts}  # every spec built (and checked) before any sampling
    learned = Learned.from_pretrained(head)  # loads (and checks) the head before any sampling
    intervals = sorted(set(intervals))
    chosen = [conditions[i % len(conditions)] for i in range(samples)]
    seeds = [seed + i for i in range(samples)]
    forecasters = {"learned": learned, "taylor:1": "taylor:1", "taylor:2": "taylor:2", "taylor:1.5": "taylor:1.5",
                   **{name: name for name in WHOLE_ONLY_CHOICES}}
    record = {"samples": samples, "seed": seed, "intervals": intervals, "counts": {}, "schedules": {}}
    if out is not None and (Path(out) / GATE_FILE).is_file():
        stored = read_json_object(Path(out) / GATE_FILE, "the forecaster gate")
        other = [key for key in ("samples", "seed", "intervals") if stored.get(key) != record[key]]
        if other:  # written over, the gate would lose the counts and schedules not asked for again
            raise InvalidInputError(
                f"{Path(out) / GATE_FILE} was calibrated with other {' / '.join(other)} "
                f"({', '.join(f'{k} {stored.get(k)!r}' for k in other)}; asked: "
                f"{', '.join(f'{k} {record[k]!r}' for k in other)}): calibrate with its settings to add to it, "
                "or move the file away to start afresh")
        record["counts"] = dict(stored.get("counts") or {})
        record["schedules"] = {k: dict(v) for k, v in (stored.get("schedules") or {}).items()}
    counts = [steps for steps in counts if str(steps) not in record["counts"]]

    def missing(steps: int, policy: CachePolicy) -> list[str]:
        entry = record["schedules"].get(str(steps), {}).get(policy.spec(), {})
        return [c for c in SCHEDULE_CHOICES if c not in entry.get("psnr", {})]

    todo = {steps: [(spec, policy) for spec, policy in policies[steps] if missing(steps, policy)]
            for steps in schedule_counts}
    runs = {steps: _schedule_runs(todo.get(steps, []), lambda policy, steps=steps: missing(steps, policy))
            for steps in schedule_counts}
    jobs = {steps: ([(calibration_schedule(n, steps), name) for n in intervals for name in GATE_CHOICES]
                    if steps in counts else [],
                    [(policy, name) for _, policy, names in runs.get(steps, []) for name in names])
            for steps in list(counts) + [s for s, left in todo.items() if left and s not in counts]}
    rank, world = distributed.setup()
    mine = sum(len(distributed.share(len(batch), rank, world)) for pair in jobs.values() for batch in pair)
    with tqdm(total=mine, desc="calibrate forecaster", disable=not progress or rank != 0) as bar:
        # the spacing tables first: a gate is only written once it has one
        for steps, (spacing_jobs, schedule_jobs) in jobs.items():
            driver = SamplingDriver(pipe, steps, call_kwargs)
            reference = driver.sample(chosen, seeds).images

            def score(job: tuple[str | CachePolicy, str]) -> float:
                policy, name = job
                with caching(pipe, policy, forecasters[name]):
                    return psnr(driver.sample(chosen, seeds).images, reference)

            if spacing_jobs:
                flat = iter(distributed.map_shared(score, spacing_jobs, bar.update))
                scores = {n: {name: next(flat) for name in GATE_CHOICES} for n in intervals}
                winner = {n: max(TIE_ORDER, key=lambda c: scores[n][c]) for n in intervals}
                choices = spacing_choices(winner, intervals)
                record["counts"][str(steps)] = {"choices": choices, "psnr": {str(n): scores[n] for n in intervals}}
            if schedule_jobs:  # the spacing tables as they stand, without whole-schedule choices
                forecasters["table"] = Gated(learned, {int(n): e["choices"] for n, e in record["counts"].items()})
                flat = iter(distributed.map_shared(score, schedule_jobs, bar.update))
                for spec, policy, names in runs[steps]:
                    entry = record["schedules"].setdefault(str(steps), {}).setdefault(policy.spec(), {"psnr": {}})
                    entry["psnr"].update({name: next(flat) for name in names})
                    entry.update(spec=spec, choice=max(WHOLE_TIE_ORDER,
                                                       key=lambda c: entry["psnr"].get(c, float("-inf"))))
            if out is not None:
                distributed.on_rank_zero(write_gate, Path(out), record)
    return record


def _schedule_runs(todo: list[tuple[str, CachePolicy]], missing) -> list[tuple[str, CachePolicy, list[str]]]:
    """(spec, policy, forecasters to score it with) of each whole schedule: those `missing` from its entry, none
    for a later spec whose policy reports the same spec at a call (it shares the first one's entry)."""
    runs, seen = [], set()
    for spec, policy in todo:
        runs.append((spec, policy, [] if policy.spec() in seen else missing(policy)))
        seen.add(policy.spec())
    return runs
