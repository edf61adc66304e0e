"""Every forecaster on whole schedules, training and held-out samples in one batch: the gate's choices made on the
training rows (as `cachepilot calibrate-forecaster` makes them) and what each is worth on held-out prompts.

    python -m experiments.whole_schedules --steps 50 --specs learned:0.2 fixed:2 threshold:0.1 \\
        searched:checkpoints/scenes-flux-cache/searched_schedules_50.json ... --train 384 --held 64 \\
        --device cuda --out scores_50.json       # 75 steps: --table-steps 50 100 (the tables the gate reads there)
    python -m experiments.whole_schedules --report scores_*.json [--write-gate DIR]   # + policy vs training-free

Each candidate (head, Taylor-1, Taylor-2, their mean `taylor:1.5`, the spacing table's mix) samples TRAIN training conditions (the cache's
train split, seeds 300,000+: the calibration's) and HELD held-out ones (the bench's prompts and seeds 20,000+) in
one call; the spacing tables come first, at --table-steps. Why a tool of its own: on a GPU a batch of 448 samples
costs about what 64 do (the scenes model is launch-bound), so the held-out figures of every choice come for free, and
a gate calibrated on more samples flips fewer close calls (issue 12: 384 samples). The report prints, per schedule,
the choice and the held-out difference to the best Taylor with its paired standard error over the held-out samples,
and writes the gate (`--write-gate`) in `calibrate-forecaster`'s format. Scores are kept after every schedule;
`--resume` scores only what the file lacks (a new candidate, a new schedule), `--deadline` starts no schedule after
that many seconds (a device lease ends).

`--train 0` scores the *shipped* gate (the cache's `predictors/forecaster_gate.json`, as `gated:DIR` forecasts) against
Taylor-1 and Taylor-2 (and on training-free schedules their mean, for `versus_training_free`) on held-out rows only,
with no choice made; with `--held-offset K` on held-out samples K.. (the bench's samples K.., seeds 20,000 + K..) that
no choice was ever looked at on, to settle close calls:

    python -m experiments.whole_schedules --train 0 --held 192 --held-offset 64 --steps 50 \
        --specs threshold:0.07 threshold:0.5 --out shipped_50.json

`--extra SPEC ...` scores more forecasters as whole-schedule choices (tried after the gate's own, in that order);
`--candidates NAME ...` scores only those of the gate's choices (no spacing tables unless `table` is one):

    python -m experiments.whole_schedules --steps 50 --specs learned:0.5 learned:0.3 \
        --candidates taylor:1 taylor:2 taylor:1.5 learned --extra hermite:2 foca --train 384 --held 64
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from cachepilot.cache_checkpoint import CacheCheckpoint
from cachepilot.embedded.base import conditions_for, get_embedded
from cachepilot.predictors.gated import GATE_CHOICES, SCHEDULE_CHOICES, WHOLE_ONLY_CHOICES, Gated, write_gate
from cachepilot.quality import psnr_per_image
from cachepilot.seeds import BENCH
from cachepilot.train.calibrate_forecaster import (CALIBRATION_SEED, TIE_ORDER, WHOLE_TIE_ORDER,
                                                   calibration_schedule, schedule_policies, spacing_choices)

SCENES_MODEL = get_embedded("scenes")
SCENES = {"pipeline": str(SCENES_MODEL.pipeline_dir), "cache": str(SCENES_MODEL.cache_dir),
          "call_kwargs": SCENES_MODEL.call_kwargs()}  # the call the scenes model was trained for
HELD_SEED = BENCH  # the bench's


def score(args: argparse.Namespace) -> dict:
    from cachepilot.driver import SamplingDriver, caching
    from cachepilot.loading import load_pipeline
    from cachepilot.predictors.learned import Learned
    from cachepilot.core.actions import Action

    started = time.time()
    pipe = load_pipeline(args.pipeline, device=args.device)
    checkpoint = CacheCheckpoint.from_pretrained(args.cache)
    cache = checkpoint.root
    learned = Learned.from_pretrained(checkpoint.predictor_dir)
    splits = checkpoint.conditions()
    train = list(splits.train.conditions)
    end = args.held_offset + args.held
    held = conditions_for(pipe, end) or list(splits.evaluation.conditions)[:end]
    held = [held[i % len(held)] for i in range(args.held_offset, end)]
    conditions = [train[i % len(train)] for i in range(args.train)] + held
    seeds = [CALIBRATION_SEED + i for i in range(args.train)] + [HELD_SEED + i for i in range(args.held_offset, end)]
    n = args.train
    forecasters = {"learned": learned, "taylor:1": "taylor:1", "taylor:2": "taylor:2", "taylor:1.5": "taylor:1.5",
                   **{name: name for name in WHOLE_ONLY_CHOICES + tuple(args.extra)}}
    shipped = Gated.from_pretrained(checkpoint.predictor_dir) if n == 0 else None
    if shipped is not None:
        forecasters["gate"] = shipped
    record = {"train": args.train, "held": args.held, "seed": CALIBRATION_SEED, "intervals": args.intervals,
              "held_offset": args.held_offset,
              "device": torch.cuda.get_device_name() if str(pipe.device).startswith("cuda") else str(pipe.device),
              "counts": {}, "schedules": {}, "seconds": {}}
    out = Path(args.out)
    if args.resume and out.is_file():
        stored = json.loads(out.read_text())
        if any(stored.get(key, 0) != record[key] for key in ("train", "held", "seed", "intervals", "held_offset")):
            raise SystemExit(f"{out} was scored on other samples or intervals: not resumed")
        record.update(counts=stored["counts"], schedules=stored["schedules"], seconds=stored.get("seconds", {}))
        if stored.get("device", record["device"]) != record["device"]:  # scores of two machines (same samples)
            record["device"] = f"{stored['device']} + {record['device']}"
    drivers: dict[int, tuple] = {}

    def save() -> None:
        record["seconds"]["total"] = round(time.time() - started, 1)
        out.write_text(json.dumps(record, indent=1))

    def reference(steps: int):
        if steps not in drivers:
            driver = SamplingDriver(pipe, steps, args.call_kwargs, batch_size=len(conditions))
            drivers[steps] = (driver, driver.sample(conditions, seeds).images)
        return drivers[steps]

    def candidates(steps: int, policy, names) -> dict:
        driver, ref = reference(steps)
        scored = {}
        for name in names:
            with caching(pipe, policy, forecasters[name]):
                result = driver.sample(conditions, seeds)
            stats = result.stats
            decisions = next(iter(stats.contexts.values())).decisions if stats.contexts else stats.decisions
            computed = (decisions == Action.COMPUTE).float().mean(0)
            per = psnr_per_image(result.images, ref)
            scored[name] = {"held": per[n:].mean().item(), "held_per": [round(v, 3) for v in per[n:].tolist()],
                            "cf_held": computed[n:].mean().item()}
            if n:
                scored[name].update(train=per[:n].mean().item(), cf_train=computed[:n].mean().item())
        return scored

    choices = tuple(args.candidates or SCHEDULE_CHOICES) + tuple(args.extra)
    tables = [] if shipped is not None or "table" not in choices else args.table_steps or [args.steps]
    for steps in tables:  # the shipped gate has its tables
        if str(steps) in record["counts"]:
            continue
        scores = {i: candidates(steps, calibration_schedule(i, steps), GATE_CHOICES) for i in args.intervals}
        winner = {i: max(TIE_ORDER, key=lambda c: scores[i][c]["train"]) for i in args.intervals}
        record["counts"][str(steps)] = {"choices": spacing_choices(winner, args.intervals),
                                        "scores": {str(i): scores[i] for i in args.intervals}}
        save()
    if tables:
        forecasters["table"] = Gated(learned, {int(c): e["choices"] for c, e in record["counts"].items()})
    names = ("gate", "taylor:1", "taylor:2", "taylor:1.5") if shipped is not None else choices
    tie_order = [c for c in WHOLE_TIE_ORDER + tuple(args.extra) if c in names]
    for spec in args.specs:
        for policy in schedule_policies(spec, args.steps, cache / "policy"):
            entry = record["schedules"].setdefault(str(args.steps), {}).setdefault(policy.spec(), {"scores": {}})
            wanted = [c for c in names if c != "taylor:1.5" or shipped is None or spec.startswith(TRAINING_FREE)]
            missing = [c for c in wanted if c not in entry["scores"]]
            if not missing:
                continue
            if time.time() - started > args.deadline:
                print(f"deadline: {policy.spec()} at {args.steps} steps and after not scored")
                save()
                return record
            entry["scores"].update(candidates(args.steps, policy, missing))
            if shipped is not None:  # what the shipped gate forecasts this schedule with (its table where not stored)
                entry.update(spec=spec, choice="gate",
                             gate_choice=shipped.schedules.get(args.steps, {}).get(policy.spec(), "table"))
            else:
                entry.update(spec=spec, choice=max(tie_order, key=lambda c: entry["scores"][c]["train"]))
            save()
    save()
    return record


def merged(paths: list[str]) -> dict:
    """One record from several score files (one per step count, or parts of one)."""
    record: dict = {"counts": {}, "schedules": {}, "devices": []}
    for path in paths:
        part = json.loads(Path(path).read_text())
        for key in ("train", "held", "seed", "intervals", "held_offset"):  # the same samples; the machine may differ
            if record.setdefault(key, part.get(key, 0)) != part.get(key, 0):
                raise ValueError(f"{path}: {key} {part.get(key, 0)!r} differs from the other files' {record[key]!r}")
        record["devices"] = sorted(set(record["devices"]) | {part.get("device", "?")})
        record["counts"].update(part["counts"])
        for steps, by_spec in part["schedules"].items():
            record["schedules"].setdefault(steps, {}).update(by_spec)
    return record


def gate_of(record: dict) -> dict:
    """The gate file's record (`calibrate_gate`'s format): the training rows' scores and choices."""
    return {"samples": record["train"], "seed": record["seed"], "intervals": record["intervals"],
            "counts": {c: {"choices": e["choices"],
                           "psnr": {i: {k: v["train"] for k, v in s.items()} for i, s in e["scores"].items()}}
                       for c, e in record["counts"].items()},
            "schedules": {c: {key: {"spec": e["spec"], "choice": e["choice"],
                                    "psnr": {k: v["train"] for k, v in e["scores"].items()}}
                              for key, e in by_spec.items()} for c, by_spec in record["schedules"].items()}}


