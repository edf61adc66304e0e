"""`cachepilot add-prior`: give an exported learned policy the searched schedules of another step count."""

from __future__ import annotations

import argparse
import sys
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
    stale = _gate_entries_of_the_policy(args.policy)
    if stale:
        print(f"warning: the cache's forecaster gate holds whole-schedule choices for this policy ({stale}), scored "
              f"with its earlier prior: delete those entries from predictors/forecaster_gate.json and score them "
              f"again (`cachepilot calibrate-forecaster ... --schedules learned:TARGET ... --policy {args.policy}`)",
              file=sys.stderr)


def _gate_entries_of_the_policy(policy: Path) -> str:
    """'learned@T at N steps, ...' of the sibling predictors/ gate: its entries name the policy by target, not by
    the prior its decisions followed, so a new prior leaves them stale (a calibration keeps entries it finds)."""
    from cachepilot.errors import CheckpointError
    from cachepilot.policies.learned import SPEC_PREFIX
    from cachepilot.predictors.gated import GATE_FILE
    from cachepilot.records import read_json_object

    try:  # a missing or unreadable gate: nothing to warn of here (loading the cache says what is wrong with it)
        schedules = read_json_object(Path(policy).parent / "predictors" / GATE_FILE).get("schedules") or {}
    except CheckpointError:
        return ""
    counts = sorted((int(n) for n, entries in schedules.items() if any(k.startswith(SPEC_PREFIX) for k in entries)))
    return f"learned@TARGET at {', '.join(map(str, counts))} steps" if counts else ""
