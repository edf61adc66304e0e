"""Give an exported policy new searched masks at one step count while keeping, at chosen other counts, the masks
it observed before: each kept count's masks are stored explicitly as the policy resampled them
(`SchedulePrior.mask`), so its decisions there stay exactly what they were, and every other listed count gets the
new masks resampled the same way.

    python -m experiments.prior_per_count --policy CACHE/policy --schedules NEW/searched_schedules.json \\
        --keep 20 25 100 --counts 20 25 75 100

How the digits cache's 50-step schedules were re-chosen (docs/results/digits.md): the new masks won on the
gate's training samples at 50, 75 and 100 steps and lost at 20 and 25, where the earlier ones are kept; the 0.3
mask chosen since won at 50 and 75 and lost at 100 (by 0.05 dB), where the one before it is kept.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cachepilot.policies.prior import SchedulePrior
from cachepilot.searched import SearchedSchedules


def prior_per_count(policy: Path, schedules: Path, keep: list[int], counts: list[int]) -> SchedulePrior:
    """Rewrite `policy`'s config.json prior: `schedules`' masks at their count, at each of `counts` the earlier
    prior's masks where the count is in `keep`, else the new ones, each as the policy resamples them."""
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
    args = parser.parse_args()
    prior = prior_per_count(args.policy, args.schedules, args.keep, args.counts)
    print(f"{args.policy / 'config.json'}: prior at {prior.searched_steps()} steps (earlier masks kept at "
          f"{sorted(args.keep)})")


if __name__ == "__main__":
    main()
