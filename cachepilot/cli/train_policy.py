"""`cachepilot train policy`: the learned cache policy (MaskablePPO over CachingVecEnv)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cachepilot.cli.common import OUT, add_pipeline_args, check_at_least, conditions_of
from cachepilot.errors import CachepilotError

DIGITS_PREDICTOR = "learned"   # the shipped digits head: only for the embedded digits model
OTHER_PREDICTOR = "taylor:2"   # any other pipeline, until a head is fitted on it (`cachepilot fit` does that)


def register(train: argparse._SubParsersAction) -> None:
    po = train.add_parser("policy", help="train the learned cache policy (MaskablePPO over CachingVecEnv)")
    po.add_argument("--work-dir", type=Path, default=Path("runs/policy"), help="SB3 checkpoints and CSV logs")
    po.add_argument("--out", type=Path, default=None,
                    help=f"export the actor here when training ends (default for the digits model: {OUT / 'policy'}; "
                         "required with --pipeline)")
    po.add_argument("--timesteps", type=int, default=None,
                    help="total environment timesteps, resumed or not (default 200000); PPO trains in whole "
                         "rollouts of envs x 2 episodes x steps, so training ends at the first rollout boundary "
                         "at or past it")
    po.add_argument("--envs", type=int, default=None, help="samples per batched env step")
    po.add_argument("--predictor", default=None,
                    help=f"what FORECAST uses during training (default: the shipped {DIGITS_PREDICTOR} head on the "
                         f"digits model, {OTHER_PREDICTOR} on any other pipeline)")
    po.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --work-dir")
    po.add_argument("--prior", default=None, nargs="+",
                    help="searched_schedules.json whose schedule the policy observes (default: the shipped "
                         "one; 'none': the uniform schedule); several, searched at different step counts: each "
                         "count observes the masks searched nearest to it")
    po.add_argument("--warm-start", action="store_true", help="behaviour-clone the prior schedule before PPO")
    po.add_argument("--seed", type=int, default=None)
    po.add_argument("--targets", type=float, nargs=2, default=None, help="range of target compute fractions")
    po.add_argument("--lr", type=float, default=None)
    po.add_argument("--ent-coef", type=float, default=None)
    po.add_argument("--seed-pool", type=int, default=None, metavar="K",
                    help="draw training noise seeds from K seeds only (K x conditions samples): each one's "
                         "full-compute reference is sampled once and kept (up to 2 GiB), so episodes after the pool's "
                         "first visit run no reference (default: fresh seeds, a reference run per episode)")
    po.add_argument("--steps", type=int, nargs="+", default=None,
                    help="denoising steps per episode (default 50); several (--steps 20 50 100): one policy for all, "
                         "each batch of episodes drawing one")
    add_pipeline_args(po)
    po.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from cachepilot.conditions import split_conditions
    from cachepilot.loading import load_pipeline
    from cachepilot.outputs import check_output_dir
    from cachepilot.train.policy import PolicyConfig, export_policy, train_policy

    if args.out is None:
        if args.pipeline is not None:
            raise CachepilotError("--out is required with --pipeline (the default is for the digits policy)")
        args.out = OUT / "policy"
    check_at_least(1, ("--timesteps", args.timesteps), ("--envs", args.envs))
    if args.steps is not None:
        check_at_least(1, *(("--steps", n) for n in args.steps))
    config = PolicyConfig()
    for name, value in (("total_timesteps", args.timesteps), ("num_envs", args.envs)):
        if value is not None:
            setattr(config, name, value)
    if args.steps is not None:
        config.num_steps = args.steps[0] if len(args.steps) == 1 else tuple(args.steps)
    config.predictor = args.predictor or (DIGITS_PREDICTOR if args.pipeline is None else OTHER_PREDICTOR)
    if args.predictor is None and args.pipeline is not None:
        print(f"cachepilot: training with --predictor {OTHER_PREDICTOR} (the shipped learned head is the digits "
              "model's; pass --predictor to choose)", file=sys.stderr)
    if args.targets is not None:
        config.targets = tuple(args.targets)
    for name, value in (("learning_rate", args.lr), ("ent_coef", args.ent_coef), ("seed", args.seed),
                        ("seed_pool", args.seed_pool)):
        if value is not None:
            setattr(config, name, value)
    config.warm_start = args.warm_start
    config.check()  # --seed -1, --lr nan, ...: before loading anything
    if args.prior is None and args.pipeline is None:
        from cachepilot.cache_checkpoint import CacheCheckpoint

        config.prior = str(CacheCheckpoint.from_pretrained().schedules_path())
    else:
        none = args.prior is None or (len(args.prior) == 1 and args.prior[0].lower() == "none")
        config.prior = None if none else (args.prior[0] if len(args.prior) == 1 else list(args.prior))
    check_output_dir(args.out)
    pipe = load_pipeline(args.pipeline, device=args.device, dtype=args.dtype)
    split = split_conditions(conditions_of(pipe, args.prompts))
    model = train_policy(config, args.work_dir, resume=args.resume, pipe=pipe, conditions=split.train,
                         eval_conditions=split.validation, call_kwargs=args.call_kwargs)
    export_policy(model, args.out, pipe.transformer, config)
    print(f"exported policy to {args.out}")
