"""Do block groups pay with good masks? Each group of a two-group split runs a searched mask of its own target.

With the same mask in every group, groups are the whole stack (the group residuals add up to the stack's). What
groups add is asymmetry: one group computed at a higher budget than the other. Fixed intervals per group mix a mask
question into that one (a fixed interval is a poor mask), so this tool gives each group a mask the cache's offline
search found (`searched_schedules_<N>.json`) and compares each split row with the whole stack's searched masks at
the same compute, counted in block evaluations (linear between the two searched targets around it):

    python -m experiments.group_masks --steps 20 --samples 32 --out OUT                   # digits, shipped cache
    python -m experiments.group_masks --pipeline checkpoints/scenes-flux --cache checkpoints/scenes-flux-cache \\
        --call-kwargs '{"height": 32, ...}' --steps 20 --samples 32 --out OUT

Every row uses one forecaster (`--forecaster`, Taylor-1 by default) so that the split, not the forecaster, differs.
`--nested`: the group at the higher target runs the union of both masks (it computes wherever the other does, so no
group computes on an input the other forecast at a step where that one had computed). `--per-group-forecasters reuse
taylor:1 dmd:1`: instead, every group on the same mask (the whole stack's compute) with a forecaster of its own, every
ordered pair of those, against the best of them on the whole stack; `--learned`: the cache's learned policy decides
for every group instead of the masks, and the cache's own forecaster on the whole stack is one more row to beat.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import cachepilot
from cachepilot.bench.methods import Method
from cachepilot.bench.runner import BenchConfig, evaluation_conditions, run_bench
from cachepilot.cache_checkpoint import CacheCheckpoint
from cachepilot.embedded.base import call_kwargs_for, quality_for
from cachepilot.embedded.digits.pipeline import DEFAULT_GUIDANCE_SCALE, DigitsDiTPipeline
from cachepilot.loading import load_pipeline

SPLITS = ("G3,3", "G2,4", "G4,2")


def nest(low: str, high: str) -> str:
    """The union of two masks: the group at the higher target also computes wherever the other one does."""
    return "".join("1" if "1" in pair else "0" for pair in zip(low, high))


def methods(masks: dict[float, str], forecaster: str, splits: tuple[str, ...] = SPLITS,
            nested: bool = False) -> list[Method]:
    """The whole stack on each searched mask, and every split on every pair of distinct targets (knob 'a|b');
    nested: the group at the higher target runs the union of both masks, so it computes wherever the other does."""
    targets = sorted(masks)

    def whole(pipe, target):
        cachepilot.enable(pipe, "schedule:" + masks[target], forecaster)
        return pipe

    def grouped(split):
        def apply(pipe, knob):
            a, b = (float(t) for t in knob.split("|"))
            first, second = masks[a], masks[b]
            if nested:
                first, second = (first, nest(first, second)) if a < b else (nest(second, first), second)
            cachepilot.enable(pipe, f"schedule:{first}|schedule:{second}", forecaster, structure=split)
            return pipe
        return apply

    pairs = [f"{a}|{b}" for a in targets for b in targets if a != b]
    return ([Method("searched", targets, whole, cachepilot.disable)]
            + [Method(f"{split}+searched", pairs, grouped(split), cachepilot.disable) for split in splits])


def forecaster_methods(masks: dict[float, str], forecasters: list[str], splits: tuple[str, ...] = SPLITS,
                       cache: CacheCheckpoint | None = None) -> list[Method]:
    """One mask for every group, a forecaster per group: the whole stack with each forecaster (`searched+<f>`), and
    every split with every ordered pair of distinct forecasters (`<split>+<f1>|<f2>`), knob the target. The compute
    is the whole stack's on the same mask: each split row is compared with the best whole-stack forecaster there.
    cache: its learned policy decides instead of the masks (one decision per step for every group), and the whole
    stack with the cache's own forecaster is one more whole-stack row (`searched+cache`)."""
    targets = sorted(masks)

    def run(forecaster, split=None):
        def apply(pipe, target):
            policy = cache.policy(target) if cache is not None else "schedule:" + masks[target]
            own = cache.predictor_spec(target) if forecaster == "cache" else forecaster
            cachepilot.enable(pipe, policy, own, structure=split)
            return pipe
        return apply

    pairs = [f"{a}|{b}" for a in forecasters for b in forecasters if a != b]
    whole = [*forecasters, "cache"] if cache is not None else forecasters
    return ([Method(f"searched+{f}", targets, run(f), cachepilot.disable) for f in whole]
            + [Method(f"{split}+{pair}", targets, run(pair, split), cachepilot.disable)
               for split in splits for pair in pairs])


