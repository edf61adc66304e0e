"""Greedy sweeps after a lean fit: does moving each target's chosen mask, with its chosen forecaster, on the fit's
own few references pay held out? (On the scenes model at 50 steps it did not: docs/research-log.md.)

    OMP_NUM_THREADS=1 python -m experiments.lean_sweeps --pipeline checkpoints/scenes-flux --fit LEAN --out COPY \
        [--sweeps 2]
    cachepilot bench --pipeline checkpoints/scenes-flux --cache COPY --samples 32 --steps 50 --repeats 1 \
        --methods searched-schedule --out OUT

LEAN is the output of `cachepilot fit --recipe lean`; COPY is written as a copy of it (its bench left out) whose
searched schedules are the swept ones: the same training conditions (the fit's split), seeds and sample count,
each sweep's moves forked from its incumbent (`train.incremental`). Prints each target's training PSNR before and
after, and the evaluations spent.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from cachepilot.bench.counting import StackCounter
from cachepilot.driver import SamplingDriver
from cachepilot.loading import load_pipeline
from cachepilot.predictors.spec import make_predictor
from cachepilot.searched import SCHEDULES_FILE, SearchedSchedules
from cachepilot.train.incremental import MaskScorer
from cachepilot.train.schedule_search import sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--fit", type=Path, required=True, help="a lean fit's output directory")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sweeps", type=int, default=2)
    args = parser.parse_args()
    shutil.copytree(args.fit, args.out, ignore=shutil.ignore_patterns("bench"))
    config = json.loads((args.out / "cachepilot_config.json").read_text())
    split = json.loads((args.out / "conditions.json").read_text())
    record = SearchedSchedules.read(args.out / SCHEDULES_FILE)
    pipe = load_pipeline(args.pipeline)
    driver = SamplingDriver(pipe, record.num_steps, config["call_kwargs"])
    scorer = MaskScorer(driver, split["train"]["conditions"], 0, int(record.settings["samples"]),
                        int(record.settings["seed"]))
    for target, entry in record.schedules.items():
        mask = [c == "1" for c in entry["mask"]]
        with StackCounter(pipe.transformer) as counter:
            moved, score, _ = sweep(scorer, make_predictor(entry["predictor"]), mask, entry["train_psnr"],
                                    args.sweeps, desc=f"sweeps {target}")
        print(f"{target}: {entry['predictor']}, training PSNR {entry['train_psnr']:.2f} -> {score:.2f}, "
              f"{'moved' if moved != mask else 'kept'}, {counter.evaluations:,.0f} evaluations", flush=True)
        record.add(float(target), moved, score, predictor=entry["predictor"])
    record.settings["sweeps"] = args.sweeps
    record.write(args.out / SCHEDULES_FILE)


if __name__ == "__main__":
    main()
