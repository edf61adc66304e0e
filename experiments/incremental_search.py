"""The schedule search with and without incremental scoring: the same masks, and what each spends.

    OMP_NUM_THREADS=1 python -m experiments.incremental_search [--model scenes --steps 50 --targets 0.2 0.4
        --samples 4 --max-sweeps 6 --json out.json]

Each target is searched twice on the same training samples (Taylor-1, the full search's starts and sweeps): every
move sampled in full, then every move forked from its sweep's incumbent (`train.incremental`). Printed per target:
transformer evaluations (`StackCounter`), wall and process CPU time of each, whether the masks and scores agree.
"""

from __future__ import annotations

import argparse
import json
import time

from cachepilot.bench.counting import StackCounter
from cachepilot.driver import SamplingDriver
from cachepilot.embedded.base import get_embedded
from cachepilot.train.schedule_search import search_schedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="scenes", choices=["scenes", "digits"])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--targets", type=float, nargs="+", default=[0.2, 0.4])
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-sweeps", type=int, default=6)
    parser.add_argument("--predictor", default="taylor:1")
    parser.add_argument("--json")
    args = parser.parse_args()
    model = get_embedded(args.model)
    pipe = model.load()
    driver = SamplingDriver(pipe, args.steps, model.call_kwargs())
    conditions = model.conditions(max(args.samples, 16))
    rows = []
    for target in args.targets:
        found = {}
        for incremental in (False, True):
            wall, cpu = time.perf_counter(), time.process_time()
            with StackCounter(pipe.transformer) as counter:
                mask, score = search_schedule(driver, conditions, target, samples=args.samples,
                                              predictor=args.predictor, max_sweeps=args.max_sweeps,
                                              progress=False, incremental=incremental)
            found[incremental] = (mask, score)
            rows.append({"target": target, "incremental": incremental, "evaluations": counter.evaluations,
                         "wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(time.process_time() - cpu, 1),
                         "psnr": round(score, 3), "computes": sum(mask)})
            print(json.dumps(rows[-1]), flush=True)
        print(f"target {target:g}: same mask {found[True][0] == found[False][0]}, "
              f"same score {found[True][1] == found[False][1]}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
