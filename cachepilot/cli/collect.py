"""`cachepilot collect`: record stack inputs and residuals (HF datasets shards, resumable)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cachepilot import seeds
from cachepilot.cli.common import OUT, add_pipeline_alias, add_pipeline_args, call_kwargs, train_conditions
from cachepilot.errors import CachepilotError


def register(sub: argparse._SubParsersAction) -> None:
    col = sub.add_parser("collect", help="record stack inputs and residuals (HF datasets shards, resumable)")
    col.add_argument("--out", type=Path, default=OUT / "collect", help="the collection directory to write")
    col.add_argument("--samples", type=int, default=256, help="samples per policy")
    col.add_argument("--policies", nargs="+", default=["always", "fixed:3", "fixed:5"],
                     help="trajectory kinds: full compute and cached")
    col.add_argument("--predictor", default="taylor:1", help="what cached trajectories forecast with")
    col.add_argument("--steps", type=int, default=50, help="denoising steps")
    col.add_argument("--guidance", type=float, default=None, help="guidance_scale of every call (default: the pipeline's)")
    col.add_argument("--seed", type=int, default=seeds.COLLECT)
    col.add_argument("--num-shards", type=int, default=6)
    col.add_argument("--shard-index", type=int, nargs="*", default=None,
                     help="write only these shards (one worker per shard); default all")
    col.add_argument("--batch-size", type=int, default=64)
    add_pipeline_args(col)
    add_pipeline_alias(col)
    col.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from cachepilot.loading import load_pipeline
    from cachepilot.outputs import check_output_dir
    from cachepilot.train.collect import CollectConfig, check_config, collect

    config = CollectConfig(samples_per_policy=args.samples, steps=args.steps, call_kwargs=call_kwargs(args),
                           seed=args.seed, policies=list(args.policies), predictor=args.predictor,
                           num_shards=args.num_shards, batch_size=args.batch_size, conditions=[{}])
    check_config(config)  # before loading anything
    if args.shard_index:
        bad = [i for i in args.shard_index if not 0 <= i < args.num_shards]
        if bad:
            raise CachepilotError(f"--shard-index {bad} outside 0..{args.num_shards - 1} (--num-shards {args.num_shards})")
    check_output_dir(args.out, create=False)
    pipe = load_pipeline(args.pipeline, device=args.device, dtype=args.dtype)
    config.conditions = train_conditions(args, pipe)
    paths = collect(pipe, args.out, config, shards=args.shard_index)
    print(f"{len(paths)} shard(s) ready under {args.out}/shards")
