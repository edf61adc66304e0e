"""`cachepilot train backbone`: the embedded DiT on the digits (Lightning, resumable)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cachepilot.cli.common import OUT, add_deprecated, check_at_least


def register(train: argparse._SubParsersAction) -> None:
    bb = train.add_parser("backbone", help="train the embedded DiT on the digits (Lightning, resumable)")
    bb.add_argument("--out", type=Path, default=OUT / "digits-dit", help="pipeline directory to write")
    bb.add_argument("--work-dir", type=Path, default=Path("runs/backbone"), help="Lightning checkpoints and logs")
    bb.add_argument("--train-steps", type=int, default=None,
                    help="optimisation steps (default: the shipped model's 6000)")
    add_deprecated(bb, "--steps", "--train-steps", dest="train_steps", type=int)
    bb.add_argument("--layers", type=int, default=None, help="transformer blocks")
    bb.add_argument("--batch-size", type=int, default=None)
    bb.add_argument("--seed", type=int, default=0)
    bb.add_argument("--resume", action="store_true", help="continue from WORK_DIR/last.ckpt (same settings)")
    bb.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu")
    bb.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from cachepilot.devices import check_lightning_hardware
    from cachepilot.outputs import check_output_dir
    from cachepilot.embedded.digits.train_backbone import BackboneConfig, train_backbone

    check_lightning_hardware(args.accelerator)
    flags = (("--train-steps", "max_steps", args.train_steps), ("--layers", "num_layers", args.layers),
             ("--batch-size", "batch_size", args.batch_size))
    check_at_least(1, *((flag, value) for flag, _, value in flags))
    config = BackboneConfig(seed=args.seed)
    for _, name, value in flags:
        if value is not None:
            setattr(config, name, value)
    check_output_dir(args.out, create=False)
    check_output_dir(args.work_dir, create=False)
    train_backbone(config, args.work_dir, args.out, resume=args.resume, accelerator=args.accelerator)
    print(f"saved pipeline to {args.out}")