def versus_best_forecaster(rows: list[dict]) -> list[tuple[str, float, float, float]]:
    """Per split row of `forecaster_methods`: (method, target, PSNR, PSNR - the best whole-stack forecaster's)."""
    best: dict[float, float] = {}
    for row in rows:
        if str(row["method"]).startswith("searched+"):
            best[row["knob"]] = max(best.get(row["knob"], -np.inf), row["psnr"])
    return [(row["method"], row["knob"], row["psnr"], row["psnr"] - best[row["knob"]]) for row in rows
            if str(row["method"]).startswith("G") and row["knob"] in best]


def versus_whole(rows: list[dict]) -> list[tuple[str, str, float, float, float]]:
    """Per split row: (method, knob, compute, PSNR, PSNR - the whole stack's at that compute), the whole stack's
    interpolated linearly between its searched masks (None outside their range)."""
    whole = sorted((r["compute_fraction"], r["psnr"]) for r in rows if r["method"] == "searched")
    xs, ys = np.array([w[0] for w in whole]), np.array([w[1] for w in whole])
    out = []
    for row in rows:
        if row["method"] == "searched":
            continue
        x = row["compute_fraction"]
        inside = xs[0] <= x <= xs[-1]
        gain = row["psnr"] - float(np.interp(x, xs, ys)) if inside else float("nan")
        out.append((row["method"], str(row["knob"]), x, row["psnr"], gain))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", default=None)
    parser.add_argument("--cache", default=None, help="a cache checkpoint (default: the shipped digits one)")
    parser.add_argument("--call-kwargs", type=json.loads, default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--forecaster", default="taylor:1")
    parser.add_argument("--nested", action="store_true", help="the group at the higher target also computes "
                        "wherever the other group does (the union of the two masks)")
    parser.add_argument("--per-group-forecasters", nargs="+", default=None, metavar="SPEC",
                        help="instead: one mask for every group and a forecaster per group, every ordered pair of "
                             "these (compared with the best of them on the whole stack)")
    parser.add_argument("--learned", action="store_true", help="with --per-group-forecasters: the cache's learned "
                        "policy decides (for every group) instead of its searched masks")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), help=f"default {' '.join(SPLITS)}")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    pipe = load_pipeline(args.pipeline)
    found = CacheCheckpoint.from_pretrained(args.cache).schedules(args.steps)
    if found is None or found.num_steps != args.steps:
        raise SystemExit(f"the cache has no masks searched at {args.steps} steps")
    conditions, _ = evaluation_conditions(pipe, None, args.cache)
    digits = isinstance(pipe, DigitsDiTPipeline)
    config = BenchConfig(samples=args.samples, steps=args.steps, repeats=1,
                         guidance=DEFAULT_GUIDANCE_SCALE if digits else None,
                         call_kwargs=dict(args.call_kwargs or call_kwargs_for(pipe)))
    forecasters = args.per_group_forecasters
    splits = tuple(args.splits)
    checkpoint = CacheCheckpoint.from_pretrained(args.cache) if args.learned else None
    made = (forecaster_methods(found.masks(), forecasters, splits, checkpoint) if forecasters
            else methods(found.masks(), args.forecaster, splits, nested=args.nested))
    rows = run_bench(pipe, made, config, conditions=conditions, quality=quality_for(pipe))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    if forecasters:
        for method, target, psnr, gain in sorted(versus_best_forecaster(rows), key=lambda r: -r[3]):
            print(f"{method:30s} {target}: {psnr:6.2f} dB  vs the best whole-stack forecaster {gain:+.2f}")
        return
    for row in rows:
        if row["method"] == "searched":
            print(f"whole stack {row['knob']}: {row['compute_fraction']:.3f} {row['psnr']:.2f} dB")
    for method, knob, x, psnr, gain in sorted(versus_whole(rows), key=lambda r: -np.nan_to_num(r[4], nan=-99)):
        print(f"{method:14s} {knob:9s} {x:.3f} {psnr:6.2f} dB  vs whole stack {gain:+.2f}")


if __name__ == "__main__":
    main()
