"""`cachepilot add-prior`: give an exported learned policy the searched schedules of another step count."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    ap = sub.add_parser("add-prior", help="give an exported learned policy the searched schedules of another step "
                                          "count (it observes the masks searched nearest to each call's count)")
    ap.add_argument("policy", type=Path, help="an exported policy directory (config.json + model.safetensors)")
    ap.add_argument("schedules", type=Path, nargs="+", help="searched_schedules.json files (`search-schedule`)")
    ap.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from cachepilot.train.policy import add_prior

    steps = add_prior(args.policy, args.schedules)
    print(f"{args.policy}: prior searched at {', '.join(map(str, steps))} steps")
