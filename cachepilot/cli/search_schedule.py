"""`cachepilot search-schedule`: offline greedy search of the best fixed schedule per budget.

Under `torchrun` every rank loads the pipeline (on its own GPU with `--device cuda`) and scores its share of
each round's candidates; every rank finds the same schedules, and rank 0 alone prints and writes them."""

from __future__ import annotations

import argparse
from pathlib import Path

from cachepilot import seeds
from cachepilot.cli.common import OUT, add_pipeline_args, call_kwargs, check_at_least, train_conditions
from cachepilot.errors import CachepilotError


def register(sub: argparse._SubParsersAction) -> None:
    se = sub.add_parser("search-schedule", help="offline greedy search of the best fixed schedule per budget")
    se.add_argument("--targets", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5])
    se.add_argument("--out", type=Path, default=OUT / "searched_schedules.json")
    se.add_argument("--steps", type=int, default=50, help="denoising steps")
    se.add_argument("--samples", type=int, default=16, help="training seeds the schedules are scored on")
    se.add_argument("--predictor", default="learned")
    se.add_argument("--max-sweeps", type=int, default=6, help="greedy sweeps after the best start (0: the best of "
                                                             "the starts: uniform, TaylorSeer-shaped, and the "
                                                             "training-free masks within the budget)")
    se.add_argument("--compute-last", action="store_true",
                    help="keep the last step computed (by default it may be forecast, as TaylorSeer's schedule does); "
                         "for a prior added to a policy trained with such masks")
    se.add_argument("--select-samples", type=int, default=0,
                    help="score every start and each sweep's best again on this many other training samples and "
                         "keep the best there (guards against the few search samples; 0: off)")
    se.add_argument("--init", type=Path, nargs="+", default=[],
                    help="searched_schedules.json files of the same step count: their masks for each target are more "
                         "starts (refines earlier searches)")
    add_pipeline_args(se)
    se.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from cachepilot.driver import SamplingDriver
    from cachepilot.loading import load_pipeline
    from cachepilot.outputs import check_output_file
    from cachepilot.searched import SearchedSchedules, mask_string
    from cachepilot.train import distributed, schedule_search

    bad = [t for t in args.targets if not 0 < t <= 1]
    if bad:
        raise CachepilotError(f"--targets must be compute fractions in (0, 1], got {bad}")
    check_at_least(1, ("--samples", args.samples), ("--steps", args.steps))
    check_at_least(0, ("--max-sweeps", args.max_sweeps), ("--select-samples", args.select_samples))
    if distributed.launched()[0] == 0:  # one rank probes the directory (two probes of the same file would race)
        check_output_file(args.out)
    earlier = _earlier_masks(args.init, args.steps)
    rank, _ = distributed.setup()  # before loading: `cuda` is then this rank's GPU
    pipe = load_pipeline(args.pipeline, device=args.device, dtype=args.dtype)
    driver = SamplingDriver(pipe, args.steps, call_kwargs(args))
    conditions = train_conditions(args, pipe)
    found = SearchedSchedules(args.steps, args.predictor, settings={
        "samples": args.samples, "seed": seeds.SEARCH, "select_samples": args.select_samples})
    for target in args.targets:  # each schedule is written as soon as it is found: an interruption keeps them
        mask, score = schedule_search.search_schedule(
            driver, conditions, target, args.samples, predictor=args.predictor, max_sweeps=args.max_sweeps,
            compute_last=args.compute_last, select_samples=args.select_samples,
            extra_starts=earlier.get(f"{target:g}", []))
        found.add(target, mask, score)
        if rank == 0:
            print(f"target {target:g}: {mask_string(mask)} (training PSNR {score:.2f} dB)")
        distributed.on_rank_zero(found.write, args.out)


def _earlier_masks(paths: list[Path], steps: int) -> dict[str, list[list[bool]]]:
    """target -> the distinct masks of earlier searches at `steps` steps (refused before any model is loaded)."""
    from cachepilot.policies.prior import SchedulePrior

    found: dict[str, list[list[bool]]] = {}
    for path in paths:
        prior = SchedulePrior.from_file(path)
        if prior.searched_steps() != [steps]:
            raise CachepilotError(f"--init {path} was searched at {prior.searched_steps()} steps, not {steps}")
        for t, mask in prior.by_steps[steps].items():
            masks = found.setdefault(f"{t:g}", [])
            if [c == "1" for c in mask] not in masks:
                masks.append([c == "1" for c in mask])
    return found
