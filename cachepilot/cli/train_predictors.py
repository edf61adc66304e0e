"""`cachepilot train predictors`: the learned forecaster head on a collection (Lightning, DDP-ready)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cachepilot.cli.common import OUT, add_deprecated, check_at_least


def register(train: argparse._SubParsersAction) -> None:
    pr = train.add_parser("predictors", help="fit the learned forecaster head on a collection (Lightning, DDP-ready)")
    pr.add_argument("--data", type=Path, nargs="+", default=[OUT / "collect"],
                    help="one or more `cachepilot collect` directories (same backbone)")
    pr.add_argument("--out", type=Path, default=OUT / "predictors", help="the head directory to write")
    pr.add_argument("--work-dir", type=Path, default=Path("runs/predictors"), help="Lightning checkpoints and logs")
    pr.add_argument("--train-steps", type=int, default=None, help="optimisation steps (default 3000)")
    add_deprecated(pr, "--steps", "--train-steps", dest="train_steps", type=int)
    pr.add_argument("--batch-size", type=int, default=None)
    pr.add_argument("--rank", type=int, default=None)
    pr.add_argument("--devices", type=int, default=1)
    pr.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp")
    pr.add_argument("--accelerator", default="auto")
    pr.add_argument("--resume", action="store_true", help="continue from WORK_DIR/last.ckpt")
    pr.add_argument("--init", type=Path, default=None,
                    help="a saved head to start from (e.g. a cache's predictors/), fine-tuned with a fresh optimiser")
    pr.add_argument("--checkpoint-every", type=int, default=None,
                    help="optimisation steps between checkpoints (default 500): what a kill can lose at most")
    pr.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from cachepilot.devices import check_lightning_hardware
    from cachepilot.outputs import check_output_dir
    from cachepilot.train.predictors import PredictorConfig, train_predictors

    check_lightning_hardware(args.accelerator, args.devices, args.strategy)
    flags = (("--train-steps", "max_steps", args.train_steps), ("--batch-size", "batch_size", args.batch_size),
             ("--rank", "rank", args.rank), ("--checkpoint-every", "checkpoint_every", args.checkpoint_every))
    check_at_least(1, *((flag, value) for flag, _, value in flags))
    config = PredictorConfig()
    for _, name, value in flags:
        if value is not None:
            setattr(config, name, value)
    check_output_dir(args.out, create=False)
    check_output_dir(args.work_dir, create=False)
    module = train_predictors(args.data, args.out, args.work_dir, config, resume=args.resume, devices=args.devices,
                              strategy=args.strategy, accelerator=args.accelerator, init=args.init)
    if module.trainer.is_global_zero:  # DDP: one line, from the rank that saved
        print(f"saved predictor head to {args.out}")
