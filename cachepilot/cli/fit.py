"""`cachepilot fit`: the whole recipe on a pipeline, each stage resumable."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from cachepilot.cli.common import add_pipeline_args


def register(sub: argparse._SubParsersAction) -> None:
    fit = sub.add_parser("fit", help="the whole recipe on a pipeline: collect -> predictors -> schedule search -> "
                                     "policy -> export -> bench, each stage resumable")
    fit.add_argument("--out", type=Path, required=True, help="the cache checkpoint directory to write")
    add_pipeline_args(fit)
    fit.add_argument("--steps", type=int, default=None, help="denoising steps (default 50; 10 with --smoke)")
    fit.add_argument("--policy-steps", type=int, nargs="+", default=None,
                     help="denoising step counts the learned policy trains on, e.g. 20 50 100 (default: --steps)")
    fit.add_argument("--targets", type=float, nargs="+", default=None, help="compute fractions to fit and report")
    fit.add_argument("--smoke", action="store_true", help="every stage at toy sizes: check the plumbing in minutes")
    fit.add_argument("--recipe", choices=("full", "lean"), default="full",
                     help="full: every stage (head, gate, search, policy); lean: searched schedules with a "
                          "training-free forecaster chosen on 4 references, no head, no policy (over 100x fewer "
                          "transformer evaluations, at or a little above the best training-free method's quality; see "
                          "docs/fit-cost.md)")
    fit.add_argument("--search-samples", type=int, default=None,
                     help="training samples every schedule (and forecaster) is scored on (default 16; 4 with "
                          "--recipe lean); --budget scales it down")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--budget", default=None,
                     help="transformer evaluations (e.g. 200000) or a duration (1h, 90m, 30s): every stage's sizes "
                          "scaled down to fit it; refused below the fit's minimum")
    fit.add_argument("--plan", action="store_true",
                     help="print each stage's transformer evaluations and estimated wall time (from a timed probe "
                          "call of the pipeline) and exit")
    fit.set_defaults(func=run)


def resolution(pipe, call_kwargs: dict) -> str:
    """"HxW" of the call: the call's height/width, else the pipeline's default (diffusers' default_sample_size x
    vae_scale_factor, or the transformer's sample size for a DiT), else "the pipeline's default"."""
    height, width = call_kwargs.get("height"), call_kwargs.get("width")
    if height is None or width is None:
        size, scale = getattr(pipe, "default_sample_size", None), getattr(pipe, "vae_scale_factor", None)
        if size is None:
            size = getattr(getattr(getattr(pipe, "transformer", None), "config", None), "sample_size", None)
            vae = getattr(pipe, "vae", None)
            if vae is None:  # pixel space (the embedded digits model)
                scale = 1
            elif scale is None and hasattr(vae, "config"):
                scale = 2 ** (len(vae.config.block_out_channels) - 1)
        if isinstance(size, int) and isinstance(scale, int):
            height, width = height or size * scale, width or size * scale
    return f"{height}x{width}" if height and width else "the pipeline's default resolution"


def run(args: argparse.Namespace) -> None:
    from cachepilot.loading import load_pipeline
    from cachepilot.train.fit import FitConfig, fit, plan

    overrides = {"call_kwargs": args.call_kwargs, "seed": args.seed, "budget": args.budget}
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.targets is not None:
        overrides["targets"] = list(args.targets)
    if args.search_samples is not None:
        overrides["search_samples"] = args.search_samples
    if args.policy_steps is not None:
        overrides["policy_steps"] = list(args.policy_steps)
    if args.recipe == "lean":
        config = FitConfig.for_smoke(**overrides, recipe="lean") if args.smoke else FitConfig.lean(**overrides)
    else:
        config = FitConfig.for_smoke(**overrides) if args.smoke else FitConfig(**overrides)
    config.check()
    if args.prompts is not None:  # a missing or empty prompts file: refused before the pipeline loads
        from cachepilot.conditions import load_conditions

        load_conditions(args.prompts)
    from cachepilot.train import distributed

    rank, _ = distributed.setup()  # before loading: under torchrun `cuda` is then this rank's GPU
    pipe = load_pipeline(args.pipeline, device=args.device, dtype=args.dtype)
    from cachepilot.embedded.base import call_kwargs_for

    call = {**call_kwargs_for(pipe), **config.call_kwargs}
    if rank == 0:
        print(f"fit{' (smoke: toy sizes)' if args.smoke else ''}: {type(pipe).__name__} at {resolution(pipe, call)}, "
              f"{config.steps} steps, batch {config.batch_size} -> {args.out}")
    if args.plan:  # the table is printed; nothing is written
        plan(pipe, args.prompts, config)
        return
    fresh = not args.out.exists()
    try:
        record = fit(pipe, args.out, args.prompts, config)
    except BaseException:
        if rank == 0 and fresh and args.out.is_dir() and not _holds_files(args.out):  # a refused fit leaves nothing
            shutil.rmtree(args.out, ignore_errors=True)
        raise
    if rank == 0:
        print(f"fitted cache written to {args.out} (stage seconds {record['stage_seconds']}); use it with "
              f"cachepilot.enable(pipe, checkpoint={str(args.out)!r}, speed=0.3)")


def _holds_files(path: Path) -> bool:
    return any(p.is_file() for p in path.rglob("*"))
