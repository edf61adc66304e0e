"""`cachepilot calibrate-forecaster`: score a learned head against Taylor per step count and interval and write
the head's gate.

Under `torchrun` every rank loads the pipeline (on its own GPU with `--device cuda`) and runs its share of each
step count's runs; rank 0 alone writes the gate and prints it."""

from __future__ import annotations

import argparse
from pathlib import Path

from cachepilot.cli.common import add_pipeline_args, call_kwargs, train_conditions
from cachepilot.errors import CachepilotError


def register(sub: argparse._SubParsersAction) -> None:
    ca = sub.add_parser("calibrate-forecaster", help="measure learned head vs. Taylor per step count and interval "
                                                     "(closed loop, training seeds) and write the head's gate")
    ca.add_argument("head", type=Path, help="a learned head directory (a cache's predictors/); the gate is written "
                                           "there as forecaster_gate.json")
    ca.add_argument("--steps", type=int, nargs="+", default=[20, 50, 100], help="denoising step counts to calibrate")
    ca.add_argument("--intervals", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 8],
                    help="fixed intervals to score (1: two computes then one skip, every forecast one step apart)")
    ca.add_argument("--samples", type=int, default=16, help="training seeds each candidate is scored on")
    ca.add_argument("--schedules", nargs="+", default=[], metavar="SPEC",
                    help="whole schedules to score with each forecaster, kept per step count and used for that "
                         "policy whatever the spacings: fixed:N, threshold:DELTA, schedule:MASK, ts-schedule:N "
                         "(TaylorSeer's computes), learned:TARGET (the policy at --policy), searched:FILE")
    ca.add_argument("--schedule-steps", type=int, nargs="+", default=None,
                    help="step counts the schedules are scored at (default: --steps)")
    ca.add_argument("--policy", type=Path, default=None, help="a policy directory, for learned:TARGET schedules")
    add_pipeline_args(ca)
    ca.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from cachepilot.driver import check_num_steps
    from cachepilot.loading import load_pipeline
    from cachepilot.train import distributed
    from cachepilot.train.calibrate_forecaster import calibrate_gate, schedule_policies

    schedule_steps = args.steps if args.schedule_steps is None else args.schedule_steps
    bad = [n for n in args.steps + schedule_steps if n < 2] + [n for n in args.intervals if n < 1]
    if bad or args.samples < 1:
        raise CachepilotError(f"--steps must be >= 2, --intervals >= 1 and --samples >= 1, got {bad or args.samples}")
    if not (args.head / "config.json").is_file():
        raise CachepilotError(f"no learned head at {args.head} (config.json is missing)")
    for steps in schedule_steps:  # every schedule spec checked before the pipeline loads
        for spec in args.schedules:
            schedule_policies(spec, steps, args.policy)
    rank, _ = distributed.setup()  # before loading: `cuda` is then this rank's GPU
    pipe = load_pipeline(args.pipeline, device=args.device, dtype=args.dtype)
    for steps in sorted(set(args.steps + schedule_steps)):
        check_num_steps(pipe, steps)
    record = calibrate_gate(pipe, args.head, train_conditions(args, pipe), args.steps, args.intervals, args.samples,
                            call_kwargs(args), out=args.head, schedules=args.schedules,
                            schedule_counts=schedule_steps, policy_dir=args.policy)
    if rank != 0:
        return
    for steps, entry in record["counts"].items():
        print(f"{steps} steps, spacing 1..{len(entry['choices'])}: {' '.join(entry['choices'])}")
    for steps, by_spec in record["schedules"].items():
        for key, entry in by_spec.items():
            print(f"{steps} steps, {entry['spec']}: {entry['choice']} "
                  f"({', '.join(f'{c} {db:.2f} dB' for c, db in entry['psnr'].items())})")
