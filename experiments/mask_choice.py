"""Run the full recipe's mask choice (`train.mask_choice`) on an existing cache checkpoint: per target of one of its
searched-schedules files, the head's mask against the lean search's Taylor-1 mask, each with its best forecaster on
the gate's samples. Rewrites that file and adds the candidates to the gate: run it on a copy.

    python -m experiments.mask_choice --cache COPY --schedules COPY/searched_schedules_50.json \\
        [--pipeline DIR --prompts FILE --call-kwargs JSON] [--search-samples 16]

The cache's own training conditions (conditions.json) when it has them, else the train split of --prompts (every
class of a class-conditional pipeline by default). Then `cachepilot bench --cache COPY --methods searched-schedule`
on held-out seeds tells whether the choice paid.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cachepilot.cache_checkpoint import CacheCheckpoint
from cachepilot.cli.common import add_pipeline_args, call_kwargs, train_conditions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, required=True, help="a cache checkpoint directory (a copy)")
    parser.add_argument("--schedules", type=Path, default=None, help="its searched-schedules file (default: the main)")
    parser.add_argument("--search-samples", type=int, default=16, help="samples of the Taylor-1 starts' choice")
    add_pipeline_args(parser)
    args = parser.parse_args()
    from cachepilot.loading import load_pipeline
    from cachepilot.train.mask_choice import choose_masks

    cache = CacheCheckpoint(args.cache)
    pipe = load_pipeline(args.pipeline, device=args.device, dtype=args.dtype)
    split = cache.conditions()
    conditions = list(split.train.conditions) if split is not None else train_conditions(args, pipe)
    record = choose_masks(pipe, args.cache / "predictors", args.schedules or cache.schedules_path(), conditions,
                          call_kwargs(args), args.search_samples)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
