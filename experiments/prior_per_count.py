"""Give an exported policy new searched masks at one step count while keeping, at chosen other counts, the masks
it observed before: each kept count's masks are stored explicitly as the policy resampled them
(`SchedulePrior.mask`), so its decisions there stay exactly what they were, and every other listed count gets the
new masks resampled the same way.

    python -m experiments.prior_per_count --policy CACHE/policy --schedules NEW/searched_schedules.json \\
        --keep 20 25 100 --counts 20 25 75 100

How the digits cache's 50-step schedules were re-chosen (docs/results/digits.md): the new masks won on the
gate's training samples at 50, 75 and 100 steps and lost at 20 and 25, where the earlier ones are kept; the 0.3
mask chosen since won at 50 and 75 and lost at 100 (by 0.05 dB), where the one before it is kept. Its masks at 20,
25 and 75 steps were then chosen per target (`--set TARGET=MASK ...`, `DIGITS_CHOSEN` below: the masks that won on
the gate's training samples among the kept, the 50-step resampled and a fresh fit's resampled ones).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cachepilot.policies.prior import SchedulePrior
from cachepilot.searched import SearchedSchedules


# The digits cache's masks chosen per (step count, target) on the gate's training samples (docs/results/digits.md,
# "The default fit afresh, over 20-100 steps"): target -> masks at 20, 25 and 75 steps.
DIGITS_CHOSEN = {
    0.2: ["10000100000010000010", "1000100000100000010000010",
          "101001000100000010000010010000001000000100001000010000010001000010000001000"],
    0.3: ["10100010000100010001", "1100100010001000100010001"],
    0.4: ["1101001001001000101001001"],
    0.5: ["10101010101010010101",
          "111010101010101010010010110101010101010101010101010101010010101010101010101"],
}


def prior_per_count(policy: Path, schedules: Path, keep: list[int], counts: list[int],
                    masks: dict[float, list[str]] | None = None) -> SchedulePrior:
    """Rewrite `policy`'s config.json prior: `schedules`' masks at their count, at each of `counts` the earlier
    prior's masks where the count is in `keep`, else the new ones, each as the policy resamples them; then `masks`
    (target -> masks, each at its own length) in place of those at their target and step count."""
    config_path = Path(policy) / "config.json"
    config = json.loads(config_path.read_text())
    before = SchedulePrior(config["prior"])
    searched = SearchedSchedules.read(schedules)
    after = SchedulePrior(searched.masks())
    combined: dict[float, list[str]] = {}
    for target in sorted(searched.masks()):
        for count in sorted(set(counts) | {searched.num_steps}):
            source = before if count in keep else after
            combined.setdefault(target, []).append("".join("1" if on else "0" for on in source.mask(target, count)))
    for target, chosen in (masks or {}).items():
        for mask in chosen:
            combined[target] = [mask if len(held) == len(mask) else held for held in combined[target]]
    prior = SchedulePrior(combined)
    config["prior"] = prior.to_dict()
    config_path.write_text(json.dumps(config, indent=2))
    return prior


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", type=Path, required=True, help="an exported policy directory (config.json)")
    parser.add_argument("--schedules", type=Path, required=True, help="the new searched_schedules.json")
    parser.add_argument("--keep", type=int, nargs="*", default=[], help="step counts that keep the earlier masks")
    parser.add_argument("--counts", type=int, nargs="+", required=True, help="step counts stored besides the new")
    parser.add_argument("--set", nargs="*", default=[], metavar="TARGET=MASK",
                        help="masks chosen per (step count, target), each replacing the one of its length")
    args = parser.parse_args()
    chosen: dict[float, list[str]] = {}
    for item in args.set:
        target, _, mask = item.partition("=")
        chosen.setdefault(float(target), []).append(mask)
    prior = prior_per_count(args.policy, args.schedules, args.keep, args.counts, chosen)
    print(f"{args.policy / 'config.json'}: prior at {prior.searched_steps()} steps (earlier masks kept at "
          f"{sorted(args.keep)})")


if __name__ == "__main__":
    main()
