"""Every forecaster on whole schedules, training and held-out samples in one batch: the gate's choices made on the
training rows (as `cachepilot calibrate-forecaster` makes them) and what each is worth on held-out prompts.

    python -m cachepilot.bench.whole_schedules --steps 50 --specs learned:0.2 fixed:2 threshold:0.1 \\
        searched:checkpoints/scenes-flux-cache/searched_schedules_50.json ... --train 384 --held 64 \\
        --device cuda --out scores_50.json       # 75 steps: --table-steps 50 100 (the tables the gate reads there)
    python -m cachepilot.bench.whole_schedules --report scores_*.json [--write-gate DIR]

Each candidate (head, Taylor-1, Taylor-2, their mean `taylor:1.5`, the spacing table's mix) samples TRAIN training conditions (the cache's
train split, seeds 300,000+: the calibration's) and HELD held-out ones (the bench's prompts and seeds 20,000+) in
one call; the spacing tables come first, at --table-steps. Why a tool of its own: on a GPU a batch of 448 samples
costs about what 64 do (the scenes model is launch-bound), so the held-out figures of every choice come for free, and
a gate calibrated on more samples flips fewer close calls (issue 12: 384 samples). The report prints, per schedule,
the choice and the held-out difference to the best Taylor with its paired standard error over the held-out samples,
and writes the gate (`--write-gate`) in `calibrate-forecaster`'s format. Scores are kept after every schedule;
`--resume` scores only what the file lacks (a new candidate, a new schedule), `--deadline` starts no schedule after
that many seconds (a device lease ends).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from cachepilot.checkpoints import CHECKPOINTS_DIR
from cachepilot.predictors.gated import GATE_CHOICES, SCHEDULE_CHOICES, Gated, write_gate
from cachepilot.quality import psnr_per_image
from cachepilot.train.calibrate_forecaster import (CALIBRATION_SEED, TIE_ORDER, WHOLE_TIE_ORDER,
                                                   calibration_schedule, schedule_policies, spacing_choices)

SCENES = {"pipeline": str(CHECKPOINTS_DIR / "scenes-flux"), "cache": str(CHECKPOINTS_DIR / "scenes-flux-cache"),
          "call_kwargs": {"height": 32, "width": 32, "max_sequence_length": 16, "negative_prompt": "",
                          "true_cfg_scale": 4.0}}
HELD_SEED = 20_000  # the bench's


def score(args: argparse.Namespace) -> dict:
    from cachepilot.driver import SamplingDriver, caching
    from cachepilot.embedded.quality import default_conditions
    from cachepilot.loading import load_pipeline
    from cachepilot.predictors.learned import Learned
    from cachepilot.runtime.actions import Action

    started = time.time()
    pipe = load_pipeline(args.pipeline, device=args.device)
    cache = Path(args.cache)
    learned = Learned.from_pretrained(cache / "predictors")
    splits = json.loads((cache / "conditions.json").read_text())
    train = splits["train"]["conditions"]
    held = default_conditions(pipe, args.held) or list(splits["evaluation"]["conditions"])[:args.held]
    conditions = [train[i % len(train)] for i in range(args.train)] + [held[i % len(held)] for i in range(args.held)]
    seeds = [CALIBRATION_SEED + i for i in range(args.train)] + [HELD_SEED + i for i in range(args.held)]
    n = args.train
    forecasters = {"learned": learned, "taylor:1": "taylor:1", "taylor:2": "taylor:2", "taylor:1.5": "taylor:1.5"}
    record = {"train": args.train, "held": args.held, "seed": CALIBRATION_SEED, "intervals": args.intervals,
              "device": torch.cuda.get_device_name() if str(pipe.device).startswith("cuda") else str(pipe.device),
              "counts": {}, "schedules": {}, "seconds": {}}
    out = Path(args.out)
    if args.resume and out.is_file():
        stored = json.loads(out.read_text())
        if any(stored.get(key) != record[key] for key in ("train", "held", "seed", "intervals")):
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
            scored[name] = {"train": per[:n].mean().item(), "held": per[n:].mean().item(),
                            "held_per": [round(v, 3) for v in per[n:].tolist()],
                            "cf_train": computed[:n].mean().item(), "cf_held": computed[n:].mean().item()}
        return scored

    for steps in args.table_steps or [args.steps]:
        if str(steps) in record["counts"]:
            continue
        scores = {i: candidates(steps, calibration_schedule(i, steps), GATE_CHOICES) for i in args.intervals}
        winner = {i: max(TIE_ORDER, key=lambda c: scores[i][c]["train"]) for i in args.intervals}
        record["counts"][str(steps)] = {"choices": spacing_choices(winner, args.intervals),
                                        "scores": {str(i): scores[i] for i in args.intervals}}
        save()
    forecasters["table"] = Gated(learned, {int(c): e["choices"] for c, e in record["counts"].items()})
    for spec in args.specs:
        for policy in schedule_policies(spec, args.steps, cache / "policy"):
            entry = record["schedules"].setdefault(str(args.steps), {}).setdefault(policy.spec(), {"scores": {}})
            missing = [c for c in SCHEDULE_CHOICES if c not in entry["scores"]]
            if not missing:
                continue
            if time.time() - started > args.deadline:
                print(f"deadline: {policy.spec()} at {args.steps} steps and after not scored")
                save()
                return record
            entry["scores"].update(candidates(args.steps, policy, missing))
            entry.update(spec=spec, choice=max(WHOLE_TIE_ORDER, key=lambda c: entry["scores"][c]["train"]))
            save()
    save()
    return record


def merged(paths: list[str]) -> dict:
    """One record from several score files (one per step count, or parts of one)."""
    record: dict = {"counts": {}, "schedules": {}, "devices": []}
    for path in paths:
        part = json.loads(Path(path).read_text())
        for key in ("train", "held", "seed", "intervals"):  # the same samples; the machine may differ
            if record.setdefault(key, part[key]) != part[key]:
                raise ValueError(f"{path}: {key} {part[key]!r} differs from the other files' {record[key]!r}")
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
            diffs = [a - b for a, b in zip(scored[choice]["held_per"], scored[best]["held_per"])]
            mean = sum(diffs) / len(diffs)
            spread = math.sqrt(sum((d - mean) ** 2 for d in diffs) / max(len(diffs) - 1, 1)) / math.sqrt(len(diffs))
            rows.append({"steps": int(steps), "spec": entry["spec"], "policy": key, "choice": choice,
                         "held": scored[choice]["held"], "cf_held": scored[choice]["cf_held"],
                         "taylor1": scored["taylor:1"]["held"], "taylor2": scored["taylor:2"]["held"],
                         "vs_best_taylor": mean, "se": spread})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--specs", nargs="+", default=[], help="as calibrate-forecaster --schedules")
    parser.add_argument("--table-steps", type=int, nargs="+", default=None,
                        help="the spacing tables to calibrate first (default: --steps)")
    parser.add_argument("--intervals", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 8])
    parser.add_argument("--train", type=int, default=384)
    parser.add_argument("--held", type=int, default=64)
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
        if args.steps is None or args.train < 1 or args.held < 1:
            parser.error("--steps, and --train / --held >= 1, are needed to score")
        args.intervals = sorted(set(args.intervals))
        score(args)
        return
    record = merged(args.report)
    for row in report(record):
        print(f"{row['steps']:>4} {row['spec'][:34]:34s} cf {row['cf_held']:.3f}  T1 {row['taylor1']:6.2f}  "
              f"T2 {row['taylor2']:6.2f}  -> {row['choice']:8s} {row['held']:6.2f}  "
              f"vs best Taylor {row['vs_best_taylor']:+.2f} ± {row['se']:.2f}")
    if args.write_gate:
        write_gate(Path(args.write_gate), gate_of(record))


if __name__ == "__main__":
    main()