def report(record: dict) -> list[dict]:
    """Per schedule: the choice, its held-out PSNR and compute, and its difference to the best Taylor held-out with
    the paired standard error over the held-out samples."""
    rows = []
    for steps, by_spec in sorted(record["schedules"].items(), key=lambda item: int(item[0])):
        for key, entry in by_spec.items():
            scored, choice = entry["scores"], entry["choice"]
            best = max(("taylor:1", "taylor:2"), key=lambda c: scored[c]["held"])
            mean, spread = _paired_mean_se(scored[choice]["held_per"], scored[best]["held_per"])
            shown = f"gate={entry['gate_choice']}" if "gate_choice" in entry else choice
            rows.append({"steps": int(steps), "spec": entry["spec"], "policy": key, "choice": shown,
                         "held": scored[choice]["held"], "cf_held": scored[choice]["cf_held"],
                         "taylor1": scored["taylor:1"]["held"], "taylor2": scored["taylor:2"]["held"],
                         "vs_best_taylor": mean, "se": spread})
    return rows


TRAINING_FREE = ("fixed:", "ts-schedule:", "threshold:")  # the specs of training-free schedules
TRAINING_FREE_FORECASTERS = ("taylor:1", "taylor:2", "taylor:1.5")


def _paired_mean_se(a: list[float], b: list[float]) -> tuple[float, float]:
    diffs = [x - y for x, y in zip(a, b)]
    mean = sum(diffs) / len(diffs)
    return mean, math.sqrt(sum((d - mean) ** 2 for d in diffs) / max(len(diffs) - 1, 1)) / math.sqrt(len(diffs))


