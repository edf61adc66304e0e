"""`cachepilot train ...`: the project's trainers, one module each."""

from __future__ import annotations

import argparse
import importlib

SUBCOMMANDS = ("train_backbone", "train_predictors", "train_policy", "train_classifier")


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a model of the project").add_subparsers(dest="what", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"cachepilot.cli.{name}").register(train)
