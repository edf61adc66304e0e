"""`cachepilot train classifier`: the reference digits classifier the metrics use."""

from __future__ import annotations

import argparse
from pathlib import Path

from cachepilot.cli.common import OUT


def register(train: argparse._SubParsersAction) -> None:
    clf = train.add_parser("classifier", help="train the reference digits classifier used by the metrics")
    clf.add_argument("--out", type=Path, default=OUT / "digits-classifier", help="the classifier directory to write")
    clf.add_argument("--epochs", type=int, default=60)
    clf.add_argument("--seed", type=int, default=0)
    clf.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from cachepilot.outputs import check_output_dir
    from cachepilot.embedded.digits.train_classifier import train_classifier

    check_output_dir(args.out, create=False)
    accuracy = train_classifier(args.out, epochs=args.epochs, seed=args.seed)
    print(f"held-out accuracy {accuracy:.4f}; saved classifier to {args.out}")