def versus_training_free(record: dict, slack: float = 1e-3) -> list[dict]:
    """Per learned-policy schedule (spec `learned:T`): its held-out PSNR with its choice against the best training-free
    schedule (fixed intervals, TaylorSeer's schedule, thresholds, each with Taylor-1, Taylor-2 or their mean) whose
    held-out compute fraction is at most the policy's, and against the searched mask of its budget (the `searched:`
    schedule nearest in compute, within 0.05: a searched mask may leave a compute unspent, with the gate's choice),
    with the paired standard errors of the differences."""
    rows = []
    for steps, by_spec in sorted(record["schedules"].items(), key=lambda item: int(item[0])):
        free = [(e["spec"], name, s) for e in by_spec.values() if e["spec"].startswith(TRAINING_FREE)
                for name, s in e["scores"].items() if name in TRAINING_FREE_FORECASTERS]
        searched = [e["scores"][e["choice"]] for e in by_spec.values() if e["spec"].startswith("searched:")]
        for entry in by_spec.values():
            if not entry["spec"].startswith("learned:"):
                continue
            mine = entry["scores"][entry["choice"]]
            within = [f for f in free if f[2]["cf_held"] <= mine["cf_held"] + slack]
            if not within:
                continue
            spec, name, best = max(within, key=lambda f: f[2]["held"])
            mean, se = _paired_mean_se(mine["held_per"], best["held_per"])
            row = {"steps": int(steps), "policy": entry["spec"], "held": mine["held"], "cf_held": mine["cf_held"],
                   "best": f"{spec}+{name}", "best_held": best["held"], "best_cf": best["cf_held"],
                   "difference": mean, "se": se}
            near = [s for s in searched if abs(s["cf_held"] - mine["cf_held"]) <= 0.05]  # a mask may compute less
            if near:
                same = min(near, key=lambda s: abs(s["cf_held"] - mine["cf_held"]))
                row["searched_held"], row["searched_cf"] = same["held"], same["cf_held"]
                row["vs_searched"], row["vs_searched_se"] = _paired_mean_se(mine["held_per"], same["held_per"])
            rows.append(row)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--specs", nargs="+", default=[], help="as calibrate-forecaster --schedules")
    parser.add_argument("--table-steps", type=int, nargs="+", default=None,
                        help="the spacing tables to calibrate first (default: --steps)")
    parser.add_argument("--intervals", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 8])
    parser.add_argument("--extra", nargs="+", default=[],
                        help="more whole-schedule forecasters (predictor specs, e.g. hermite:2 foca), tried last")
    parser.add_argument("--candidates", nargs="+", default=None,
                        help="score only these of the gate's whole-schedule choices (no spacing tables without 'table')")
    parser.add_argument("--train", type=int, default=384)
    parser.add_argument("--held", type=int, default=64)
    parser.add_argument("--held-offset", type=int, default=0,
                        help="held-out samples from this index on (the bench's samples K.., seeds 20,000 + K..)")
    parser.add_argument("--pipeline", default=SCENES["pipeline"])
    parser.add_argument("--cache", default=SCENES["cache"])
    parser.add_argument("--call-kwargs", type=json.loads, default=SCENES["call_kwargs"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="whole_schedules.json")
    parser.add_argument("--resume", action="store_true", help="keep what --out holds, score what it lacks")
    parser.add_argument("--deadline", type=float, default=math.inf, help="seconds: start no schedule after")
    parser.add_argument("--report", nargs="+", default=None, help="score files to report on (no sampling)")
    parser.add_argument("--write-gate", default=None, help="with --report: write the gate into this directory")
    args = parser.parse_args(argv)
    if args.report is None:
        if args.steps is None or args.train < 0 or args.held < 1 or args.held_offset < 0:
            parser.error("--steps, --train >= 0 (0: the shipped gate), --held >= 1 and --held-offset >= 0 are needed "
                         "to score")
        args.intervals = sorted(set(args.intervals))
        score(args)
        return
    record = merged(args.report)
    if args.write_gate and record["train"] == 0:
        parser.error("--write-gate: these files score the shipped gate on held-out rows (--train 0): no choice made")
    for row in report(record):
        print(f"{row['steps']:>4} {row['spec'][:34]:34s} cf {row['cf_held']:.3f}  T1 {row['taylor1']:6.2f}  "
              f"T2 {row['taylor2']:6.2f}  -> {row['choice']:10s} {row['held']:6.2f}  "
              f"vs best Taylor {row['vs_best_taylor']:+.2f} ± {row['se']:.2f}")
    for row in versus_training_free(record):
        searched = (f"; vs searched (cf {row['searched_cf']:.3f}) {row['searched_held']:6.2f}: "
                    f"{row['vs_searched']:+.2f} ± {row['vs_searched_se']:.2f}" if "vs_searched" in row else "")
        print(f"{row['steps']:>4} {row['policy']:14s} cf {row['cf_held']:.3f} {row['held']:6.2f}  vs best training-free "
              f"{row['best']} (cf {row['best_cf']:.3f}) {row['best_held']:6.2f}: {row['difference']:+.2f} ± "
              f"{row['se']:.2f}{searched}")
    if args.write_gate:
        write_gate(Path(args.write_gate), gate_of(record))


if __name__ == "__main__":
    main()
