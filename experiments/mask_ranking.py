"""Do a few training samples rank two checkpoints' masks as held-out prompts do? Each target's mask of two
checkpoints, scored with one forecaster on the first N training samples of a fit's split (N = 4 and 32 by default)
and on held-out conditions.

    OMP_NUM_THREADS=1 python -m experiments.mask_ranking \\
        --a checkpoints/scenes-flux-cache/searched_schedules_50.json --b LEAN/searched_schedules.json \\
        [--model scenes --steps 50 --targets 0.2 0.4 0.5 --predictor taylor:1 --held-out 32]

Training samples: the fit split of the model's training prompts (as `cachepilot fit` splits them), seeds from the
search's; held out: the model's held-out conditions, seeds 20000+ (the bench's).
"""

from __future__ import annotations

import argparse

from cachepilot.conditions import load_conditions, split_conditions
from cachepilot.driver import SamplingDriver
from cachepilot.embedded.base import get_embedded
from cachepilot.predictors.spec import make_predictor
from cachepilot.searched import SearchedSchedules
from cachepilot.seeds import SEARCH
from cachepilot.train.incremental import MaskScorer

TRAIN_PROMPTS = {"scenes": "bench/prompts/scenes_train.txt"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", required=True, help="searched_schedules JSON of the first checkpoint")
    parser.add_argument("--b", required=True, help="searched_schedules JSON of the second")
    parser.add_argument("--model", default="scenes", choices=sorted(TRAIN_PROMPTS))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--targets", nargs="+", default=["0.2", "0.4", "0.5"])
    parser.add_argument("--predictor", default="taylor:1")
    parser.add_argument("--train", type=int, nargs="+", default=[4, 32])
    parser.add_argument("--held-out", type=int, default=32)
    args = parser.parse_args()
    model = get_embedded(args.model)
    driver = SamplingDriver(model.load(), args.steps, model.call_kwargs())
    masks = [{t: [c == "1" for c in SearchedSchedules.read(path).schedules[t]["mask"]] for t in args.targets}
             for path in (args.a, args.b)]
    train = list(split_conditions(load_conditions(TRAIN_PROMPTS[args.model])).train.conditions)
    forecaster = make_predictor(args.predictor)
    sets = [(f"{n} training samples", train, n, SEARCH) for n in args.train]
    sets.append((f"{args.held_out} held out", model.conditions(args.held_out), args.held_out, 20000))
    print("| target | " + " | ".join(name for name, *_ in sets) + " |")
    scorers = [MaskScorer(driver, conditions, 0, n, seed) for _, conditions, n, seed in sets]
    for target in args.targets:
        cells = [" / ".join(f"{s.score(m[target], forecaster):.2f}" for m in masks) for s in scorers]
        print(f"| {target} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
