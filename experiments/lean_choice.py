"""How the lean fit's choices on a few training samples fare held out: per target, every start mask with Taylor-1
and every lean forecaster on the chosen mask, on the training samples (per sample) and on held-out ones; then the
held-out PSNR of what each rule picks: the forecaster with the best training mean, or `choose_forecaster`'s (the
first unless another's paired gain exceeds its standard error), against the best on that mask held out.

    OMP_NUM_THREADS=1 python -m experiments.lean_choice --model scenes --steps 50 [--train 4 --held-out 32 \\
        --targets 0.2 0.3 0.4 0.5 --out lean_choice_scenes_50.json]
    python -m experiments.lean_choice --report lean_choice_*.json   # each statistic's shortfall, over every point

The report: per point, how far below the best held out (the best start with Taylor-1; the best forecaster on the
chosen mask) the pick of each statistic of the training samples lands, and the mean over the points.

Training samples: the fit split of the model's training conditions (as `cachepilot fit` splits them), seeds from the
search's; held out: the model's held-out conditions (digits: every class in turn), seeds 20000+ (the bench's).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import numpy as np

from cachepilot.conditions import load_conditions, split_conditions
from cachepilot.driver import SamplingDriver
from cachepilot.embedded.base import get_embedded
from cachepilot.seeds import BENCH, SEARCH
from cachepilot.train.incremental import MaskScorer
from cachepilot.train.lean import LEAN_FORECASTERS, choose_forecaster, lean_starts

TRAIN_CONDITIONS = {"scenes": "bench/prompts/scenes_train.txt", "digits": "classes:0-9"}


MASK_STATISTICS = {"mean": lambda rows: rows.mean(axis=1), "median": lambda rows: np.median(rows, axis=1),
                   "minimum": lambda rows: rows.min(axis=1)}


def report(paths: list[str]) -> None:
    """Per point and statistic: held-out PSNR of its pick minus the best held out; then the mean over the points."""
    short: dict[str, list[float]] = {}
    for path in paths:
        with open(path) as handle:
            record = json.load(handle)
        for target, entry in record["targets"].items():
            starts, held = np.array(entry["starts_train"]), entry["starts_held"]
            picks = {f"mask by {name}": held[int(np.argmax(fn(starts)))] - max(held)
                     for name, fn in MASK_STATISTICS.items()}
            picks["mask: uniform unless beaten beyond SE"] = held[choose_forecaster(starts)] - max(held)
            forecasters, on_mask = np.array(entry["forecasters_train"]), entry["forecasters_held"]
            picks["forecaster by mean"] = on_mask[int(np.argmax(forecasters.mean(axis=1)))] - max(on_mask)
            picks["forecaster by median"] = on_mask[int(np.argmax(np.median(forecasters, axis=1)))] - max(on_mask)
            picks["forecaster: choose_forecaster"] = on_mask[choose_forecaster(forecasters)] - max(on_mask)
            print(f"{record['model']} {record['steps']} / {target}: "
                  + ", ".join(f"{name} {value:+.2f}" for name, value in picks.items()))
            for name, value in picks.items():
                short.setdefault(name, []).append(value)
    for name, values in short.items():
        print(f"{name}: {np.mean(values):+.2f} dB on average over {len(values)} points, worst {min(values):+.2f}")


def add_scoring_args(parser: argparse.ArgumentParser, steps: int) -> None:
    """The model, step count, targets and sample counts every lean-choice study scores on."""
    parser.add_argument("--model", default="scenes", choices=sorted(TRAIN_CONDITIONS))
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--targets", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5])
    parser.add_argument("--train", type=int, default=4)
    parser.add_argument("--held-out", type=int, default=32)


def scorers(args: argparse.Namespace) -> tuple[Callable, Callable, dict]:
    """(per-sample PSNR on the training samples, mean PSNR held out, the record's header): the fit split's conditions
    with the search's seeds, the model's held-out conditions with the bench's."""
    model = get_embedded(args.model)
    driver = SamplingDriver(model.load(), args.steps, model.call_kwargs())
    train = list(split_conditions(load_conditions(TRAIN_CONDITIONS[args.model])).train.conditions)
    held = model.conditions(args.held_out) or [{"class_labels": i % 10} for i in range(args.held_out)]
    record = {"model": args.model, "steps": args.steps, "train": args.train, "held_out": args.held_out, "targets": {}}
    return (MaskScorer(driver, train, 0, args.train, SEARCH).per_sample,
            MaskScorer(driver, held, 0, args.held_out, BENCH).score, record)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_scoring_args(parser, steps=50)
    parser.add_argument("--out", default=None)
    parser.add_argument("--report", nargs="+", default=None, help="score files to summarise (no sampling)")
    args = parser.parse_args()
    if args.report:
        report(args.report)
        return
    on_train, on_held, record = scorers(args)
    print("| target | mask (train / held) | best mean: forecaster, held | choose_forecaster: forecaster, held "
          "| best held on the mask |")
    for target in args.targets:
        starts = lean_starts(args.steps, target)
        starts_train = [on_train(mask, LEAN_FORECASTERS[0]) for mask in starts]
        starts_held = [on_held(mask, LEAN_FORECASTERS[0]) for mask in starts]
        chosen = int(np.argmax([np.mean(rows) for rows in starts_train]))
        mask = starts[chosen]
        rows = np.array([starts_train[chosen]] + [on_train(mask, f) for f in LEAN_FORECASTERS[1:]])
        held_scores = [starts_held[chosen]] + [on_held(mask, f) for f in LEAN_FORECASTERS[1:]]
        by_mean, by_rule = int(np.argmax(rows.mean(axis=1))), choose_forecaster(rows)
        oracle = int(np.argmax(held_scores))
        record["targets"][str(target)] = {
            "starts": ["".join("1" if on else "0" for on in m) for m in starts], "starts_train": starts_train,
            "starts_held": starts_held, "chosen": chosen, "forecasters_train": rows.tolist(),
            "forecasters_held": held_scores, "by_mean": LEAN_FORECASTERS[by_mean], "by_rule": LEAN_FORECASTERS[by_rule]}
        print(f"| {target} | start {chosen} ({rows[0].mean():.2f} / {held_scores[0]:.2f}; best start held "
              f"{max(starts_held):.2f}) | {LEAN_FORECASTERS[by_mean]}, {held_scores[by_mean]:.2f} | "
              f"{LEAN_FORECASTERS[by_rule]}, {held_scores[by_rule]:.2f} | {LEAN_FORECASTERS[oracle]}, "
              f"{held_scores[oracle]:.2f} |", flush=True)
        if args.out:
            with open(args.out, "w") as handle:
                json.dump(record, handle, indent=1)


if __name__ == "__main__":
    main()
