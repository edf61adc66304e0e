"""`cachepilot fit-combination`: fit the combination forecaster (per-step weights over training-free forecasters,
closed form) on full-compute trajectories of a pipeline and write it for `--predictor combo:OUT`."""

from __future__ import annotations

import argparse
from pathlib import Path

from cachepilot.cli.common import OUT, add_pipeline_args, check_at_least
from cachepilot.errors import CachepilotError

DEFAULT_SCHEDULES = ("uniform:0.2", "uniform:0.3", "uniform:0.4", "uniform:0.5")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit-combination", help="fit per-step weights combining training-free forecasters (L2P-style, "
                                               "closed form, seconds) for fixed schedules; use as combo:OUT")
    p.add_argument("--steps", type=int, nargs="+", default=[50], help="denoising step counts to fit (default 50)")
    p.add_argument("--policy", nargs="+", default=None, metavar="SPEC",
                   help="fixed schedules to fit: fixed:N, schedule:MASK, uniform:F (compute fraction F, first and "
                        f"last step computed, evenly spread); default {' '.join(DEFAULT_SCHEDULES)}")
    p.add_argument("--schedule", nargs="+", default=[], metavar="MASK", help="masks (0/1 per step) to fit as well")
    p.add_argument("--classes", type=int, nargs="+", default=None,
                   help="class ids to fit on (class-conditional pipelines; default: every class)")
    p.add_argument("--samples", type=int, default=16, help="full-compute training samples per step count")
    p.add_argument("--seed", type=int, default=None, help="first noise seed (default: the calibration seeds, "
                                                          "disjoint from the bench's)")
    p.add_argument("--bases", nargs="+", default=None, metavar="SPEC",
                   help="forecaster specs to combine (default reuse taylor:1 taylor:2 dmd:1 dmd:2)")
    p.add_argument("--ridge", type=float, default=None, help="ridge strength, relative to the forecasts' mean "
                                                             "squared norm (default 1e-3)")
    p.add_argument("--trajectory", choices=("full", "cached"), default="full",
                   help="full: fit on full-compute trajectories (L2P); cached: then refit each schedule on the states "
                        "its cached sampler visits (the stack also run at every step there)")
    p.add_argument("--rounds", type=int, default=1, help="cached-trajectory rounds (default 1)")
    p.add_argument("--objective", choices=("step", "final"), default="step",
                   help="step: each forecast step's residual error (L2P); final: the final sample's error, the steps' "
                        "errors accumulated through the scheduler (all steps' weights solved jointly)")
    p.add_argument("--beta", type=float, default=1.0, help="final objective: weight of the per-step errors beside "
                                                           "the accumulated one (default 1)")
    p.add_argument("--free", action="store_true", help="leave each step's weights unconstrained (default: they sum "
                                                       "to 1, as every base forecaster's coefficients do)")
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", type=Path, default=OUT / "combination", help="directory for combination.json / "
                                                                         "combination.safetensors")
    add_pipeline_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from cachepilot.driver import check_num_steps
    from cachepilot.embedded.base import call_kwargs_for
    from cachepilot.loading import load_pipeline
    from cachepilot.outputs import check_output_dir
    from cachepilot.predictors.combination import DEFAULT_BASES
    from cachepilot.predictors.spec import make_predictor
    from cachepilot.train.combination import DEFAULT_RIDGE, fit_on_pipeline, schedule_mask

    check_at_least(2, *(("--steps", n) for n in args.steps))
    check_at_least(1, ("--samples", args.samples), ("--batch-size", args.batch_size), ("--rounds", args.rounds))
    if args.prompts is not None and args.classes is not None:
        raise CachepilotError("give --prompts or --classes, not both")
    schedules = list(args.policy or ([] if args.schedule else DEFAULT_SCHEDULES)) + [f"schedule:{m}" for m in
                                                                                     args.schedule]
    for num_steps in args.steps:  # every schedule and base checked before the pipeline loads
        for schedule in schedules:
            schedule_mask(schedule, num_steps)
    bases = args.bases or list(DEFAULT_BASES)
    for base in bases:
        make_predictor(base)
    ridge = DEFAULT_RIDGE if args.ridge is None else args.ridge
    if not ridge >= 0 or not args.beta >= 0:
        raise CachepilotError(f"--ridge and --beta must be >= 0, got {args.ridge} and {args.beta}")
    check_output_dir(args.out, create=False)
    pipe = load_pipeline(args.pipeline, device=args.device, dtype=args.dtype)
    for num_steps in args.steps:
        check_num_steps(pipe, num_steps)
    if args.classes is not None:
        conditions = [{"class_labels": c} for c in args.classes]
    else:
        from cachepilot.cli.common import train_conditions

        conditions = train_conditions(args, pipe)
    kwargs = dict(args.call_kwargs or call_kwargs_for(pipe))  # an embedded pipeline's trained call by default
    if args.guidance is not None:
        kwargs["guidance_scale"] = args.guidance
    combination, record = fit_on_pipeline(pipe, args.steps, schedules, conditions, args.samples, args.seed, kwargs,
                                          bases, ridge, args.batch_size, args.trajectory, args.rounds, args.objective,
                                          args.beta, not args.free)
    combination.save_pretrained(args.out, {"record": record, "call_kwargs": kwargs})
    for entry in record["fit"].values():
        best = min(entry["base_relative_error"], key=entry["base_relative_error"].get)
        print(f"{entry['num_steps']} steps, {entry['schedule']}: relative error {entry['relative_error']:.4g} "
              f"(best single forecaster {best}: {entry['base_relative_error'][best]:.4g})"
              + (f"; on its cached trajectory {entry['cached']['relative_error']:.4g}" if "cached" in entry else ""))
    print(f"fit in {record['record_seconds'] + record['solve_seconds']:.1f} s ({record['record_seconds']:.1f} s "
          f"recording {record['stack_evaluations']} stack evaluations, {record['solve_seconds']:.1f} s solving); "
          f"wrote {args.out} (use --predictor combo:{args.out})")
